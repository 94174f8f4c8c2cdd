"""Aesthetic score: the LAION "improved aesthetic predictor" MLP head over CLIP image embeddings.

The head is a small MLP (input -> 1024 -> 128 -> 64 -> 16 -> 1, dropout between the first layers)
applied to the L2-normalised CLIP image embedding and trained to regress 1-10 ratings. The state
dict layout (`layers.0/2/4/6/7.weight|bias`) is the published one, so the public checkpoints load
as they are; the layer sizes are read from the checkpoint, so smaller heads of the same layout load
too. Outputs are reported raw (not clamped): a head trained on 1-10 ratings stays close to that scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from curate.config import AestheticConfig

HEAD_HIDDEN = (1024, 128, 64, 16)
# Position of each Linear in the published nn.Sequential (dropouts sit at 1, 3, 5).
_LINEAR_SLOTS = (0, 2, 4, 6, 7)
_DROPOUTS = {1: 0.2, 3: 0.2, 5: 0.1}
# A randomly initialised head is centred on 0, outside the 1-10 scale trained heads regress to: its
# placeholder scores must not read as ratings (centred on 5.5 they looked like plausible average ones).
_RANDOM_HEAD_BIAS = 0.0


class MissingWeightsError(RuntimeError):
    """A model scorer with no weights configured and random weights not explicitly allowed."""


class AestheticHead(nn.Module):
    """The LAION improved aesthetic predictor's MLP head over a normalised image embedding."""

    def __init__(self, input_size: int, hidden: tuple[int, ...] = HEAD_HIDDEN) -> None:
        super().__init__()
        if len(hidden) != 4:
            raise ValueError(f"the LAION aesthetic head has 4 hidden layers, got sizes {hidden}")
        sizes = (input_size, *hidden, 1)
        modules: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            modules.append(nn.Linear(sizes[i], sizes[i + 1]))
            if len(modules) in _DROPOUTS:
                modules.append(nn.Dropout(_DROPOUTS[len(modules)]))
        self.layers = nn.Sequential(*modules)
        self.input_size = input_size

    def forward(self, normalised_embedding: torch.Tensor) -> torch.Tensor:
        """The aesthetic score of each normalised embedding (B, E) -> (B,)."""
        scores: torch.Tensor = self.layers(normalised_embedding).squeeze(-1)
        return scores

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> AestheticHead:
        """A head with the weights of a LAION aesthetic-predictor state dict; ValueError when it is not one."""
        state = _unwrap(state)
        missing = [f"layers.{i}.weight" for i in _LINEAR_SLOTS if f"layers.{i}.weight" not in state]
        if missing:
            raise ValueError(
                f"not a LAION aesthetic-predictor state dict: missing {missing}; keys are {sorted(state)[:8]}"
            )
        shapes = [tuple(state[f"layers.{i}.weight"].shape) for i in _LINEAR_SLOTS]
        input_size = shapes[0][1]
        hidden = tuple(s[0] for s in shapes[:4])
        if shapes[-1][0] != 1:
            raise ValueError(f"aesthetic head must end in one output, got {shapes[-1][0]}")
        head = cls(input_size, hidden)
        head.load_state_dict({k: v for k, v in state.items() if k.startswith("layers.")}, strict=True)
        return head

    @classmethod
    def random(cls, input_size: int, seed: int) -> AestheticHead:
        """A head with seeded random weights (the placeholder when no checkpoint is given)."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        head = cls(input_size)
        torch.random.set_rng_state(generator_state)
        with torch.no_grad():
            cast(nn.Linear, head.layers[-1]).bias.fill_(_RANDOM_HEAD_BIAS)
        return head


def _unwrap(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    # Lightning checkpoints nest the weights; DataParallel prefixes them with "module.".
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def resolve_checkpoint(ref: str) -> Path:
    """A local file, or "hf-hub:org/repo/filename" fetched with huggingface_hub (needs network)."""
    if ref.startswith("hf-hub:"):
        repo_and_file = ref.removeprefix("hf-hub:")
        repo_id, _, filename = repo_and_file.rpartition("/")
        if repo_id.count("/") != 1 or not filename:
            raise ValueError(f"expected hf-hub:org/repo/filename, got '{ref}'")
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    path = Path(ref).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic head checkpoint not found: {path}")
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a .safetensors or a torch .pth file, on the CPU."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def load_head(
    cfg: AestheticConfig, embed_dim: int, *, allow_random: bool, seed: int
) -> tuple[AestheticHead, bool]:
    """The configured head and whether it is a random placeholder."""
    if cfg.head_checkpoint is None:
        if not allow_random:
            raise MissingWeightsError(
                "no aesthetic head configured: set score.aesthetic.head_checkpoint to the LAION improved "
                "aesthetic predictor weights (a local .pth/.safetensors file, e.g. the ViT-L-14 "
                "'sac+logos+ava1-l14-linearMSE.pth', or hf-hub:org/repo/filename), or set "
                "score.image_tower.allow_random_weights=true to compute placeholder scores"
            )
        return AestheticHead.random(embed_dim, seed).eval(), True
    head = AestheticHead.from_state_dict(load_state_dict(resolve_checkpoint(cfg.head_checkpoint))).eval()
    if head.input_size != embed_dim:
        raise ValueError(
            f"aesthetic head expects {head.input_size}-d CLIP embeddings but the image tower gives "
            f"{embed_dim}-d: use the head trained for this image tower (score.image_tower.model)"
        )
    return head, False


def score_frames(head: AestheticHead, normalised_embeddings: np.ndarray) -> np.ndarray:
    """Per-frame aesthetic scores of (n, D) L2-normalised embeddings."""
    with torch.inference_mode():
        scores: np.ndarray = head(
            torch.from_numpy(np.ascontiguousarray(normalised_embeddings, dtype=np.float32))
        ).numpy()
        return scores

"""What one training step feeds the DiT: a loader batch as latents and text tokens (precomputed, or
encoded here), captions dropped for classifier-free guidance, and the noise and timesteps of the flow
loss, all drawn from the checkpointed generator so that a resumed run draws what an uninterrupted one
would."""

from __future__ import annotations

from typing import Any

import torch

from train.config import TrainConfig
from train.device import Placement
from train.flow import drop_captions, sample_timesteps
from train.text import TextEncoder
from train.vae import VideoVAE


class BatchPreparer:
    """Turns a loader batch into (latents, text tokens, text mask): reads precomputed columns, or
    encodes clips with the VAE and captions with the text encoder (cached per caption)."""

    def __init__(self, vae: VideoVAE | None, text: TextEncoder, placement: Placement):
        self.vae, self.text, self.placement = vae, text, placement
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings and masks of the captions, each encoded once and cached."""
        # One caption per call: the encoder's floats depend on how many captions share a batch (the
        # CPU kernels are chosen by shape), and a resumed run meets a caption in another batch than
        # an uninterrupted one, which made their weights differ from step 4 on.
        for caption in dict.fromkeys(captions):
            if caption not in self._cache:
                tokens, mask = self.text.encode([caption])
                self._cache[caption] = (tokens[0], mask[0])
        return (
            torch.stack([self._cache[c][0] for c in captions]),
            torch.stack([self._cache[c][1] for c in captions]),
        )

    def __call__(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The latents, text embeddings and masks of one batch (encoding videos when not precomputed)."""
        if "latent" in batch:
            latent, text, mask = batch["latent"], batch["text"], batch["text_mask"]
        else:
            if self.vae is None:
                raise ValueError("clips have no precomputed latents and no VAE is loaded")
            # the encode stage's autocast too (train.encode), so its latents are these
            with torch.no_grad(), self.placement.autocast():
                latent = self.vae.encode_normalized(self.placement.put(batch["video"])).float()
            text, mask = self.encode_captions(batch["caption"])
        put = self.placement.put
        return put(latent), put(text), put(mask)


def step_inputs(
    batch: dict[str, Any],
    prepare: BatchPreparer,
    config: TrainConfig,
    generator: torch.Generator,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latent, text, mask, noise, t) of one training step: the batch with captions dropped, and the
    noise and timesteps drawn from `generator` (on the training device), in this order."""
    latent, text, mask = prepare(batch)
    text, mask = drop_captions(text, mask, null_text, null_mask, config.caption_dropout, generator)
    noise = torch.randn(latent.shape, generator=generator, device=generator.device).to(latent.device)
    t = sample_timesteps(
        latent.shape[0], config.logit_normal_mean, config.logit_normal_std, generator, latent.device
    )
    return latent, text, mask, noise, t

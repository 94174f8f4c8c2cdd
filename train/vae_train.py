"""Training entry of the video autoencoder: reconstruction (MSE + L1) + a small KL term, on decoded clips.

After training, the per-channel latent statistics over the training clips are stored with the
weights so the DiT sees unit-variance latents, and held-out clips report reconstruction PSNR.
Runs on train.vae_train.device (bf16 autocast on CUDA by default, fp32 on the CPU: train/device.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from train.clip_index import ClipIndex, build_index, no_clips_error
from train.config import Bucket, DataConfig, VAEConfig, VAETrainConfig
from train.device import CPU, Placement
from train.loader import BucketBatchSampler, ClipBatches, make_loader
from train.vae import Posterior, VideoVAE, check_video_shape, psnr, save_vae

log = logging.getLogger(__name__)


def _videos(
    index: ClipIndex,
    batch_size: int,
    seed: int,
    shuffle: bool,
    epoch: int = 0,
    placement: Placement | None = None,
) -> Iterator[torch.Tensor]:
    """The clips' videos batch by batch, on the placement's device (pinned and copied without blocking on CUDA)."""
    placement = placement or Placement(CPU)
    sampler = BucketBatchSampler(index, batch_size, seed, shuffle=shuffle)
    sampler.set_epoch(epoch)
    for batch in make_loader(ClipBatches(index), sampler, 0, pin_memory=placement.cuda):
        yield placement.put(batch["video"])


@torch.no_grad()
def reconstruction_psnr(
    vae: VideoVAE, index: ClipIndex, batch_size: int = 4, placement: Placement | None = None
) -> float | None:
    """Mean PSNR (dB) of deterministic reconstructions (posterior mean) over the clips of `index`."""
    if len(index) == 0:
        return None
    placement = placement or Placement(CPU)
    vae.eval()
    scores = []
    for video in _videos(index, batch_size, 0, shuffle=False, placement=placement):
        with placement.autocast():
            reconstruction = vae.decode(vae.encode(video).mean)
        scores.append(psnr(reconstruction.float(), video))
    return sum(scores) / len(scores)


def _warmup_fraction(steps: int) -> float:
    """OneCycleLR's warm-up share: 5%, but at least 2 steps from 3 steps up. OneCycleLR divides by its
    warm-up length minus one step, so a warm-up of exactly one step (20 steps x 5%) raised
    ZeroDivisionError."""
    return 0.05 if steps < 3 else max(2, round(0.05 * steps)) / steps


def vae_training_index(
    vae_config: VAEConfig, config: VAETrainConfig, clips_uri: str
) -> tuple[ClipIndex, ClipIndex]:
    """(training clips, validation clips) of the autoencoder. Raises ValueError when its clip shape
    does not fit the architecture and TrainDataError when no clip is left to train on. Only reads the
    clips: the CLI's preflight calls it before a run takes the store."""
    check_video_shape(vae_config, config.frames, config.height, config.width)
    bucket = Bucket(height=config.height, width=config.width, frames=config.frames)
    index = build_index(
        clips_uri,
        DataConfig(buckets=(bucket,), filter=config.filter, latents="decode"),
        require_captions=False,
        settings="train.vae_train",
    )
    train_index, val_index = index.split(config.val_fraction)
    if len(train_index) == 0:
        raise no_clips_error("train the autoencoder on", index, "train.vae_train")
    return train_index, val_index


def train_vae(
    vae_config: VAEConfig, config: VAETrainConfig, clips_uri: str, progress: bool = True
) -> dict[str, Any]:
    """Train the video autoencoder on the clips and save it; returns its metrics (also in metrics.json)."""
    placement = Placement.resolve(config.device, config.precision, "train.vae_train.device")
    torch.manual_seed(config.seed)
    train_index, val_index = vae_training_index(vae_config, config, clips_uri)
    vae = VideoVAE(vae_config).to(placement.device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=_warmup_fraction(config.steps)
    )
    batch_size = min(config.batch_size, len(train_index))
    generator = placement.generator(config.seed)
    step, epoch = 0, 0
    bar = tqdm(total=config.steps, disable=not progress, desc="train-vae")
    vae.train()
    while step < config.steps:
        for video in _videos(
            train_index, batch_size, config.seed, shuffle=True, epoch=epoch, placement=placement
        ):
            with placement.autocast():
                reconstruction, posterior = vae(video, generator)
            reconstruction = reconstruction.float()
            loss = (
                F.mse_loss(reconstruction, video)
                + config.l1_weight * F.l1_loss(reconstruction, video)
                + vae_config.kl_weight * Posterior(posterior.mean.float(), posterior.logvar.float()).kl()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.update(1)
            if step >= config.steps:
                break
        epoch += 1
    bar.close()
    vae.eval()
    with torch.no_grad(), placement.autocast():
        means = [
            vae.encode(v).mean.float()
            for v in _videos(train_index, batch_size, 0, shuffle=False, placement=placement)
        ]
    vae.set_latent_statistics(torch.cat(means))
    folder = save_vae(vae, config.out_dir)
    metrics = {
        "steps": step,
        "train_clips": len(train_index),
        "val_clips": len(val_index),
        "device": str(placement.device),
        "train_psnr": reconstruction_psnr(vae, train_index, placement=placement),
        "val_psnr": reconstruction_psnr(vae, val_index, placement=placement),
        "weights": str(folder),
    }
    (Path(config.out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics

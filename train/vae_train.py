"""Training entry of the video autoencoder: reconstruction (MSE + L1) + a small KL term, on decoded clips.

After training, the per-channel latent statistics over the training clips are stored with the
weights so the DiT sees unit-variance latents, and held-out clips report reconstruction PSNR.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from train.config import Bucket, DataConfig, VAEConfig, VAETrainConfig
from train.data import BucketBatchSampler, ClipBatches, ClipIndex, build_index, no_clips_error
from train.vae import VideoVAE, check_video_shape, psnr, save_vae

log = logging.getLogger(__name__)


def _videos(index: ClipIndex, batch_size: int, seed: int, shuffle: bool, epoch: int = 0):
    sampler = BucketBatchSampler(index, batch_size, seed, shuffle=shuffle)
    sampler.set_epoch(epoch)
    batches = ClipBatches(index)
    for positions in sampler:
        yield batches[positions]["video"]


@torch.no_grad()
def reconstruction_psnr(vae: VideoVAE, index: ClipIndex, batch_size: int = 4) -> float | None:
    """Mean PSNR (dB) of deterministic reconstructions (posterior mean) over the clips of `index`."""
    if len(index) == 0:
        return None
    vae.eval()
    scores = [psnr(vae.decode(vae.encode(v).mean), v) for v in _videos(index, batch_size, 0, shuffle=False)]
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
    )
    train_index, val_index = index.split(config.val_fraction)
    if len(train_index) == 0:
        raise no_clips_error("train the autoencoder on", index, "train.vae_train")
    return train_index, val_index


def train_vae(vae_config: VAEConfig, config: VAETrainConfig, clips_uri: str, progress: bool = True) -> dict:
    torch.manual_seed(config.seed)
    train_index, val_index = vae_training_index(vae_config, config, clips_uri)
    vae = VideoVAE(vae_config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=_warmup_fraction(config.steps)
    )
    batch_size = min(config.batch_size, len(train_index))
    generator = torch.Generator().manual_seed(config.seed)
    step, epoch = 0, 0
    bar = tqdm(total=config.steps, disable=not progress, desc="train-vae")
    vae.train()
    while step < config.steps:
        for video in _videos(train_index, batch_size, config.seed, shuffle=True, epoch=epoch):
            reconstruction, posterior = vae(video, generator)
            loss = (
                F.mse_loss(reconstruction, video)
                + config.l1_weight * F.l1_loss(reconstruction, video)
                + vae_config.kl_weight * posterior.kl()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
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
    with torch.no_grad():
        means = [vae.encode(v).mean for v in _videos(train_index, batch_size, 0, shuffle=False)]
    vae.set_latent_statistics(torch.cat(means))
    folder = save_vae(vae, config.out_dir)
    metrics = {
        "steps": step,
        "train_clips": len(train_index),
        "val_clips": len(val_index),
        "train_psnr": reconstruction_psnr(vae, train_index),
        "val_psnr": reconstruction_psnr(vae, val_index),
        "weights": str(folder),
    }
    (Path(config.out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics

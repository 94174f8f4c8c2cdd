"""Prompts -> videos: text encoder -> Euler sampler with guidance on the DiT -> VAE decoder -> MP4 and GIF.

Noise for prompt i comes from a generator seeded with (seed, i), so a prompt's video does not depend
on which other prompts share the batch and the same seed reproduces the same files. That generator
stays on the CPU on purpose: one draw per prompt costs nothing, and the same seed starts from the
same noise on a GPU as on the CPU. The models run on sample.device, under the autocast the
checkpoint trained with (train.precision on that device).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import media
from media import encode_mp4
from train.checkpoint import latest_checkpoint, read_state
from train.config import SampleConfig, TrainConfig
from train.device import Placement
from train.dit import DiT
from train.flow import euler_sample
from train.loader import tensor_to_frames
from train.loop import load_trained_dit
from train.text import TextEncoder, build_text_encoder, text_encoder_problem
from train.vae import VideoVAE, check_video_shape, load_vae, stored_vae_config


@dataclass
class SampleResult:
    """One generated video: its frames, files and record."""

    prompt: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    mp4: Path
    gif: Path
    # <stem>.json beside the videos: prompt, seed, checkpoint and its placeholder inputs
    record: Path
    # {column: "stage/model"} the checkpoint learnt from random-weight output (e.g. random captions)
    placeholder_inputs: dict[str, str]


@torch.no_grad()
def generate(
    model: DiT,
    vae: VideoVAE,
    text_encoder: TextEncoder,
    prompts: Sequence[str],
    frames: int,
    height: int,
    width: int,
    steps: int,
    cfg_scale: float,
    seed: int,
    placement: Placement | None = None,
) -> torch.Tensor:
    """(P, 3, T, H, W) videos in [-1, 1] for P prompts, on the placement's device (the models must be there)."""
    placement = placement or Placement(torch.device("cpu"))
    shape = vae.latent_shape(frames, height, width)
    noise = torch.stack(
        [
            torch.randn(shape, generator=torch.Generator().manual_seed(seed * 100_003 + i))
            for i in range(len(prompts))
        ]
    )
    text, mask = text_encoder.encode(list(prompts))
    null_text, null_mask = text_encoder.null()
    with placement.autocast():
        latents = euler_sample(
            model, placement.put(noise), text, mask, null_text, null_mask, steps, cfg_scale
        ).float()
        videos = vae.decode_normalized(latents)
    return videos.float().clamp(-1, 1)


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> Path:
    """H.264 (yuv420p) MP4; odd sizes are padded by one pixel because 4:2:0 needs even sizes."""
    encode_mp4(media.pad_even(frames), Fraction(fps), crf=16, preset="medium", path=path)
    return path


def write_gif(frames: np.ndarray, path: Path, fps: int) -> Path:
    """Write the frames as an animated GIF."""
    return media.write_gif(list(frames), path, fps)


def slug(prompt: str) -> str:
    """The prompt as a file-name stem."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "prompt"


def resolve_checkpoint(path: str | Path) -> Path:
    """A step folder, or a training out_dir (its latest checkpoint)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint at {path}: train first (`reelforge train`) or name a step folder"
        )
    return latest


class SampleSetupError(ValueError):
    """The checkpoint cannot generate what sample asks for (its autoencoder is gone or changed, the
    video shape does not fit it): one line naming the setting or command that fixes it."""


def check_sample_setup(config: SampleConfig, checkpoint: Path) -> None:
    """Refuse before loading any weights when `checkpoint` cannot serve `config`: the autoencoder and
    text encoder it was trained with (recorded in its state) must still be there, the autoencoder with
    the same architecture, and the sample shape must fit that autoencoder's compression and the DiT's patch size."""
    trained = TrainConfig.model_validate(read_state(checkpoint)["config"])
    try:
        stored_vae_config(trained.vae)
    except (FileNotFoundError, ValueError) as err:
        raise SampleSetupError(
            f"checkpoint {checkpoint} decodes with the autoencoder it was trained with, and that one is "
            f"not usable: {err}; put those weights back, or train again on the current one "
            "(`reelforge train --fresh`)"
        ) from None
    problem = text_encoder_problem(trained.text)
    if problem:
        raise SampleSetupError(
            f"checkpoint {checkpoint} encodes prompts with the text encoder it was trained with, and that "
            f"one is gone: train.{problem}; put it back, or train again (`reelforge train --fresh`)"
        )
    shape = f"sample.frames={config.frames}, sample.height={config.height}, sample.width={config.width}"
    try:
        check_video_shape(trained.vae, config.frames, config.height, config.width)
    except ValueError as err:
        raise SampleSetupError(
            f"{shape}: {err}; set sample.frames/height/width to a shape that does"
        ) from None
    grid = (
        1 + (config.frames - 1) // trained.vae.temporal_compression,
        config.height // trained.vae.spatial_compression,
        config.width // trained.vae.spatial_compression,
    )
    if any(size % patch for size, patch in zip(grid, trained.dit.patch_size, strict=True)):
        raise SampleSetupError(
            f"{shape} give a latent grid {grid} that the checkpoint's DiT patch size "
            f"{tuple(trained.dit.patch_size)} does not divide: set sample.frames/height/width to a shape "
            "whose latent grid it divides (e.g. one of train.data.buckets)"
        )


def sample(config: SampleConfig) -> list[SampleResult]:
    """Generate a video for every prompt of the config; returns what was written."""
    checkpoint = resolve_checkpoint(config.checkpoint)
    check_sample_setup(config, checkpoint)
    state = read_state(checkpoint)
    trained_precision = TrainConfig.model_validate(state["config"]).precision
    placement = Placement.resolve(config.device, trained_precision, "sample.device")
    model, train_config = load_trained_dit(checkpoint, use_ema=config.use_ema, device=placement.device)
    placeholders = state.get("placeholder_inputs", {})
    vae = load_vae(train_config.vae).to(placement.device)
    text_encoder = build_text_encoder(train_config.text).to(placement.device)
    videos = generate(
        model,
        vae,
        text_encoder,
        config.prompts,
        config.frames,
        config.height,
        config.width,
        config.steps,
        config.cfg_scale,
        config.seed,
        placement,
    )
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (prompt, video) in enumerate(zip(config.prompts, videos, strict=True)):
        frames = tensor_to_frames(video)
        stem = f"{i:02d}_{slug(prompt)}_seed{config.seed}"
        record = out / f"{stem}.json"
        # Whoever finds the video later learns what it came from, placeholders included.
        record.write_text(
            json.dumps(
                {
                    "prompt": prompt,
                    "seed": config.seed,
                    "checkpoint": str(checkpoint),
                    "placeholder_inputs": placeholders,
                },
                indent=1,
            )
            + "\n"
        )
        results.append(
            SampleResult(
                prompt,
                frames,
                write_mp4(frames, out / f"{stem}.mp4", config.fps),
                write_gif(frames, out / f"{stem}.gif", config.fps),
                record,
                placeholders,
            )
        )
    return results

"""Small captioned clip tables cut from real footage for the trainer's tests.

Real footage from ../shared/footage when it is beside the checkout, else the built-in sample
footage (camera moves over real photographs). Both give real image statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from store import Store
from train.clipset import ClipSpec, write_clipset
from train.config import VAEConfig
from train.vae import VideoVAE, save_vae

# (file under shared footage, caption); every file is one continuous shot.
SHARED_SHOTS = [
    ("singleshot/bigbuckbunny.mp4", "a big cartoon rabbit in a green meadow"),
    ("singleshot/flower.mp4", "a garden full of colourful flowers"),
    ("singleshot/friday.mp4", "a street scene on a friday"),
    ("singleshot/carphone_pristine.mp4", "a man talking on the phone in a car"),
    ("singleshot/bottle-detection.mp4", "bottles moving on a table"),
    ("singleshot/car-detection.mp4", "cars driving along a road"),
    ("singleshot/stream-of-water.webm", "a stream of water flowing over stones"),
]
CLIP_FRAMES = 17


def footage_specs(request) -> list[ClipSpec]:
    """Three 17-frame clips per shot (frames 0, 20, 40), as many shots as the footage offers."""
    try:
        shared: Path = request.getfixturevalue("shared_footage")
        shots = [(shared / name, caption) for name, caption in SHARED_SHOTS]
    except pytest.skip.Exception:
        sample: Path = request.getfixturevalue("sample_footage")
        specs = []
        for video in sorted(sample.glob("*.mp4")):
            truth = json.loads(Path(f"{video}.gt.json").read_text())
            for shot in truth["shots"]:
                room = shot["end_frame"] - shot["start_frame"] - CLIP_FRAMES  # the last start that fits
                if room >= CLIP_FRAMES:  # the sample's shots are 45-50 frames: start, middle, end
                    words = shot["label"].replace("_", " ")
                    caption = f"{words} ({shot['look']} look)"
                    specs += [
                        ClipSpec(video, shot["start_frame"] + offset, CLIP_FRAMES, caption)
                        for offset in (0, room // 2, room)
                    ]
        return specs
    return [ClipSpec(path, offset, CLIP_FRAMES, caption) for path, caption in shots for offset in (0, 20, 40)]


@pytest.fixture(scope="session")
def real_clips(request, tmp_path_factory) -> tuple[Store, list[ClipSpec]]:
    """A store whose clips table holds ~20 captioned real clips (96 px wide)."""
    store = Store(tmp_path_factory.mktemp("train_clips") / "store")
    specs = footage_specs(request)
    write_clipset(store, specs, width=96)
    return store, specs


@pytest.fixture(scope="session")
def small_vae(tmp_path_factory) -> VAEConfig:
    """An untrained (random) VAE: the loop's bookkeeping does not depend on latent quality."""
    config = VAEConfig(
        base_channels=8, channel_multipliers=(1, 2, 2), spatial_compression=4, latent_channels=4
    )
    torch.manual_seed(0)
    folder = save_vae(VideoVAE(config), tmp_path_factory.mktemp("vae"))
    return config.model_copy(update={"weights_path": str(folder)})

"""`reelforge encode` as a Ray Data job: columns land in clips, a rerun skips done clips, the trainer uses them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipelines.config import parse_config
from pipelines.jobs.encode import run_encode
from store import Store
from train.clip_index import build_index
from train.config import VAEConfig
from train.loader import decode_clip, frames_to_tensor
from train.vae import VideoVAE, load_vae, save_vae


@pytest.mark.slow
def test_encode_job_adds_latent_columns_and_resumes(ray_session, real_clips, tmp_path):
    store = Store(tmp_path / "store")
    shutil.copytree(real_clips[0].root, store.root)
    vae_config = VAEConfig(
        base_channels=8, channel_multipliers=(1, 2, 2), spatial_compression=4, latent_channels=4
    )
    torch.manual_seed(0)
    folder = save_vae(VideoVAE(vae_config), tmp_path / "vae")
    config = parse_config(
        {
            "store": {"root": str(store.root)},
            "encode": {"batch_size": 4, "concurrency": 1, "num_cpus": 1},
            "train": {
                "vae": {**vae_config.model_dump(mode="json"), "weights_path": str(folder)},
                "data": {"buckets": [{"height": 32, "width": 32, "frames": 9}]},
            },
        }
    )
    summary = run_encode(config, progress=False)
    clips = store.read_clips(columns=["clip_id", "latent_shape", "latent_bucket", "text_len", "encode_error"])
    assert summary.encoded == clips.num_rows == summary.selected and summary.errors == 0
    assert set(clips.column("latent_bucket").to_pylist()) == {"32x32x9"}
    assert clips.column("latent_shape")[0].as_py() == [4, 3, 8, 8]

    # The stored latent is what the trainer would compute from the clip itself.
    index = build_index(store.clips_uri, config.train.data)
    assert index.has_latents
    clip_id = index.read(["clip_id"], [0])["clip_id"][0].as_py()
    row = store.read_clips(columns=["latent"], filter=f"clip_id = '{clip_id}'").column("latent")[0].as_py()
    stored = np.frombuffer(row, np.float32).reshape(4, 3, 8, 8)
    video = frames_to_tensor(decode_clip(store.read_clip_bytes([clip_id])[clip_id], index.bucket(0)))
    expected = load_vae(config.train.vae).encode_normalized(video[None])[0].numpy()
    assert np.allclose(stored, expected, atol=1e-5)

    again = run_encode(config, progress=False)  # staged rows are not encoded twice
    assert again.encoded == 0 and again.skipped_done == summary.selected

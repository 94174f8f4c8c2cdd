"""The causal video autoencoder: shapes per compression, causality, image = first frame, weights folders."""

from __future__ import annotations

import json

import pytest
import torch

from train.config import VAEConfig
from train.vae import CONFIG_FILE, VideoVAE, load_vae, save_vae

SMALL = {"base_channels": 8, "channel_multipliers": (1, 2, 2, 2)}


@pytest.mark.parametrize(("spatial", "temporal"), [(8, 4), (4, 4), (16, 2), (8, 1)])
def test_compression_shapes(spatial, temporal):
    vae = VideoVAE(
        VAEConfig(spatial_compression=spatial, temporal_compression=temporal, latent_channels=4, **SMALL)
    )
    frames = 1 + 2 * temporal
    video = torch.randn(1, 3, frames, 32, 32)
    latent = vae.encode(video).mean
    assert tuple(latent.shape[1:]) == vae.latent_shape(frames, 32, 32) == (4, 3, 32 // spatial, 32 // spatial)
    assert vae.decode(latent).shape == video.shape


def test_encoder_and_decoder_are_causal_and_images_share_the_first_frame():
    torch.manual_seed(0)
    vae = VideoVAE(VAEConfig(latent_channels=4, **SMALL))
    video = torch.randn(1, 3, 9, 16, 16)
    future_changed = video.clone()
    future_changed[:, :, 5:] += 1.0
    # (allclose, not equal: convolutions over different lengths may sum in another order)
    a, b = vae.encode(video).mean, vae.encode(future_changed).mean
    assert torch.allclose(a[:, :, :2], b[:, :, :2], atol=1e-5)  # latent frames 0-1 see video frames 0-4 only
    assert not torch.allclose(a[:, :, 2], b[:, :, 2], atol=1e-3)
    image = vae.encode(video[:, :, :1]).mean
    assert torch.allclose(
        image[:, :, 0], a[:, :, 0], atol=1e-5
    )  # an image encodes like a video's first frame
    decoded = vae.decode(a)
    altered = a.clone()
    altered[:, :, 1:] += 1.0
    assert torch.allclose(vae.decode(altered)[:, :, 0], decoded[:, :, 0], atol=1e-5)


def test_bad_video_shapes_are_named():
    vae = VideoVAE(VAEConfig(latent_channels=4, **SMALL))
    with pytest.raises(ValueError, match="frames must be 1 \\+ k\\*4"):
        vae.encode(torch.randn(1, 3, 8, 16, 16))


def test_weights_folder_roundtrip_and_mismatch_errors(tmp_path):
    config = VAEConfig(latent_channels=4, **SMALL)
    vae = VideoVAE(config)
    vae.set_latent_statistics(torch.randn(2, 4, 3, 2, 2) * 3 + 1)
    folder = save_vae(vae, tmp_path / "vae")
    loaded = load_vae(config.model_copy(update={"weights_path": str(folder)}))
    assert all(
        torch.equal(a, b)
        for a, b in zip(vae.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="latent_channels: folder has 4, config asks 8"):
        load_vae(VAEConfig(latent_channels=8, weights_path=str(folder), **SMALL))
    with pytest.raises(ValueError, match="weights_path is not set"):
        load_vae(config)
    with pytest.raises(FileNotFoundError, match=r"no vae\.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / CONFIG_FILE).write_text(json.dumps(config.model_dump(mode="json")))
        load_vae(config.model_copy(update={"weights_path": str(tmp_path / "empty")}))


def test_the_vae_schedule_runs_for_any_step_count():
    """OneCycleLR divides by its warm-up length minus one: 20 steps x 5% raised ZeroDivisionError."""
    from train.vae_train import _warmup_fraction

    for steps in range(1, 201):
        weight = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([weight], lr=1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=1e-3, total_steps=steps, pct_start=_warmup_fraction(steps)
        )
        for _ in range(steps):
            optimizer.step()
            schedule.step()
        assert 0 < _warmup_fraction(steps) < 1

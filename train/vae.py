"""Causal 3D convolutional video autoencoder (the "video compression network").

Every convolution is causal in time: it pads the past with copies of the first frame and never
looks at future frames. Temporal downsampling uses stride 2 with that padding, so a clip of
1 + k * r frames becomes 1 + k latent frames and latent frame 0 depends on video frame 0 alone:
an image (T = 1) and the first frame of a video share one encoding. The decoder mirrors it
(latent frame 0 -> 1 frame, every other latent frame -> r frames). The posterior is a diagonal
Gaussian with a small KL penalty; the trainer uses its mean, normalised per channel with
statistics measured on the training clips.

Videos are float tensors (B, 3, T, H, W) in [-1, 1]; latents are (B, C, T', H', W').
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from train.config import VAEConfig

CONFIG_FILE = "vae_config.json"
WEIGHTS_FILE = "vae.safetensors"
# Architecture fields: a weights folder must agree with the requested config on these.
_ARCHITECTURE_FIELDS = (
    "latent_channels",
    "base_channels",
    "channel_multipliers",
    "spatial_compression",
    "temporal_compression",
)


class CausalConv3d(nn.Module):
    """A 3D convolution padded in time with the first frame only (causal)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.time_pad = kernel - 1
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve (B, C, T, H, W), padding the past with the first frame."""
        if self.time_pad:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([first, x], dim=2)  # the past is the first frame repeated
        out: torch.Tensor = self.conv(x)
        return out


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: normalising over time would leak future frames into the past."""

    def __init__(self, channels: int):
        super().__init__(min(8, channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Group-normalise each frame of (B, C, T, H, W) on its own."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        return super().forward(frames).reshape(b, t, c, h, w).transpose(1, 2)  # (B, C, T, H, W)


class ResBlock(nn.Module):
    """A residual block of two causal convolutions."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(cin)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = FrameGroupNorm(cout)
        self.conv2 = CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: the input (projected) plus the residual."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        out: torch.Tensor = self.skip(x) + h
        return out


class Upsample(nn.Module):
    """Doubles frames (all but the first) and/or the spatial size, then convolves."""

    def __init__(self, channels: int, time: bool, space: bool):
        super().__init__()
        self.time, self.space = time, space
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample (B, C, T, H, W) in time and/or space."""
        if self.time:
            # frame 0 stays one frame (causal image frame); every later frame becomes two
            x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
        if self.space:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        out: torch.Tensor = self.conv(x)
        return out


def _level_plan(config: VAEConfig) -> list[tuple[bool, bool]]:
    """(downsample time, downsample space) per level; time is compressed at the deepest spatial levels
    (spatial compression is always >= 4x and temporal <= 4x, so those levels exist)."""
    spatial = config.spatial_compression.bit_length() - 1
    temporal = config.temporal_compression.bit_length() - 1
    return [(spatial - temporal <= i < spatial, i < spatial) for i in range(len(config.channel_multipliers))]


@dataclass
class Posterior:
    """The encoder's diagonal Gaussian over latents."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample of the posterior (the reparameterisation trick)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def kl(self) -> torch.Tensor:
        """The KL divergence from the standard normal, averaged over elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).mean()


def check_video_shape(config: VAEConfig, frames: int, height: int, width: int) -> None:
    """Raise ValueError unless videos of this shape fit the autoencoder's compression."""
    r, s = config.temporal_compression, config.spatial_compression
    if (frames - 1) % r or height % s or width % s:
        raise ValueError(
            f"video of {frames} frames at {height}x{width} does not fit this VAE: frames must be "
            f"1 + k*{r} and height/width multiples of {s}"
        )


class VideoVAE(nn.Module):
    """The causal 3D video autoencoder."""

    # per-channel latent statistics, registered as buffers (saved with the weights, not trained)
    latent_mean: torch.Tensor
    latent_std: torch.Tensor

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        widths = [config.base_channels * m for m in config.channel_multipliers]
        plan = _level_plan(config)

        self.encoder_in = CausalConv3d(3, widths[0])
        down: list[nn.Module] = []
        cin = widths[0]
        for width, (time, space) in zip(widths, plan, strict=True):
            down.append(ResBlock(cin, width))
            cin = width
            if time or space:
                down.append(
                    CausalConv3d(
                        width, width, stride=(2 if time else 1, 2 if space else 1, 2 if space else 1)
                    )
                )
        self.encoder = nn.Sequential(*down, ResBlock(cin, cin), FrameGroupNorm(cin), nn.SiLU())
        self.encoder_out = CausalConv3d(cin, 2 * config.latent_channels)

        self.decoder_in = CausalConv3d(config.latent_channels, cin)
        up: list[nn.Module] = [ResBlock(cin, cin)]
        for width, (time, space) in reversed(list(zip(widths, plan, strict=True))):
            up.append(ResBlock(cin, width))
            cin = width
            if time or space:
                up.append(Upsample(width, time, space))
        self.decoder = nn.Sequential(*up, FrameGroupNorm(cin), nn.SiLU())
        self.decoder_out = CausalConv3d(cin, 3)

        # Per-channel latent statistics over training clips: the DiT sees unit-variance latents.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The latent shape (C, T, H, W) of videos of this size."""
        self.check_video_shape(frames, height, width)
        t = 1 + (frames - 1) // self.config.temporal_compression
        s = self.config.spatial_compression
        return self.config.latent_channels, t, height // s, width // s

    def check_video_shape(self, frames: int, height: int, width: int) -> None:
        """Raise ValueError unless videos of this shape fit the compression."""
        check_video_shape(self.config, frames, height, width)

    def encode(self, video: torch.Tensor) -> Posterior:
        """The posterior of the latents of videos (B, 3, T, H, W)."""
        self.check_video_shape(*video.shape[2:])
        h = self.encoder_out(self.encoder(self.encoder_in(video)))
        mean, logvar = h.chunk(2, dim=1)
        return Posterior(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Videos (B, 3, T, H, W) decoded from latents."""
        video: torch.Tensor = self.decoder_out(self.decoder(self.decoder_in(latent)))
        return video

    def forward(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Posterior]:
        """Reconstruct the videos from a posterior sample; returns the reconstruction and the posterior."""
        posterior = self.encode(video)
        return self.decode(posterior.sample(generator)), posterior

    def _stat_view(self, stat: torch.Tensor) -> torch.Tensor:
        return stat.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode_normalized(self, video: torch.Tensor) -> torch.Tensor:
        """Deterministic latents for the DiT: posterior mean, normalised to unit variance per channel."""
        mean = self.encode(video).mean
        return (mean - self._stat_view(self.latent_mean)) / self._stat_view(self.latent_std)

    @torch.no_grad()
    def decode_normalized(self, latent: torch.Tensor) -> torch.Tensor:
        """Videos decoded from latents normalised with the latent statistics."""
        return self.decode(latent * self._stat_view(self.latent_std) + self._stat_view(self.latent_mean))

    @torch.no_grad()
    def set_latent_statistics(self, latents: torch.Tensor) -> None:
        """latents (B, C, T, H, W) raw posterior means over training clips."""
        per_channel = latents.transpose(0, 1).reshape(latents.shape[1], -1)
        self.latent_mean.copy_(per_channel.mean(dim=1))
        self.latent_std.copy_(per_channel.std(dim=1).clamp(min=1e-4))


def save_vae(vae: VideoVAE, folder: str | Path) -> Path:
    """Save the config and weights into `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = vae.config.model_dump(mode="json", exclude={"weights_path"})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(folder / WEIGHTS_FILE)
    )
    return folder


def stored_vae_config(config: VAEConfig) -> VAEConfig:
    """The config saved with the weights `config.weights_path` names; raises (FileNotFoundError,
    ValueError) when there are none or their architecture is not the one `config` asks for."""
    if config.weights_path is None:
        raise ValueError(
            "train.vae.weights_path is not set: train one with `reelforge train-vae` or name a folder"
        )
    folder = Path(config.weights_path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"VAE folder {folder} has no {name}")
    stored = VAEConfig.model_validate(
        {**json.loads((folder / CONFIG_FILE).read_text()), "weights_path": str(folder)}
    )
    wrong = {
        f: (getattr(stored, f), getattr(config, f))
        for f in _ARCHITECTURE_FIELDS
        if getattr(stored, f) != getattr(config, f)
    }
    if wrong:
        detail = ", ".join(f"{f}: folder has {a}, config asks {b}" for f, (a, b) in wrong.items())
        raise ValueError(f"VAE folder {folder} does not match train.vae ({detail})")
    return stored


def load_vae(config: VAEConfig) -> VideoVAE:
    """Load the VAE named by `config.weights_path` (a folder from `save_vae`, or an externally trained one).

    The folder's config must agree with the requested architecture: the DiT's channel count and
    the data buckets depend on it, so a silent mismatch would train on the wrong latents.
    """
    stored = stored_vae_config(config)
    folder = Path(str(stored.weights_path))
    vae = VideoVAE(stored)
    state = load_file(str(folder / WEIGHTS_FILE))
    result = vae.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"VAE weights {folder / WEIGHTS_FILE} do not fit the architecture: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return vae.eval()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2)."""
    mse = (reconstruction.clamp(-1, 1) - target).pow(2).mean().item()
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))

"""Rectified flow (flow matching), kept apart from the network.

Path: x_t = (1 - t) * x0 + t * noise, t in [0, 1] (t = 0 data, t = 1 noise). The network predicts
the constant velocity along that straight line, v = noise - x0, with an MSE loss. Timesteps are
drawn from a logit-normal distribution (SD3), which puts more training on the middle of the path
where the prediction is hardest. Sampling integrates dx/dt = v from t = 1 to t = 0 with Euler
steps and classifier-free guidance against the empty caption.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# model(x_t, t, text, text_mask) -> predicted velocity with the shape of x_t
VelocityModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sample_timesteps(
    batch: int, mean: float, std: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """t = sigmoid(n), n ~ N(mean, std): (B,) in (0, 1), drawn on the generator's device."""
    normal = torch.randn(batch, generator=generator, device=generator.device) * std + mean
    return torch.sigmoid(normal).to(device)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point at time t on the straight path from the data x0 (t=0) to the noise (t=1)."""
    t = t.view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, 1, 1, 1)
    return (1 - t) * x0 + t * noise


def target_velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity of the straight path: noise - x0."""
    return noise - x0


def flow_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity; zero at the exact target."""
    return (prediction.float() - target_velocity(x0, noise).float()).pow(2).mean()


def drop_captions(
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each caption by the empty caption with `probability` so the model also learns the
    unconditional velocity that classifier-free guidance extrapolates away from.

    text (B, L, E), text_mask (B, L); null_text (L, E), null_mask (L,).
    """
    if probability <= 0:
        return text, text_mask
    drop = torch.rand(text.shape[0], generator=generator, device=generator.device) < probability  # (B,)
    drop = drop.to(text.device)
    text = torch.where(drop[:, None, None], null_text.to(text.dtype)[None], text)
    text_mask = torch.where(drop[:, None], null_mask[None], text_mask)
    return text, text_mask


def training_loss(
    model: VelocityModel,
    x0: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """The whole objective for given noise and timesteps (callers draw those from their generator)."""
    x_t = interpolate(x0, noise, t)
    return flow_loss(model(x_t, t, text, text_mask), x0, noise)


@torch.no_grad()
def euler_sample(
    model: VelocityModel,
    noise: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    steps: int,
    cfg_scale: float,
) -> torch.Tensor:
    """Integrate from pure noise (t = 1) to data (t = 0).

    With guidance, conditional and unconditional velocities come from one batched call:
    v = v_uncond + cfg_scale * (v_cond - v_uncond). cfg_scale = 1 is plain conditional sampling.
    """
    b = noise.shape[0]
    x = noise
    times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    guided = cfg_scale != 1.0
    if guided:
        both_text = torch.cat([text, null_text[None].expand(b, -1, -1).to(text.dtype)])  # (2B, L, E)
        both_mask = torch.cat([text_mask, null_mask[None].expand(b, -1)])  # (2B, L)
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        if guided:
            v_cond, v_uncond = model(torch.cat([x, x]), t.expand(2 * b), both_text, both_mask).chunk(2)
            v = v_uncond + cfg_scale * (v_cond - v_uncond)
        else:
            v = model(x, t.expand(b), text, text_mask)
        x = x + (t_next - t) * v  # dt is negative: step toward the data
    return x

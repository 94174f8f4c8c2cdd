"""Rectified flow: exact-target loss is zero, the Euler sampler integrates a known flow exactly, dropout."""

from __future__ import annotations

import torch

from train.flow import drop_captions, euler_sample, flow_loss, interpolate, sample_timesteps, training_loss


def test_loss_is_zero_at_the_exact_target_velocity():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    t = sample_timesteps(3, 0.0, 1.0, g)

    def oracle(x_t, t_, text, mask):  # knows x0 and noise, returns noise - x0
        return noise - x0

    assert training_loss(oracle, x0, torch.zeros(3, 1, 1), torch.ones(3, 1, dtype=torch.bool), noise, t) == 0
    assert flow_loss(noise - x0 + 0.1, x0, noise) > 0


def test_interpolation_endpoints_and_logit_normal_range():
    x0, noise = torch.zeros(2, 1, 1, 1, 1), torch.ones(2, 1, 1, 1, 1)
    assert torch.equal(interpolate(x0, noise, torch.tensor([0.0, 1.0])).flatten(), torch.tensor([0.0, 1.0]))
    t = sample_timesteps(10_000, 0.0, 1.0, torch.Generator().manual_seed(1))
    assert t.min() > 0 and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.01  # symmetric around the middle of the path
    assert ((t > 0.25) & (t < 0.75)).float().mean() > 0.6  # mass concentrated mid-path (uniform: 0.5)


def test_euler_with_the_true_velocity_recovers_the_data_exactly():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 1, 2, 2, generator=g), torch.randn(2, 3, 1, 2, 2, generator=g)
    text, mask = torch.zeros(2, 1, 1), torch.ones(2, 1, dtype=torch.bool)

    def straight(x_t, t, text_, mask_):  # the flow of a straight path has constant velocity
        return (noise - x0).repeat(x_t.shape[0] // 2, 1, 1, 1, 1)

    out = euler_sample(
        straight,
        noise,
        text,
        mask,
        torch.zeros(1, 1),
        torch.ones(1, dtype=torch.bool),
        steps=3,
        cfg_scale=4.0,
    )
    assert torch.allclose(out, x0, atol=1e-5)


def test_guidance_extrapolates_from_unconditional():
    text = torch.ones(1, 1, 1)
    null = torch.zeros(1, 1)

    def model(x, t, text_, mask):  # velocity = text value: 1 conditional, 0 unconditional
        return text_[:, :1, :1, None, None].expand_as(x)

    noise = torch.zeros(1, 1, 1, 1, 1)
    ones = torch.ones(1, 1, dtype=torch.bool)
    out = euler_sample(model, noise, text, ones, null, ones[0], steps=2, cfg_scale=3.0)
    assert torch.allclose(out, torch.full_like(out, -3.0))  # integrates v = 0 + 3 * (1 - 0) from t=1 to 0


def test_caption_dropout_replaces_whole_captions_with_the_null_caption():
    g = torch.Generator().manual_seed(0)
    text, mask = torch.ones(1000, 2, 3), torch.ones(1000, 2, dtype=torch.bool)
    null_text, null_mask = torch.zeros(2, 3), torch.tensor([True, False])
    out, out_mask = drop_captions(text, mask, null_text, null_mask, 0.25, g)
    dropped = (out == 0).all(dim=(1, 2))
    assert ((out == 1).all(dim=(1, 2)) | dropped).all()
    assert 0.2 < dropped.float().mean() < 0.3
    assert torch.equal(out_mask[dropped], null_mask.expand(int(dropped.sum()), 2))

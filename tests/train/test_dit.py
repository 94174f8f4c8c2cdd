"""The DiT: shapes and parameter counts per preset, adaLN-Zero identity at init, 3D RoPE, patchify."""

from __future__ import annotations

import pytest
import torch

from train.config import DiTConfig
from train.dit import PRESETS, DiT, DiTBlock, apply_rope, rope_3d

TEXT_DIM = 384


def expected_parameters(
    hidden: int, depth: int, patch_dim: int, text_dim: int, mlp_ratio: float = 4.0
) -> int:
    """Counted by hand from the architecture description (weights + biases of every linear)."""

    def linear(i: int, o: int) -> int:
        return i * o + o

    mlp = int(hidden * mlp_ratio)
    block = (
        linear(hidden, 9 * hidden)
        + linear(hidden, 3 * hidden)
        + linear(hidden, hidden)  # adaLN, qkv, out
        + linear(hidden, hidden)
        + linear(hidden, 2 * hidden)
        + linear(hidden, hidden)  # cross q, kv, out
        + linear(hidden, mlp)
        + linear(mlp, hidden)
    )
    stem = (
        linear(patch_dim, hidden)
        + linear(256, hidden)
        + linear(hidden, hidden)  # patch, timestep MLP
        + linear(text_dim, hidden)
        + linear(hidden, hidden)
        + linear(hidden, hidden)
    )  # text MLP, pool
    final = linear(hidden, 2 * hidden) + linear(hidden, patch_dim)
    return stem + depth * block + final


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_shapes_and_parameter_counts(preset):
    size = PRESETS[preset]
    model = DiT(DiTConfig(preset=preset, patch_size=(1, 2, 2)), latent_channels=8, text_dim=TEXT_DIM)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameters(size.hidden, size.depth, 8 * 4, TEXT_DIM)
    x = torch.randn(2, 8, 3, 8, 8)
    text, mask = (
        torch.randn(2, 5, TEXT_DIM),
        torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool),
    )
    with torch.no_grad():
        out = model(x, torch.rand(2), text, mask)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the final projection starts at zero


def test_preset_sizes_are_ordered():
    counts = [
        sum(p.numel() for p in DiT(DiTConfig(preset=p), 8, TEXT_DIM).parameters())
        for p in ("tiny", "small", "base")
    ]
    assert counts[0] < counts[1] < counts[2]
    assert 25e6 < counts[1] < 40e6  # small: hidden 384, 8 blocks


def test_untrained_block_is_identity():
    torch.manual_seed(0)
    model = DiT(DiTConfig(preset="tiny"), latent_channels=4, text_dim=TEXT_DIM)
    block: DiTBlock = model.blocks[0]
    tokens = torch.randn(2, 12, 128)
    cond = torch.randn(2, 128)
    text, mask = torch.randn(2, 4, 128), torch.ones(2, 4, dtype=torch.bool)
    rope = rope_3d((1, 3, 4), 32, tokens.device)
    assert torch.equal(block(tokens, cond, text, mask, rope), tokens)
    # Once the modulation is no longer zero the block does change its input.
    torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    assert not torch.allclose(block(tokens, cond, text, mask, rope), tokens)


def test_patchify_roundtrip_and_grid_check():
    model = DiT(DiTConfig(preset="tiny", patch_size=(2, 2, 2)), latent_channels=4, text_dim=TEXT_DIM)
    x = torch.randn(2, 4, 4, 6, 8)
    patches = model.patchify(x)
    assert patches.shape == (2, 2 * 3 * 4, 4 * 8)
    assert torch.equal(model.unpatchify(patches, (2, 3, 4)), x)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model.token_grid((1, 4, 3, 6, 8))


def test_rope_attention_depends_only_on_relative_position():
    rotation = rope_3d((4, 4, 4), 32, torch.device("cpu"))
    q, k = torch.randn(32), torch.randn(32)

    def score(i: int, j: int) -> float:
        qi = apply_rope(q[None, None, None], rotation[i : i + 1])
        kj = apply_rope(k[None, None, None], rotation[j : j + 1])
        return float((qi * kj).sum())

    # token index = t*16 + h*4 + w; shifting both tokens by one step along each axis keeps the score
    for shift in (16, 4, 1):
        assert score(0, 5) == pytest.approx(score(shift, 5 + shift), rel=1e-4, abs=1e-4)
    assert score(0, 5) != pytest.approx(score(0, 6), rel=1e-3)


def test_text_mask_hides_padding_tokens():
    torch.manual_seed(0)
    model = DiT(DiTConfig(preset="tiny"), latent_channels=4, text_dim=TEXT_DIM)
    for p in model.parameters():  # leave adaLN-Zero so text reaches the output
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 4, 1, 4, 4), torch.rand(1)
    text = torch.randn(1, 6, TEXT_DIM)
    mask = torch.tensor([[True, True, True, False, False, False]])
    altered = text.clone()
    altered[:, 3:] = torch.randn(1, 3, TEXT_DIM)
    with torch.no_grad():
        assert torch.allclose(model(x, t, text, mask), model(x, t, altered, mask), atol=1e-6)
        assert not torch.allclose(
            model(x, t, text, mask), model(x, t, altered, torch.ones_like(mask)), atol=1e-4
        )

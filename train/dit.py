"""The diffusion transformer: video latents in, velocity out.

Latent video (B, C, T, H, W) -> spatio-temporal patches (B, N, D) -> DiT blocks -> patches -> velocity.
Each block: adaLN-Zero modulated self-attention with 3D rotary position embeddings, gated
cross-attention to text tokens, gated MLP. The timestep (and pooled text) condition every block
through adaLN; the text tokens are read through cross-attention. Attention is
torch.nn.functional.scaled_dot_product_attention. Matmuls are kept few and large (fused qkv,
fused text kv) because on a CPU the elementwise work between them is what eats the FLOP/s.

Shape legend: B batch, C latent channels, T/H/W latent grid, N = (T/pt)(H/ph)(W/pw) tokens,
D hidden width, L text tokens, E text embedding width, Hd heads, d = D / Hd head width.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from train.config import DiTConfig


@dataclass(frozen=True)
class DiTSize:
    """A DiT preset's width, depth and attention heads."""

    hidden: int
    depth: int
    heads: int


PRESETS: dict[str, DiTSize] = {
    "tiny": DiTSize(hidden=128, depth=4, heads=4),
    "small": DiTSize(hidden=384, depth=8, heads=6),
    "base": DiTSize(hidden=768, depth=12, heads=12),
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The adaLN modulation x * (1 + scale) + shift."""
    # x (B, N, D), shift/scale (B, 1, D): one fused multiply-add instead of three ops.
    return torch.addcmul(shift, x, 1 + scale)


def _linear(module: nn.Module) -> nn.Linear:
    """A layer known to be an nn.Linear, typed so: Sequential indexing gives a plain Module."""
    return cast(nn.Linear, module)


class TimestepEmbedder(nn.Module):
    """Scalar t in [0, 1] -> sinusoidal features -> MLP -> (B, D)."""

    def __init__(self, hidden: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of the timesteps (B,) through the MLP: (B, D)."""
        half = self.frequency_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = (t.float() * 1000.0)[:, None] * freqs[None]  # (B, half); t scaled to DiT's 0..1000 range
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, frequency_dim)
        embedded: torch.Tensor = self.mlp(features.to(_linear(self.mlp[0]).weight.dtype))  # (B, D)
        return embedded


def rope_3d(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Rotations (N, d/2, 2) as (cos, sin) for the head dims taken as d/2 pairs, in three groups,
    one per axis t, h, w.

    The time axis gets a quarter of the pairs, height and width share the rest, so relative offsets
    along every axis are visible to attention.
    """
    pairs = head_dim // 2
    t_pairs = pairs // 4
    h_pairs = (pairs - t_pairs) // 2
    w_pairs = pairs - t_pairs - h_pairs
    axes = []
    for size, n in zip(grid, (t_pairs, h_pairs, w_pairs), strict=True):
        inv_freq = 1.0 / (10000.0 ** (torch.arange(n, device=device, dtype=torch.float32) / n))
        axes.append(torch.outer(torch.arange(size, device=device, dtype=torch.float32), inv_freq))
    gt, gh, gw = grid
    angles = torch.cat(
        [
            axes[0][:, None, None, :].expand(gt, gh, gw, -1),
            axes[1][None, :, None, :].expand(gt, gh, gw, -1),
            axes[2][None, None, :, :].expand(gt, gh, gw, -1),
        ],
        dim=-1,
    ).reshape(gt * gh * gw, pairs)  # (N, d/2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)  # (N, d/2, 2)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate the query or key pairs by their rotary position angles."""
    # x (B, Hd, N, d): rotate each pair (x0, x1) by its angle.
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, Hd, N, d/2, 2)
    if torch.compiler.is_compiling():
        # Inductor generates no code for complex tensors; this real form fuses into one kernel there.
        x0, x1 = pairs.unbind(-1)
        cos, sin = rotation.unbind(-1)
        rotated = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    else:
        # Eager: one complex multiply is one kernel forward and backward (the real form is six).
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rotation))
    return rotated.flatten(-2).type_as(x)  # (B, Hd, N, d)


class DiTBlock(nn.Module):
    """A transformer block: self-attention, cross-attention to the text, MLP, adaLN-modulated."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.cross_q = nn.Linear(hidden, hidden)
        self.cross_kv = nn.Linear(hidden, 2 * hidden)
        self.cross_out = nn.Linear(hidden, hidden)
        self.norm3 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden)
        )
        # shift, scale, gate for each of self-attention, cross-attention and MLP.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)  # (B, N, D) -> (B, Hd, N, d)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rope: torch.Tensor,
    ) -> torch.Tensor:
        """One block over the video tokens, conditioned on the timestep and the text."""
        b, n, d = x.shape
        mods = self.adaLN_modulation(c)[:, None, :].chunk(9, dim=-1)  # 9 x (B, 1, D)
        shift_sa, scale_sa, gate_sa, shift_ca, scale_ca, gate_ca, shift_mlp, scale_mlp, gate_mlp = mods

        h = modulate(self.norm1(x), shift_sa, scale_sa)  # (B, N, D)
        q, k, v = (
            self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )  # 3 x (B, Hd, N, d)
        q, k = apply_rope(q, rope), apply_rope(k, rope)  # (B, Hd, N, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, Hd, N, d)
        h = self.attn_out(h.transpose(1, 2).reshape(b, n, d))  # (B, N, D)
        x = torch.addcmul(x, gate_sa, h)  # (B, N, D)

        h = modulate(self.norm2(x), shift_ca, scale_ca)  # (B, N, D)
        q = self._heads(self.cross_q(h))  # (B, Hd, N, d)
        k, v = self.cross_kv(text).chunk(2, dim=-1)  # 2 x (B, L, D)
        h = F.scaled_dot_product_attention(
            q, self._heads(k), self._heads(v), attn_mask=text_mask[:, None, None, :]
        )  # (B, Hd, N, d); padded text tokens masked out
        h = self.cross_out(h.transpose(1, 2).reshape(b, n, d))  # (B, N, D)
        x = torch.addcmul(x, gate_ca, h)  # (B, N, D)

        h = self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))  # (B, N, D)
        return torch.addcmul(x, gate_mlp, h)  # (B, N, D)


class FinalLayer(nn.Module):
    """The adaLN-modulated projection from tokens back to patches."""

    def __init__(self, hidden: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Project the tokens (B, N, D) to patch values (B, N, pt*ph*pw*C)."""
        shift, scale = self.adaLN_modulation(c)[:, None, :].chunk(2, dim=-1)  # 2 x (B, 1, D)
        patches: torch.Tensor = self.linear(modulate(self.norm(x), shift, scale))  # (B, N, pt*ph*pw*C)
        return patches


class DiT(nn.Module):
    """The diffusion transformer: predicts the flow velocity of video latents given a caption."""

    def __init__(self, config: DiTConfig, latent_channels: int, text_dim: int):
        super().__init__()
        size = PRESETS[config.preset]
        if size.hidden % size.heads or (size.hidden // size.heads) % 8:
            raise ValueError(f"preset {config.preset}: head width must be a multiple of 8")
        self.config = config
        self.size = size
        self.latent_channels = latent_channels
        self.patch_size = config.patch_size
        pt, ph, pw = config.patch_size
        patch_dim = latent_channels * pt * ph * pw
        self.patch_embed = nn.Linear(patch_dim, size.hidden)
        self.t_embedder = TimestepEmbedder(size.hidden)
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, size.hidden), nn.GELU(approximate="tanh"), nn.Linear(size.hidden, size.hidden)
        )
        self.text_pool = nn.Linear(size.hidden, size.hidden)
        self.blocks = nn.ModuleList(
            DiTBlock(size.hidden, size.heads, config.mlp_ratio) for _ in range(size.depth)
        )
        self.final = FinalLayer(size.hidden, patch_dim)
        self.grad_checkpointing = False
        self._rope_cache: dict[tuple[tuple[int, int, int], torch.device], torch.Tensor] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier for every linear, then adaLN-Zero: zero the modulation and output projections.

        With every gate (and the final layer) at zero, each block starts as the identity map and
        the network's output starts at exactly zero, so early training only has to learn
        residuals; DiT found this beats cross-attention-only or in-context conditioning.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(_linear(self.t_embedder.mlp[0]).weight, std=0.02)
        nn.init.normal_(_linear(self.t_embedder.mlp[2]).weight, std=0.02)
        for block in cast(Iterable[DiTBlock], self.blocks):
            nn.init.zeros_(_linear(block.adaLN_modulation[-1]).weight)
            nn.init.zeros_(_linear(block.adaLN_modulation[-1]).bias)
        nn.init.zeros_(_linear(self.final.adaLN_modulation[-1]).weight)
        nn.init.zeros_(_linear(self.final.adaLN_modulation[-1]).bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def token_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The token grid (T', H', W') of a latent of this shape; ValueError when the patch does not divide
        it."""
        _, _, t, h, w = latent_shape
        pt, ph, pw = self.patch_size
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent grid {(t, h, w)} is not divisible by the patch size {self.patch_size}")
        return t // pt, h // ph, w // pw

    def _rope(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        key = (grid, device)
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_3d(grid, self.size.hidden // self.size.heads, device)
        return self._rope_cache[key]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T, H, W) as tokens (B, N, pt*ph*pw*C)."""
        b, c, t, h, w = x.shape
        pt, ph, pw = self.patch_size
        x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)  # (B, C, T', pt, H', ph, W', pw)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', pt, ph, pw, C)
        return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw * c)  # (B, N, pt*ph*pw*C)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Tokens (B, N, pt*ph*pw*C) back to latents (B, C, T, H, W)."""
        b = x.shape[0]
        gt, gh, gw = grid
        pt, ph, pw = self.patch_size
        c = self.latent_channels
        x = x.reshape(b, gt, gh, gw, pt, ph, pw, c)  # (B, T', H', W', pt, ph, pw, C)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T', pt, H', ph, W', pw)
        return x.reshape(b, c, gt * pt, gh * ph, gw * pw)  # (B, C, T, H, W)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, C, T, H, W) noisy latents, t (B,) in [0, 1], text (B, L, E), text_mask (B, L) bool."""
        grid = self.token_grid(tuple(x.shape))
        rope = self._rope(grid, x.device)  # (N, d/2, 2)
        tokens = self.patch_embed(self.patchify(x))  # (B, N, D)
        text_tokens = self.text_proj(text)  # (B, L, D)
        weights = text_mask.to(text_tokens.dtype)[..., None]  # (B, L, 1)
        pooled = (text_tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, D)
        c = self.t_embedder(t) + self.text_pool(pooled)  # (B, D)
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                tokens = checkpoint(block, tokens, c, text_tokens, text_mask, rope, use_reentrant=False)
            else:
                tokens = block(tokens, c, text_tokens, text_mask, rope)  # (B, N, D)
        out = self.final(tokens, c)  # (B, N, pt*ph*pw*C)
        return self.unpatchify(out, grid)  # (B, C, T, H, W)

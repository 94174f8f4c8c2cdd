"""Trainer benchmark: DiT step speed against this machine's measured fp32 matmul peak, and epoch time
on precomputed latents vs decoding clips on the fly.

    .venv/bin/python bench/train.py [--quick]

Writes bench/results/train.json and prints a table. Training FLOPs are counted as 3x the forward
matmul FLOPs (torch's FlopCounterMode over one forward: linear layers and attention), and every
ratio is against the peak measured in the same run, so numbers from a busy machine stay comparable.
Where the rest of the fp32 eager step goes is profiled by operator (torch.profiler, self time):
the share spent in matrix multiplications and the largest operators outside them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from store import ROW_ID, ClipReader, Store  # noqa: E402
from train.clip_index import build_index  # noqa: E402
from train.clipset import ClipSpec, write_clipset  # noqa: E402
from train.config import Bucket, DataConfig, DiTConfig, TrainConfig, VAEConfig  # noqa: E402
from train.device import CPU, Placement  # noqa: E402
from train.dit import DiT  # noqa: E402
from train.encode import LatentEncoder, encode_signature  # noqa: E402
from train.flow import training_loss  # noqa: E402
from train.loader import BucketBatchSampler, ClipBatches, make_loader  # noqa: E402
from train.step_inputs import BatchPreparer  # noqa: E402
from train.text import build_text_encoder  # noqa: E402
from train.vae import VideoVAE, load_vae, save_vae  # noqa: E402

SHARED = REPO.parent / "shared" / "footage"


def _wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    size: int = 2048, repeats: int = 10, device: torch.device = CPU, dtype: torch.dtype = torch.float32
) -> float:
    """Best-of GEMM FLOP/s of `dtype` on `device` (this machine's threads on the CPU)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _wait(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        _wait(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


# Operators whose self time is a dense matrix multiplication (forward and backward of nn.Linear and
# of the einsum/bmm paths). Fused attention is counted apart: its kernels do more than the GEMMs.
GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"})


def _small_dit(device: torch.device, batch: int, grid: int) -> tuple[DiT, tuple[torch.Tensor, ...]]:
    """The small preset and one batch: latent 8x4xgridxgrid, patch 1x2x2, 32 text tokens (12 real)."""
    torch.manual_seed(0)
    model = DiT(DiTConfig(preset="small"), latent_channels=8, text_dim=384).to(device)
    x, t = torch.randn(batch, 8, 4, grid, grid, device=device), torch.rand(batch, device=device)
    noise = torch.randn_like(x)
    text = torch.randn(batch, 32, 384, device=device)
    mask = torch.ones(batch, 32, dtype=torch.bool, device=device)
    mask[:, 12:] = False
    return model, (x, t, noise, text, mask)


def operator_profile(steps: int = 3, batch: int = 8, grid: int = 16, top: int = 8) -> dict:
    """Self CPU time of the fp32 eager training step by operator: the GEMM share and the largest others."""
    from torch.profiler import ProfilerActivity, profile

    model, (x, t, noise, text, mask) = _small_dit(CPU, batch, grid)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        loss = training_loss(model, x, text, mask, noise, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, first-call paths
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    gemm = sum(us for name, us in self_us.items() if name in GEMM_OPS)
    others = sorted(((us, name) for name, us in self_us.items() if name not in GEMM_OPS), reverse=True)
    return {
        "steps": steps,
        "gemm_share": gemm / total,
        "outside_gemm_share": 1 - gemm / total,
        "top_outside_gemm": [{"op": name, "share": us / total} for us, name in others[:top]],
    }


def dit_step_bench(
    mode: str, steps: int, peak: float, device: torch.device = CPU, batch: int = 8, grid: int = 16
) -> dict:
    """One optimizer step of the small preset: `batch` clips of (grid/2)^2 x 4 tokens (latent 8x4xgridxgrid,
    patch 1x2x2; batch 8 x 256 tokens by default) on `device`. Modes: fp32 eager, bf16 autocast,
    compiled (fp32), bf16 compiled."""
    model, (x, t, noise, text, mask) = _small_dit(device, batch, grid)
    with FlopCounterMode(display=False) as counter:
        model(x, t, text, mask)
    train_flops = 3 * counter.get_total_flops()
    network = torch.compile(model) if "compiled" in mode else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    dtype = torch.bfloat16 if "bf16" in mode else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = training_loss(network, x, text, mask, noise, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _wait(device)

    started = time.perf_counter()
    step()  # compiles when compiled
    first = time.perf_counter() - started
    step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    tokens = x.shape[0] * math.prod(model.token_grid(tuple(x.shape)))  # 8 x 256 by default
    return {
        "mode": mode,
        "device": str(device),
        "step_s": seconds,
        "first_step_s": first,
        "tokens_per_s": tokens / seconds,
        "train_gflop_per_step": train_flops / 1e9,
        "achieved_gflops": train_flops / seconds / 1e9,
        "fraction_of_peak": train_flops / seconds / peak,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def clip_specs() -> list[ClipSpec]:
    if SHARED.is_dir():
        files = [
            "bigbuckbunny.mp4",
            "flower.mp4",
            "friday.mp4",
            "carphone_pristine.mp4",
            "bottle-detection.mp4",
            "car-detection.mp4",
            "stream-of-water.webm",
        ]
        return [
            ClipSpec(SHARED / "singleshot" / f, start, 17, f"clip of {f.split('.')[0]}")
            for f in files
            for start in (0, 20, 40)
        ]
    from pipelines.sample_footage import write_sample_footage

    out = Path(tempfile.mkdtemp(prefix="rf-bench-footage-"))
    videos = [v for v in write_sample_footage(out) if v.suffix == ".mp4"]
    return [ClipSpec(v, start, 17, f"clip of {v.stem}") for v in videos for start in range(0, 200, 25)]


def epoch_bench(work: Path, epochs: int) -> dict:
    """Time per epoch of the tiny preset at the demo bucket (64x64x9), decoding vs precomputed."""
    store = Store(work / "store")
    write_clipset(store, clip_specs(), width=96)
    vae_config = VAEConfig()
    torch.manual_seed(0)
    folder = save_vae(VideoVAE(vae_config), work / "vae")  # timing does not depend on trained weights
    config = TrainConfig(
        batch_size=4,
        vae=vae_config.model_copy(update={"weights_path": str(folder)}),
        data=DataConfig(buckets=(Bucket(height=64, width=64, frames=9),)),
    )
    text = build_text_encoder(config.text)
    vae = load_vae(config.vae)
    model = DiT(config.dit, latent_channels=vae_config.latent_channels, text_dim=text.dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run_epochs(latents: str) -> float:
        index = build_index(store.clips_uri, config.data.model_copy(update={"latents": latents}))
        sampler = BucketBatchSampler(index, config.batch_size, 0)
        loader = make_loader(ClipBatches(index), sampler, 0)
        prepare = BatchPreparer(vae, text, Placement(CPU))
        times = []
        for epoch in range(epochs + 1):  # the first epoch warms caches (caption embeddings, allocator)
            sampler.set_epoch(epoch)
            started = time.perf_counter()
            for batch in loader:
                latent, tokens, mask = prepare(batch)
                loss = training_loss(
                    model, latent, tokens, mask, torch.randn_like(latent), torch.rand(latent.shape[0])
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            times.append(time.perf_counter() - started)
        return statistics.median(times[1:])

    decode_s = run_epochs("decode")
    encoder = LatentEncoder(config)
    work = store.work_list(columns=("clip_id", "width", "height", "num_frames", "caption"))
    rows = work.rows.to_pydict()
    blobs = ClipReader.at(store.root, work.version).blobs(rows[ROW_ID])
    store.add_columns(
        encoder({**rows, "video": blobs}),
        stage="encode",
        config={"signature": encode_signature(config)},
    )
    precomputed_s = run_epochs("precomputed")
    return {
        "clips": len(rows["clip_id"]),
        "bucket": "64x64x9",
        "decode_epoch_s": decode_s,
        "precomputed_epoch_s": precomputed_s,
        "speedup": decode_s / precomputed_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps, no compile")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    args = parser.parse_args()
    peak = matmul_peak()
    steps = 3 if args.quick else 6
    modes = ["fp32 eager", "bf16 autocast"] + ([] if args.quick else ["compiled"])
    rows = [dit_step_bench(mode, steps, peak) for mode in modes]
    peak_after = matmul_peak()  # a busy machine shows up as a moving peak
    profiled = operator_profile(steps=2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="rf-bench-train-") as work:
        epochs = epoch_bench(Path(work), 1 if args.quick else 2)
    result = {
        "threads": torch.get_num_threads(),
        "fp32_matmul_peak_gflops": peak / 1e9,
        "fp32_matmul_peak_after_gflops": peak_after / 1e9,
        "dit_small_steps": rows,
        "fp32_eager_profile": profiled,
        "epoch": epochs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    print(
        f"fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s (after the step runs: {peak_after / 1e9:.0f}), "
        f"{result['threads']} threads"
    )
    print(
        f"DiT small preset ({rows[0]['params_m']:.1f} M params), batch 8 x 256 tokens, "
        f"{rows[0]['train_gflop_per_step']:.0f} GFLOP per training step"
    )
    print(f"{'mode':<15}{'step s':>9}{'first s':>9}{'tokens/s':>10}{'GFLOP/s':>9}{'of peak':>9}")
    for r in rows:
        print(
            f"{r['mode']:<15}{r['step_s']:>9.3f}{r['first_step_s']:>9.2f}{r['tokens_per_s']:>10.0f}"
            f"{r['achieved_gflops']:>9.0f}{r['fraction_of_peak']:>9.0%}"
        )
    print(
        f"fp32 eager step by operator (self time): matmuls {profiled['gemm_share']:.0%}, "
        f"outside matmuls {profiled['outside_gemm_share']:.0%}; largest outside: "
        + ", ".join(f"{o['op']} {o['share']:.1%}" for o in profiled["top_outside_gemm"])
    )
    print(
        f"epoch of {epochs['clips']} clips at {epochs['bucket']} (tiny preset): decode on the fly "
        f"{epochs['decode_epoch_s']:.2f} s, precomputed latents {epochs['precomputed_epoch_s']:.2f} s "
        f"-> {epochs['speedup']:.1f}x"
    )
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

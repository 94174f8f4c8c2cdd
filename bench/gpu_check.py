"""`make gpu-check`: the demo pipeline on a CUDA GPU, every stage timed, and the DiT training step's speed
against the GPU's bf16 matmul peak measured in the same run. Without CUDA it says so and exits 0.

Every model stage is moved to the GPU with config overrides (score's image-tower and OCR actors,
train-vae, encode, train, sample); captioning runs where caption.vllm.device says (the GPU needs the CUDA vLLM
environment). Data lands under --root (data/gpu-check), apart from the CPU demo's. Prints a table of
(stage, device, status, seconds), then the DiT step (small preset, bf16 autocast, eager and compiled):
tokens/s and its fraction of a bf16 GEMM peak measured just before it. JSON to bench/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.train import dit_step_bench, matmul_peak  # noqa: E402
from pipelines.config import PipelineConfig, load_config  # noqa: E402

# GPU shares of the Ray actors: fractions, so the model stages' actors fit one GPU together.
GPU_OVERRIDES = (
    "score.image_tower.device=cuda",
    "score.image_tower.num_gpus=0.5",
    "score.ocr.device=cuda",
    "score.ocr.num_gpus=0.25",
    "encode.device=cuda",
    "encode.num_gpus=0.5",
    "train.device=cuda",
    "train.vae_train.device=cuda",
    "sample.device=cuda",
    "ray.num_cpus=0",
)


def gpu_config(root: Path, extra: list[str]) -> PipelineConfig:
    paths = (
        f"store.root={root}",
        f"train.out_dir={root}/train",
        f"train.vae.weights_path={root}/vae",
        f"train.vae_train.out_dir={root}/vae",
        f"sample.checkpoint={root}/train",
        f"sample.out_dir={root}/samples",
    )
    return load_config("demo", [*paths, *GPU_OVERRIDES, *extra])


def stage_device(cfg: PipelineConfig, stage: str) -> str:
    return {
        "score": f"{cfg.score.image_tower.device} (image tower), {cfg.score.ocr.device} (OCR)",
        "caption": f"vLLM {cfg.caption.vllm.device}",
        "train-vae": cfg.train.vae_train.device,
        "encode": cfg.encode.device,
        "train": cfg.train.device,
        "sample": cfg.sample.device,
    }.get(stage, "cpu")


def run_pipeline(cfg: PipelineConfig) -> list[dict]:
    """The demo's stages in the demo's order, through the CLI's handlers, each timed."""
    from pipelines.cli.command import HANDLERS
    from pipelines.demo import STEPS, _sample_footage

    inputs = [str(_sample_footage(cfg))]
    rows = []
    for stage, options in STEPS:
        name = "score report" if options.get("scores") else stage
        started = time.monotonic()
        code = HANDLERS[stage](cfg, argparse.Namespace(inputs=inputs, **options))
        rows.append(
            {
                "stage": name,
                "device": stage_device(cfg, stage),
                "status": "ok" if code == 0 else f"exit {code}",
                "seconds": time.monotonic() - started,
            }
        )
        if code != 0:
            break
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "gpu-check")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_check.json")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the DiT step and the peak")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False): nothing to check")
        return 0
    device = torch.device("cuda", 0)
    name = torch.cuda.get_device_name(device)
    cfg = gpu_config(args.root, args.overrides)
    stages = [] if args.skip_pipeline else run_pipeline(cfg)

    peak = matmul_peak(8192, 20, device, torch.bfloat16)
    steps = [dit_step_bench(mode, 20, peak, device) for mode in ("bf16 autocast", "bf16 compiled")]
    peak_after = matmul_peak(8192, 20, device, torch.bfloat16)  # a throttling or shared GPU shows here
    result = {
        "gpu": name,
        "stages": stages,
        "bf16_matmul_peak_tflops": peak / 1e12,
        "bf16_matmul_peak_after_tflops": peak_after / 1e12,
        "dit_small_steps": steps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    print(f"\ngpu-check on {name}")
    print(f"{'stage':<14}{'device':<28}{'status':<9}{'seconds':>9}")
    for row in stages:
        print(f"{row['stage']:<14}{row['device']:<28}{row['status']:<9}{row['seconds']:>9.1f}")
    if stages:
        print(f"{'total':<51}{sum(r['seconds'] for r in stages):>9.1f}")
    print(
        f"bf16 matmul peak (8192^3 GEMM): {peak / 1e12:.1f} TFLOP/s (after the steps: {peak_after / 1e12:.1f})"
    )
    print(f"DiT small preset, batch 8 x 256 tokens, {steps[0]['train_gflop_per_step']:.0f} GFLOP per step")
    print(f"{'mode':<15}{'step ms':>9}{'tokens/s':>11}{'TFLOP/s':>9}{'of peak':>9}")
    for r in steps:
        print(
            f"{r['mode']:<15}{r['step_s'] * 1e3:>9.2f}{r['tokens_per_s']:>11.0f}"
            f"{r['achieved_gflops'] / 1e3:>9.1f}{r['fraction_of_peak']:>9.1%}"
        )
    print(f"wrote {args.out}")
    failed = [r["stage"] for r in stages if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

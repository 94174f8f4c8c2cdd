"""Benchmark of the caption stage: does the stage keep the vLLM engine busy?

One run, one vLLM OpenAI-compatible server (the tiny Qwen2-VL built locally, from the vLLM
environment), the same clips and the same request concurrency:

  prep  frame preparation alone (decode + sample + resize + JPEG), in this process on one core;
  a     vLLM alone: the fully prepared requests (frames already encoded) sent straight to the server;
  b     the caption stage end to end (`run_caption`: Ray Data reads blobs, prepares frames in CPU
        tasks overlapped with the engine, sends requests, cleans captions, stages and merges them).

Reports output tokens/s and clips/s for a and b, and the ratio b/a (target >= 0.85). Ray is
started and the stage warmed up once before timing; b's time includes everything the stage does
for that run (dataset start-up, actor start-up, staging writes, the final merge).

The engine gets the last core to itself (its OpenMP threads and processes are pinned there), the
CPU analogue of a GPU: on a GPU cluster frame decoding never competes with the engine for its
device. This process, Ray and the stage's workers run on the other cores, in a and b alike.
`--shared-cores` lets everything share every core instead (then b also measures CPU contention).
The defaults are the stage's own: 256 output tokens per caption (random weights never stop early),
16 requests in flight, 192 clips (~30 s of engine work, so one-off start-up is a small share).

Writes bench/results/caption.json (with the load average: timings on a shared machine are noisy)
and prints a markdown table.

    python bench/caption.py [--clips N] [--max-tokens N] [--concurrency N] [--frames N] [--quick]
                            [--shared-cores]

Needs the vLLM environment (`make vllm-env`); the server runs there, this script in the main env.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from caption_clips import clips_rows, photo_clips  # noqa: E402

from caption.engines import CaptionRequest, OpenAICaptionEngine  # noqa: E402
from caption.stage import prepare_frames  # noqa: E402
from caption.vllm.runtime import (  # noqa: E402
    LAUNCHED_SERVER_KEY_ENV,
    VLLMServer,
    ensure_tiny_vlm,
    server_args,
    server_key_in_environment,
    tiny_cpu_config,
    vllm_env_vars,
)
from pipelines.config import PipelineConfig, parse_config  # noqa: E402
from pipelines.jobs.caption import run_caption  # noqa: E402
from store import Store  # noqa: E402

RESULTS = REPO / "bench" / "results" / "caption.json"
TARGET_RATIO = 0.85


def _config(store_root: Path, model: Path, base_url: str, args: argparse.Namespace) -> PipelineConfig:
    return parse_config(
        {
            "store": {"root": str(store_root)},
            "caption": {
                **tiny_cpu_config(model, vllm={"max_num_seqs": args.concurrency}).model_dump(
                    mode="json", exclude_defaults=True
                ),
                "engine": "openai",
                "only_selected": False,  # the bench's clips are not filtered: caption them all
                "batch_size": args.batch_size,
                "decode_num_cpus": 0.25,
                "decode_concurrency": 2,
                "flush_every": 256,
                # Random weights never stop early: every request generates exactly max_tokens.
                "sampling": {"max_tokens": args.max_tokens, "temperature": 0.2, "seed": 0},
                "frames": {"num_frames": args.frames, "max_pixels": 112 * 112},
                "openai": {
                    "base_url": base_url,
                    "api_key_env": LAUNCHED_SERVER_KEY_ENV,
                    "concurrency": args.concurrency,
                },
            },
        }
    )


def _vllm_alone(cfg: PipelineConfig, prepared: dict[str, np.ndarray]) -> dict[str, Any]:
    engine = OpenAICaptionEngine(cfg.caption)
    payloads = [
        (str(cid), engine.payload(CaptionRequest(str(cid), [bytes(f) for f in frames])))
        for cid, frames in zip(prepared["clip_id"], prepared["frames"], strict=True)
    ]

    async def run() -> tuple[float, list]:
        try:
            start = time.perf_counter()
            outputs = await engine.generate_payloads(payloads)
            return time.perf_counter() - start, outputs
        finally:
            await engine.aclose()

    seconds, outputs = asyncio.run(run())
    errors = [o.error for o in outputs if o.error]
    if errors:
        raise RuntimeError(f"vLLM-alone requests failed: {errors[:3]}")
    tokens = sum(o.output_tokens or 0 for o in outputs)
    return {
        "seconds": seconds,
        "clips": len(outputs),
        "output_tokens": tokens,
        "prompt_tokens": sum(o.prompt_tokens or 0 for o in outputs),
    }


def _stage(cfg: PipelineConfig) -> dict[str, Any]:
    summary = run_caption(cfg, recaption=True, progress=False)
    if summary.failed:
        raise RuntimeError(f"stage run had {summary.failed} failures: {summary.error_examples}")
    return {
        "seconds": summary.seconds,
        "clips": summary.attempted,
        "output_tokens": summary.output_tokens,
        "prompt_tokens": summary.prompt_tokens,
        "frame_prep_cpu_s": summary.frame_prep_s,
    }


def _rates(r: dict[str, Any]) -> dict[str, Any]:
    return {
        **r,
        "clips_per_s": r["clips"] / r["seconds"],
        "output_tokens_per_s": r["output_tokens"] / r["seconds"],
    }


def main() -> int:  # noqa: PLR0915 — one benchmark read top to bottom: arguments, runs, the table
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=192)
    # The stage's default caption length (caption.sampling.max_tokens).
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="32 clips, 32 tokens: a smoke run")
    parser.add_argument(
        "--shared-cores", action="store_true", help="no dedicated engine core: server and stage share all"
    )
    args = parser.parse_args()
    if args.quick:
        args.clips, args.max_tokens = 32, 32

    import ray

    work = Path(tempfile.mkdtemp(prefix="rf-bench-caption-"))
    try:
        copies = -(-args.clips // 4)
        clips = dict(list(photo_clips(copies=copies).items())[: args.clips])
        store = Store(work / "store")
        store.append("clips", clips_rows(clips))
        model = ensure_tiny_vlm()
        server_cfg = _config(store.root, model, "http://127.0.0.1:1/v1", args).caption  # URL unused
        all_cpus = sorted(os.sched_getaffinity(0))
        engine_cpus = [] if args.shared_cores else all_cpus[-1:]
        host_cpus = [c for c in all_cpus if c not in engine_cpus] or all_cpus
        env = vllm_env_vars()
        if engine_cpus:
            # The engine's own core, the CPU analogue of its GPU: the server and its engine processes
            # inherit this affinity, and OpenMP binds there too (vLLM's default would bind to one core
            # and keep the other for its scheduler, so it competes with frame decoding for both).
            cores = ",".join(map(str, engine_cpus))
            env.update({"VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})
            os.sched_setaffinity(0, engine_cpus)
        server = VLLMServer(server_args(server_cfg), ready_timeout_s=600, env=env)
        with server, server_key_in_environment(server):
            # This process, Ray and every stage worker run on the other cores.
            os.sched_setaffinity(0, host_cpus)
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray"))
            cfg = _config(store.root, model, server.base_url, args)
            # Frame preparation alone, one core, the exact function the stage runs in its CPU tasks.
            batch = {
                "clip_id": np.asarray(list(clips), dtype=object),
                "video": np.asarray(list(clips.values()), dtype=object),
            }
            start = time.perf_counter()
            prepared = prepare_frames(batch, cfg.caption)
            prep_s = time.perf_counter() - start
            # Warm-up (excluded): the engine on every request once (its first pass over new batch
            # shapes ran 2.5x slower than later ones), then the stage's Ray Data and actor code paths.
            _vllm_alone(cfg, prepared)
            warm_cfg = _config(work / "warm", model, server.base_url, args)
            Store(warm_cfg.store.root).append("clips", clips_rows(dict(list(clips.items())[:8])))
            run_caption(warm_cfg, progress=False)
            alone = _rates(_vllm_alone(cfg, prepared))
            stage = _rates(_stage(cfg))
            alone_again = _rates(_vllm_alone(cfg, prepared))
        # a is measured before and after b; the mean damps drift on a shared machine.
        a_tok_s = (alone["output_tokens_per_s"] + alone_again["output_tokens_per_s"]) / 2
        a_clip_s = (alone["clips_per_s"] + alone_again["clips_per_s"]) / 2
        ratio = stage["output_tokens_per_s"] / a_tok_s
        result = {
            "benchmark": "caption",
            "params": vars(args),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg_1m": os.getloadavg()[0],
                "engine_cpus": engine_cpus,
                "host_cpus": host_cpus,
            },
            "server_startup_s": server.startup_s,
            "frame_prep": {"seconds": prep_s, "clips": len(clips), "ms_per_clip": 1000 * prep_s / len(clips)},
            "vllm_alone": [alone, alone_again],
            "stage": stage,
            "ratio_output_tokens_per_s": ratio,
            "ratio_clips_per_s": stage["clips_per_s"] / a_clip_s,
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"\ncaption benchmark: {len(clips)} clips, {args.frames} frames 112x112 max, {args.max_tokens} "
            f"output tokens each, {args.concurrency} requests in flight (load avg {result['machine']['load_avg_1m']:.1f}); "
            f"engine on CPU(s) {engine_cpus or 'shared'}, stage and Ray on {host_cpus}\n"
        )
        print("| run | seconds | clips/s | output tokens/s |")
        print("|---|---|---|---|")
        for name, r in (
            ("a: vLLM alone (before b)", alone),
            ("b: caption stage end to end", stage),
            ("a: vLLM alone (after b)", alone_again),
        ):
            print(
                f"| {name} | {r['seconds']:.2f} | {r['clips_per_s']:.2f} | {r['output_tokens_per_s']:.1f} |"
            )
        print(f"\nratio b/a (output tokens/s): {ratio:.3f} (target >= {TARGET_RATIO})")
        print(
            f"frame preparation alone: {prep_s:.2f} s for {len(clips)} clips "
            f"({result['frame_prep']['ms_per_clip']:.1f} ms/clip on one core); "
            f"in the stage: {stage['frame_prep_cpu_s']:.2f} s of task time, overlapped with the engine"
        )
        print(f"vLLM server start-up: {server.startup_s:.0f} s (not in any timing above)")
        print(f"wrote {RESULTS.relative_to(REPO)}")
        return 0
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""`reelforge demo`: every stage end to end, timed, on the built-in sample footage or the user's footage.

The demo runs the same handlers as the per-stage commands, in one process with one Ray instance.
Re-running it resumes: files and clips already done are skipped by each stage.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pipelines.config import PipelineConfig

Handler = Callable[[PipelineConfig, argparse.Namespace], int]

# (stage, the options its command would get by default)
STEPS: tuple[tuple[str, dict[str, object]], ...] = (
    ("split", {"scenes_only": False, "json": None}),
    ("score", {"recompute": False}),
    ("filter", {"expression": None}),
    ("report", {"scores": True, "out": None}),  # score percentiles and what each filter rule removes
    ("caption", {"recaption": False}),
    ("train-vae", {"fresh": False}),
    ("encode", {"overwrite": False}),
    ("train", {"fresh": False, "ray_workers": 0}),
    ("sample", {"prompt": []}),
    ("report", {"scores": False, "out": None}),
)


def run_demo(cfg: PipelineConfig, inputs: list[str], handlers: Mapping[str, Handler]) -> int:
    """Run every stage in `handlers` on the inputs (the sample footage by default); returns the exit status."""
    started = time.monotonic()
    if not inputs:
        inputs = [str(_sample_footage(cfg))]
    timings: list[tuple[str, str, float]] = []
    for stage, options in STEPS:
        stage_name = "score report" if options.get("scores") else stage
        print(f"\n=== {stage_name} ===", flush=True)
        t0 = time.monotonic()
        args = argparse.Namespace(inputs=inputs, **options)
        code = handlers[stage](cfg, args)
        timings.append((stage_name, "ok" if code == 0 else f"exit {code}", time.monotonic() - t0))
        if code != 0:
            break
    _print_timings(timings, time.monotonic() - started)
    _print_locations(cfg)
    failed = [s for s, status, _ in timings if status.startswith("exit")]
    return 1 if failed else 0


def _sample_footage(cfg: PipelineConfig) -> Path:
    """The sample footage folder of the config (written once; the generator is deterministic)."""
    from pipelines.sample_footage import MOVIES, write_sample_footage

    folder = Path(cfg.input.paths[0]) if cfg.input.paths else cfg.store.root / "sample_footage"
    if not all((folder / m.name).is_file() for m in MOVIES):
        print(f"writing the built-in sample footage to {folder}")
        write_sample_footage(folder)
    return folder


def _print_timings(timings: list[tuple[str, str, float]], total: float) -> None:
    print("\n| stage | status | seconds |\n|---|---|---|")
    for stage, status, seconds in timings:
        print(f"| {stage} | {status} | {seconds:.1f} |")
    print(f"| total | | {total:.1f} |")


def _print_locations(cfg: PipelineConfig) -> None:
    root = cfg.store.root
    print(f"\ndata: {root}/videos.lance and {root}/clips.lance (open with lance.dataset(...))")
    for label, path in (
        ("video autoencoder", Path(cfg.train.vae_train.out_dir)),
        ("DiT checkpoints", Path(cfg.train.out_dir)),
        ("samples", Path(cfg.sample.out_dir)),
        ("report", root / cfg.report.out),
    ):
        if path.exists():
            print(f"{label}: {path}")

"""The commands that look and change nothing in the store: report, plan and status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.cli.options import EXIT_REFUSED, Subcommands, add_command
from pipelines.cli.stage_run import job, preflight
from pipelines.config import PipelineConfig


def add_report_parser(sub: Subcommands) -> None:
    """Add the `report` command."""
    p = add_command(
        sub,
        "report",
        "write the HTML report of the dataset (or --scores for a text summary)",
        "Counts per stage, score histograms with filter thresholds, thumbnails, captions, duplicates "
        "and the configs used.",
    )
    p.add_argument(
        "--scores", action="store_true", help="print score percentiles and what each filter rule removes"
    )
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default: report.out)")


def add_plan_parser(sub: Subcommands) -> None:
    """Add the `plan` command."""
    p = add_command(
        sub,
        "plan",
        "resolve every stage's Ray resources on the cluster; refuse what could never be scheduled",
        "Resolve each stage's CPUs, GPUs, memory, concurrency, batch sizes, actor counts and vLLM "
        "replicas x tensor-parallel size against the connected Ray cluster (ray.address, or a local Ray) "
        "or a spec file (`nodes:` a list of {count, cpus, gpus, memory_gb}; `shared_paths:` the folders "
        "every node mounts), print a table per stage and refuse, with the reason, anything that could "
        "never be scheduled. Every job runs the same check when it starts.",
    )
    p.add_argument("--cluster", type=Path, default=None, metavar="SPEC.yaml", help="plan for this spec file")


def add_status_parser(sub: Subcommands) -> None:
    """Add the `status` command."""
    p = add_command(
        sub,
        "status",
        "what the store holds, what each stage did, what is stale and the next command",
        "Videos (ok, failed by reason), clips and hours of footage; for every stage the columns it "
        "added, how many clips have them, when, with which config and models (placeholders marked); "
        "what is stale (clips that arrived after a stage ran, captions made before the filter changed, "
        "latents from another autoencoder); and the next command to run. Reads only.",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")


def report_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Write the HTML report (or print the scores summary); returns the exit status."""
    preflight("report", cfg)
    # Only reads, but holds the job lock all the same: vacuum must not delete files it is reading.
    if args.scores:
        from pipelines.report.scores_text import render

        with job(cfg, "report") as store:
            print(render(store))
        return 0
    from pipelines.jobs.report import run

    with job(cfg, "report"):
        print(f"report: {run(cfg, out=args.out)}")
    return 0


def plan_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Print each stage's resources on the cluster; returns the exit status."""
    from pipelines.cluster_spec import live_cluster_spec, load_cluster_spec
    from pipelines.plan import format_plan, plan

    if args.cluster is not None:
        spec, live = load_cluster_spec(args.cluster), False
    else:
        from pipelines.runtime import init_ray

        init_ray(cfg.ray)
        spec, live = live_cluster_spec(), True
    plans = plan(cfg, spec, live=live)
    print(format_plan(cfg, spec, plans))
    refused = [p.stage for p in plans if p.problems]
    if refused:
        print(f"reelforge plan: {', '.join(refused)} can never be scheduled on this cluster", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def status_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Print what the store holds and the next command; returns the exit status."""
    from pipelines.status import format_status, store_status

    given = [
        *(["--config", args.config] if args.config else []),
        *(["--root", args.root] if args.root else []),
    ]
    found = store_status(cfg, command_options=given)
    print(json.dumps(found, indent=2, default=str) if args.json else format_status(found))
    return 0

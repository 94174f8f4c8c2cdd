"""`reelforge ray start|stop|status`: the local Ray kept running for a project folder (pipelines/ray_head.py)."""

from __future__ import annotations

import argparse

from pipelines.cli.options import EPILOG, Subcommands, UsageError, common_options
from pipelines.config import PipelineConfig


def add_ray_parser(sub: Subcommands) -> None:
    """Add the `ray` command."""
    p = sub.add_parser(
        "ray",
        help="keep a local Ray running for this project folder: start, stop, status",
        description="Start a local Ray for the project folder and keep it running, so that each stage command "
        "on that folder joins it (about a second) instead of starting its own Ray. Its address is recorded in "
        "the folder (_ray/head.json); commands join only that Ray, or one named by ray.address / $RAY_ADDRESS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help in (
        ("start", "start the project's Ray (ray.num_cpus, ray.temp_dir); nothing if it runs"),
        ("stop", "stop the project's Ray"),
        ("status", "print the project's Ray address, or that none runs"),
    ):
        common_options(actions.add_parser(name, help=help, description=help))


def ray_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Start, stop or show the project's Ray; returns the exit status."""
    from pipelines import ray_head

    root = cfg.store.root
    try:
        if args.action == "start":
            started = ray_head.start_head(root, cfg.ray.num_cpus, cfg.ray.temp_dir)
            print(f"ray: running at {started.address} for {root} (pid {started.pid}, logs in {started.logs})")
        elif args.action == "stop":
            print("ray: stopped" if ray_head.stop_head(root) else f"ray: none was running for {root}")
        else:
            head = ray_head.recorded_head(root)
            print(f"ray: none running for {root}" if head is None else f"ray: running at {head.address}")
    except ray_head.RayHeadError as err:
        raise UsageError(str(err)) from None
    return 0

"""`reelforge sample-footage` and `reelforge demo`: the built-in footage, and every stage run on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.options import Subcommands, add_command, debug_option
from pipelines.cli.stage_run import input_files
from pipelines.config import PipelineConfig


def add_sample_footage_parser(sub: Subcommands) -> None:
    """Add the `sample-footage` command."""
    p = sub.add_parser(
        "sample-footage",
        help="write the built-in sample footage and its ground truth",
        description="Write a deterministic set of short videos made from scikit-image's photographs "
        "(hard cuts, a dissolve, static/fast/blurred/dark/text shots, VP9 WebM, variable frame rate) "
        "with <file>.gt.json ground truth beside each. Takes a few seconds.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="folder to write the videos into (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of the camera shake (default 0)")
    debug_option(p, argparse.SUPPRESS)


def add_demo_parser(sub: Subcommands) -> None:
    """Add the `demo` command."""
    p = add_command(
        sub,
        "demo",
        "run every stage end to end on the built-in sample footage (or INPUT)",
        "Generate the sample footage (unless inputs are given) and run split, score, filter, caption, "
        "encode, train, sample and report, printing the time of each stage and where data landed.",
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="your own footage instead of the sample footage"
    )


def sample_footage_command(args: argparse.Namespace) -> int:
    """The one command without a config: it only writes files into OUT."""
    from pipelines.sample_footage import write_sample_footage

    for path in write_sample_footage(args.out, seed=args.seed):
        print(path)
    return 0


def demo_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Run every stage on the sample footage (or the inputs); returns the exit status."""
    from pipelines.cli.command import HANDLERS  # the demo runs every stage's handler; command builds on this
    from pipelines.demo import run_demo

    if args.inputs:
        input_files(cfg, args)  # a missing input is refused before the first stage prints anything

    return run_demo(cfg, list(args.inputs), HANDLERS)

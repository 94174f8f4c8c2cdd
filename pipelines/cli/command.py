"""The `reelforge` parser and `main`: parse, load the config, run the subcommand's handler, and turn
every refusal into one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pipelines.cli import curation, demo, eval_export, inspection, project_ray, store_maintenance, training
from pipelines.cli.options import (
    EPILOG,
    EXIT_INTERRUPTED,
    EXIT_ITEMS_FAILED,
    EXIT_REFUSED,
    Subcommands,
    UsageError,
    debug_option,
    verbose_option,
)
from pipelines.config import ConfigError, PipelineConfig, load_config
from store.errors import StoreError
from train.config import DeviceError

# The subcommands in the order `reelforge --help` lists them: the stages in the order they run, then
# what reads, evaluates, exports and maintains their output.
SUBCOMMAND_PARSERS: tuple[Callable[[Subcommands], None], ...] = (
    demo.add_sample_footage_parser,
    curation.add_probe_parser,
    curation.add_split_parser,
    curation.add_score_parser,
    curation.add_filter_parser,
    curation.add_caption_parser,
    training.add_encode_parser,
    training.add_train_vae_parser,
    training.add_train_parser,
    training.add_sample_parser,
    inspection.add_report_parser,
    inspection.add_plan_parser,
    eval_export.add_eval_parser,
    eval_export.add_export_parser,
    inspection.add_status_parser,
    store_maintenance.add_store_parser,
    project_ray.add_ray_parser,
    demo.add_demo_parser,
)

# The handler of every subcommand that reads a config (all but sample-footage).
HANDLERS: dict[str, Callable[[PipelineConfig, argparse.Namespace], int]] = {
    "probe": curation.probe_command,
    "split": curation.split_command,
    "score": curation.score_command,
    "filter": curation.filter_command,
    "caption": curation.caption_command,
    "encode": training.encode_command,
    "train-vae": training.train_vae_command,
    "train": training.train_command,
    "sample": training.sample_command,
    "report": inspection.report_command,
    "plan": inspection.plan_command,
    "eval": eval_export.eval_command,
    "export": eval_export.export_command,
    "status": inspection.status_command,
    "store": store_maintenance.store_command,
    "ray": project_ray.ray_command,
    "demo": demo.demo_command,
}

# Commands whose jobs may run on Ray: they join the project's running Ray (`reelforge ray start`), if any.
RAY_COMMANDS = frozenset({"split", "score", "caption", "encode", "train", "demo"})


class _VersionAction(argparse.Action):
    """--version: computed when asked for (it reads a few packages' metadata), then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object):
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from pipelines.versions import version_lines

        print("\n".join(version_lines()))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The reelforge argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="reelforge",
        description="reelforge: raw footage -> scene clips -> scores -> captions -> Lance -> a trained DiT.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of reelforge, Ray, Lance, PyTorch, PySceneDetect, open_clip and the "
        "vLLM environment's vLLM",
    )
    debug_option(parser, False)
    verbose_option(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMAND_PARSERS:
        add_parser(sub)
    return parser


def _config(args: argparse.Namespace) -> PipelineConfig:
    overrides = list(args.overrides)
    if args.root is not None:
        overrides.append(f"store.root={args.root}")
    return load_config(args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the reelforge command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    command = args.command if args.command not in ("store", "ray") else f"{args.command} {args.action}"
    debug = getattr(args, "debug", False) or os.environ.get("REELFORGE_DEBUG", "") not in ("", "0")
    if getattr(args, "verbose", False):
        from pipelines.runtime import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # read where Ray starts, also by the commands this one runs
    try:
        if args.command == "sample-footage":
            return demo.sample_footage_command(args)
        cfg = _config(args)
        if args.command in RAY_COMMANDS:
            from pipelines.runtime import join_project_ray

            join_project_ray(cfg)
        return HANDLERS[args.command](cfg, args)
    except (ConfigError, DeviceError, StoreError, UsageError) as err:
        if debug:
            raise
        print(f"reelforge {command}: {one_line(str(err))}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"reelforge {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        # Not a failure the user caused (those are refused above with what to fix): one line all the
        # same, with the way to the traceback.
        if debug:
            raise
        print(
            f"reelforge {command}: unexpected {type(err).__name__}: {one_line(str(err))} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ITEMS_FAILED


def one_line(message: str) -> str:
    """A message as one line: a config error lists each problem on its own indented line."""
    lines = [part.strip() for part in message.splitlines() if part.strip()]
    if len(lines) < 2:
        return "".join(lines)
    head, rest = lines[0], "; ".join(lines[1:])
    return f"{head} {rest}" if head.endswith(":") else f"{head}; {rest}"

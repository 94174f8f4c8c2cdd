"""What every `reelforge` subcommand shares: its options, the epilog, the exit codes and UsageError."""

from __future__ import annotations

import argparse

EPILOG = """\
Every stage reads one pipeline config (configs/<name>.yaml, default: demo) and writes into the project
folder `store.root`, which holds two Lance datasets: videos.lance and clips.lance. Any config value can
be changed for one run with --set section.key=value (repeatable), e.g. --set split.detect.detector=adaptive.
Jobs use a local Ray unless `ray.address` or $RAY_ADDRESS names a cluster.
A failure you can fix prints one line saying what is wrong and how to fix it; --debug (or
REELFORGE_DEBUG=1) prints the traceback instead. Exit codes: 0 done (some items may have failed: the
summary says which and why), 1 every item failed (or any did, with --strict), 2 nothing was done.
"""

# What the group modules add their subcommands to (the `sub` of `build_parser`).
Subcommands = argparse._SubParsersAction


class UsageError(RuntimeError):
    """Bad input on the command line (missing input, unwritable output, ...): one line, exit non-zero."""


# Exit codes: what a script needs to know about a run.
EXIT_ITEMS_FAILED = 1  # the stage ran; every item failed (or, with --strict, some did)
EXIT_REFUSED = 2  # nothing was done: fix what the one-line message names
EXIT_INTERRUPTED = 130


def debug_option(parser: argparse.ArgumentParser, default: object) -> None:
    """Add the `--debug` option."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="print the traceback of a failure instead of one line (also: REELFORGE_DEBUG=1)",
    )


def verbose_option(parser: argparse.ArgumentParser, default: object) -> None:
    """Add the `-v/--verbose` option."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="also print Ray's log lines, warnings and progress output (default: they go to Ray's log "
        "files, and one line says where; also: REELFORGE_VERBOSE=1)",
    )


def strict_option(parser: argparse.ArgumentParser, unit: str) -> None:
    """Add the `--strict` option; `unit` names what may fail."""
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit non-zero when any {unit} fails (default: only when every one does)",
    )


def common_options(parser: argparse.ArgumentParser) -> None:
    """The config, --set, --root, --debug and --verbose options of every subcommand that reads a config."""
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="NAME|PATH",
        help="pipeline config: a name under configs/ (demo, cluster) or a YAML path "
        "(default: $REELFORGE_CONFIG or 'demo')",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value for this run; values are parsed as YAML (numbers, true/false, "
        "lists, null); repeatable",
    )
    parser.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="project folder holding videos.lance and clips.lance (shortcut for --set store.root=DIR)",
    )
    # SUPPRESS: a subcommand's default must not overwrite `reelforge --debug COMMAND`
    debug_option(parser, argparse.SUPPRESS)
    verbose_option(parser, argparse.SUPPRESS)


def add_command(sub: Subcommands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand with the epilog and the common options."""
    parser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common_options(parser)
    return parser

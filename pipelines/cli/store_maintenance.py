"""`reelforge store stats|compact|vacuum`: inspect and maintain the project folder's Lance tables."""

from __future__ import annotations

import argparse
import json

from pipelines.cli.options import EPILOG, Subcommands, common_options
from pipelines.cli.stage_run import job, store_of
from pipelines.config import PipelineConfig


def add_store_parser(sub: Subcommands) -> None:
    """Add the `store` command."""
    p = sub.add_parser(
        "store",
        help="store maintenance: stats, compact, vacuum",
        description="Inspect and maintain the project folder's Lance tables. compact and vacuum need the store "
        "to themselves: they refuse while a job runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help, description in (
        (
            "stats",
            "print rows, fragments, versions, bytes per column and indices of each table",
            "Print each table's rows, fragments, versions and tags, its bytes (per column, in the latest "
            "version, on disk with every version), its indices, and the staging datasets present.",
        ),
        (
            "compact",
            "merge small fragments and bring the indices up to date",
            "Merge small fragments into ones of store.target_rows_per_fragment rows (row ids stay the same) "
            "and create or extend the clip_id / video_id indices. Jobs do this on their own when a table "
            "has more than store.compact_fragment_bound small fragments.",
        ),
        (
            "vacuum",
            "remove old versions, unreferenced files and merged staging datasets",
            "Remove the versions older than the latest store.keep_versions (and than store.keep_days days), "
            "except tagged ones, with the files only they reference; files of writes that never "
            "committed; and staging datasets whose stage has been merged into clips.",
        ),
    ):
        action = actions.add_parser(
            name,
            help=help,
            description=description,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common_options(action)
        if name == "stats":
            action.add_argument("--json", action="store_true", help="print the stats as JSON")


def store_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Show, compact or vacuum the store's tables; returns the exit status."""
    from store.maintenance import compact, vacuum  # Lance: not imported on `--help`
    from store.stats import format_stats, stats

    store = store_of(cfg)
    if args.action == "stats":
        with job(cfg, "store stats"):
            found = stats(store)
        print(json.dumps(found, indent=2) if args.json else format_stats(found))
        return 0
    summary = compact(store, cfg.store) if args.action == "compact" else vacuum(store, cfg.store)
    print("\n".join(summary.lines()))
    return 0

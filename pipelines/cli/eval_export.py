"""What comes out of the store: eval (VBench's quality dimensions) and export (for other trainers)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from pipelines.cli.options import Subcommands, UsageError, add_command, strict_option
from pipelines.cli.stage_run import dump_json, input_files, job, outcome
from pipelines.config import PipelineConfig
from store import CLIPS


def add_eval_parser(sub: Subcommands) -> None:
    """Add the `eval` command."""
    p = add_command(
        sub,
        "eval",
        "score videos, samples, a checkpoint or the curated clips on VBench's quality dimensions",
        "Measure temporal flickering, subject and background consistency, motion smoothness, dynamic "
        "degree, aesthetic and imaging quality (VBench's definitions, this project's scorers; "
        "curate/vbench.py) per video, aggregate them VBench's way, and store them in the evals table.",
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="video files, folders (e.g. a samples folder), globs"
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, metavar="DIR", help="sample this checkpoint first"
    )
    p.add_argument(
        "--prompts", type=Path, default=None, metavar="FILE", help="prompts for --checkpoint, one a line"
    )
    p.add_argument("--store", action="store_true", help="also evaluate the curated clips (eval.store_filter)")
    p.add_argument(
        "--filter", default=None, metavar="SQL", help="clips for --store (default: eval.store_filter)"
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="OUT.json", help="write per-video results as JSON"
    )
    strict_option(p, "video")


def add_export_parser(sub: Subcommands) -> None:
    """Add the `export` command."""
    p = add_command(
        sub,
        "export",
        "export clips for other trainers: WebDataset shards, parquet, or a folder layout",
        "Write the clips matching --filter (export.filter) with their captions, metadata and scores as "
        "WebDataset tar shards, parquet files, or videos/ + metadata.jsonl (or prompts.txt + videos.txt). "
        "The clip bytes are copied unchanged; a clip that does not decode gets a line in _errors.jsonl. "
        "A killed export continues with --resume.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="folder to export into (new or empty)")
    p.add_argument(
        "--format", choices=("webdataset", "parquet", "folder"), default=None, help="export.format"
    )
    p.add_argument(
        "--filter", default=None, metavar="SQL", help="Lance SQL over clips columns (export.filter)"
    )
    p.add_argument("--resume", action="store_true", help="continue the export OUT holds")
    p.add_argument("--overwrite", action="store_true", help="replace the export OUT holds")
    strict_option(p, "clip")


def eval_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Evaluate videos, a checkpoint's samples or the curated clips; returns the exit status."""
    from curate.aesthetic import MissingWeightsError
    from pipelines.export import filter_problem
    from pipelines.jobs.eval import checkpoint_items, file_items, run_eval, store_items

    if not (args.inputs or args.checkpoint or args.store):
        raise UsageError(
            "nothing to evaluate: give INPUT (videos or a samples folder), --checkpoint DIR or --store"
        )
    if args.prompts is not None and args.checkpoint is None:
        raise UsageError("--prompts goes with --checkpoint DIR (the checkpoint that samples them)")
    sources = [file_items(input_files(cfg, args))] if args.inputs else []
    with job(cfg, "eval", creates=not args.store) as store:
        if args.checkpoint is not None:
            sources.append(iter(checkpoint_items(cfg, args.checkpoint, _eval_prompts(cfg, args.prompts))))
        if args.store:
            where = cfg.eval.store_filter if args.filter is None else args.filter
            if where == "selected" and "selected" not in store.require(CLIPS).schema.names:
                raise UsageError("no clip is selected yet: run `reelforge filter`, or give --filter SQL")
            problem = filter_problem(store.require(CLIPS), where)
            if problem:
                raise UsageError(f"--filter {where!r} does not apply to clips: {problem}")
            sources.append(store_items(store, where))
        try:
            summary = run_eval(cfg, itertools.chain(*sources), store.root)
        except MissingWeightsError as err:
            raise UsageError(str(err)) from None
    print("\n".join(summary.lines()))
    if args.json:
        dump_json(summary.json_rows(), args.json)
    return outcome("eval", len(summary.rows), summary.failed, args, "videos")


def _eval_prompts(cfg: PipelineConfig, prompts_file: Path | None) -> list[str]:
    if prompts_file is None:
        return list(cfg.eval.prompts or cfg.sample.prompts)
    if not prompts_file.is_file():
        raise UsageError(f"prompts file not found: {prompts_file}")
    prompts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"{prompts_file} holds no prompt (one a line)")
    return prompts


def export_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Export the clips for other trainers; returns the exit status."""
    from pipelines.export import ExportError, export

    settings = cfg.export.model_copy(
        update={k: v for k, v in (("format", args.format), ("filter", args.filter)) if v is not None}
    )
    try:
        with job(cfg, "export") as store:
            summary = export(store, args.out, settings, resume=args.resume, overwrite=args.overwrite)
    except ExportError as err:
        raise UsageError(str(err)) from None
    print("\n".join(summary.lines()))
    return outcome("export", summary.attempted, summary.failed, args, "clips")

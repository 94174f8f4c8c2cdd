"""The curation stages: probe, split, score, filter and caption (footage -> clips with scores and captions)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml

from pipelines.cli.options import Subcommands, UsageError, add_command, strict_option
from pipelines.cli.stage_run import compact_after, dump_json, input_files, job, outcome, preflight, store_of
from pipelines.config import PipelineConfig


def add_probe_parser(sub: Subcommands) -> None:
    """Add the `probe` command."""
    p = add_command(
        sub,
        "probe",
        "print what each input file is (codec, size, fps, VFR, rotation, errors)",
        "Probe input files with PyAV without writing anything: container, codec, size, rotation, "
        "nominal and average fps, variable frame rate, duration, frames, audio; or the reason a file "
        "is unusable.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files, folders, globs or list files (default: input.paths of the config)",
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="OUT.json", help="also write the results as JSON"
    )


def add_split_parser(sub: Subcommands) -> None:
    """Add the `split` command."""
    p = add_command(
        sub,
        "split",
        "split footage into scene clips (Ray Data job) -> videos + clips tables",
        "Probe each input, detect shot boundaries with PySceneDetect on one PyAV decode pass, cut "
        "clips on exact container timestamps, verify them and store them in the clips table. "
        "Re-running skips files already done (exactly-once resume).",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files, folders, globs or list files (default: input.paths of the config)",
    )
    p.add_argument(
        "--scenes-only",
        action="store_true",
        help="detect shot boundaries only, write nothing to the store (use with --json)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT.json",
        help="write the detected boundaries (path, seconds, frame index, kind) per input file",
    )
    strict_option(p, "file")


def add_score_parser(sub: Subcommands) -> None:
    """Add the `score` command."""
    p = add_command(
        sub,
        "score",
        "score clips: aesthetics, motion, technical quality, on-screen text, embedding, duplicates",
        "Add score columns to the clips table with a Ray Data job (model scorers as actors). "
        "Resumes: only clips lacking the columns are scored unless --recompute.",
    )
    p.add_argument("--recompute", action="store_true", help="score every clip again and replace the columns")
    strict_option(p, "clip")


def add_filter_parser(sub: Subcommands) -> None:
    """Add the `filter` command."""
    p = add_command(
        sub,
        "filter",
        "select clips with the config's filter expression (recorded with the dataset)",
        "Evaluate filter.expression over the score columns and store the selection as the `selected` "
        "column; clips are never deleted.",
    )
    p.add_argument("--expression", default=None, help="use this expression instead of filter.expression")


def add_caption_parser(sub: Subcommands) -> None:
    """Add the `caption` command."""
    p = add_command(
        sub,
        "caption",
        "caption the selected clips with a vision-language model (vLLM)",
        "Caption clips with the engine in caption.engine (vllm in-process or an OpenAI-compatible "
        "server). Only clips lacking a caption are captioned unless --recaption.",
    )
    p.add_argument("--recaption", action="store_true", help="caption every clip again")
    strict_option(p, "clip")


def probe_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Print what each input file is; returns the exit status."""
    from curate.probe import probe_file

    results = [probe_file(path, cfg.split.probe).as_row() for path in input_files(cfg, args)]
    for row in results:
        if row["error"]:
            print(f"{row['path']}: ERROR {row['error']}")
        else:
            print(
                f"{row['path']}: {row['container']}/{row['codec']} {row['width']}x{row['height']} "
                f"rot {row['rotation']} fps {row['nominal_fps']:.3f} (avg {row['avg_fps']:.3f}"
                f"{', VFR' if row['is_vfr'] else ''}) {row['duration_s']:.2f} s {row['num_frames']} frames"
                f"{' +audio' if row['has_audio'] else ''}"
            )
    if args.json:
        dump_json(results, args.json)
    return 0 if all(not r["error"] for r in results) else 1


def _writable_root(cfg: PipelineConfig) -> None:
    """Refuse, before any work, a store.root that cannot be created or written."""
    root = Path(cfg.store.root).absolute()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the store at {cfg.store.root}: {existing} is not a writable folder")


def split_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Split the inputs into clips (or only detect scenes); returns the exit status."""
    from pipelines.jobs.split import run_scenes_only, run_split

    inputs = input_files(cfg, args)
    if not args.scenes_only:
        _writable_root(cfg)
    if args.scenes_only:
        if args.json is None:
            raise UsageError("--scenes-only writes nothing to the store: give --json OUT.json")
        entries = run_scenes_only(cfg, args.json, paths=inputs)
        print(f"split: boundaries of {len(entries)} file(s) written to {args.json}")
        return 0
    with job(cfg, "split", creates=True):
        summary = run_split(cfg, paths=inputs)
        print("\n".join(summary.lines()))
        if args.json:
            dump_json(run_scenes_json(cfg), args.json)
    compact_after(cfg)
    return outcome("split", summary.ok + summary.failed, summary.failed, args, "files")


def run_scenes_json(cfg: PipelineConfig) -> list[dict[str, object]]:
    """The boundaries recorded in the videos table, in the --scenes-only JSON layout."""
    rows = store_of(cfg).read("videos", ["uri", "status", "error", "boundaries"]).to_pylist()
    return [
        {"path": r["uri"], "status": r["status"], "error": r["error"], "boundaries": r["boundaries"]}
        for r in rows
    ]


def score_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Score the clips; returns the exit status."""
    from pipelines.jobs.score import run_score

    preflight("score", cfg)
    with job(cfg, "score"):
        summary = run_score(cfg, recompute=args.recompute)
    print("\n".join(summary.lines()))
    compact_after(cfg)
    return outcome("score", summary.scored, summary.failed, args, "clips")


def filter_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Select clips with the filter expression; returns the exit status."""
    from pipelines.jobs.filter import run_filter
    from store.filters import FilterError

    preflight("filter", cfg, args.expression)
    try:
        with job(cfg, "filter"):
            print("\n".join(run_filter(cfg, args.expression).lines()))
    except FilterError as err:
        raise UsageError(str(err)) from None
    compact_after(cfg)
    return 0


def caption_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Caption the selected clips; returns the exit status."""
    from pipelines.jobs import caption as caption_job
    from pipelines.jobs.caption_checks import CaptionJobError

    preflight("caption", cfg)
    strict = getattr(args, "strict", False)
    # The in-process vllm engine may re-run this command in the vLLM environment: it gets the resolved
    # config as a file, so overrides and the demo's settings carry over exactly.
    with tempfile.TemporaryDirectory(prefix="reelforge-caption-") as tmp:
        resolved = Path(tmp) / "resolved.yaml"
        resolved.write_text(yaml.safe_dump(cfg.resolved(), sort_keys=False))
        argv = [
            "caption",
            "--config",
            str(resolved),
            *(["--recaption"] if args.recaption else []),
            *(["--strict"] if strict else []),
        ]
        try:
            with job(cfg, "caption"):
                result = caption_job.caption_command(cfg, argv, recaption=args.recaption)
        except CaptionJobError as err:
            raise UsageError(str(err)) from None
    compact_after(cfg)
    if isinstance(result, int):  # the exit code of the same command run in the vLLM environment
        return result
    return outcome("caption", result.attempted, result.failed, args, "clips")

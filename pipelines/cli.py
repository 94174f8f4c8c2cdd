"""The `reelforge` command: one subcommand per stage, each a thin call into pipelines/jobs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from pipelines.config import ConfigError, PipelineConfig, load_config
from store import CLIPS, VIDEOS, Store, StoreError
from store.maintenance import compact, format_stats, job_lock, maybe_compact, stats, vacuum
from train.config import DeviceError

EPILOG = """\
Every stage reads one pipeline config (configs/<name>.yaml, default: demo) and writes into the project
folder `store.root`, which holds two Lance datasets: videos.lance and clips.lance. Any config value can
be changed for one run with --set section.key=value (repeatable), e.g. --set split.detect.detector=adaptive.
Jobs use a local Ray unless `ray.address` or $RAY_ADDRESS names a cluster.
A failure you can fix prints one line saying what is wrong and how to fix it; --debug (or
REELFORGE_DEBUG=1) prints the traceback instead. Exit codes: 0 done (some items may have failed: the
summary says which and why), 1 every item failed (or any did, with --strict), 2 nothing was done.
"""


class UsageError(RuntimeError):
    """Bad input on the command line (missing input, unwritable output, ...): one line, exit non-zero."""


# Exit codes: what a script needs to know about a run.
EXIT_ITEMS_FAILED = 1  # the stage ran; every item failed (or, with --strict, some did)
EXIT_REFUSED = 2  # nothing was done: fix what the one-line message names
EXIT_INTERRUPTED = 130


class _VersionAction(argparse.Action):
    """--version: computed when asked for (it reads a few packages' metadata), then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object):
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from pipelines.versions import version_lines

        print("\n".join(version_lines()))
        parser.exit()


def _debug_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="print the traceback of a failure instead of one line (also: REELFORGE_DEBUG=1)",
    )


def _verbose_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="also print Ray's log lines, warnings and progress output (default: they go to Ray's log "
        "files, and one line says where; also: REELFORGE_VERBOSE=1)",
    )


def _strict_option(parser: argparse.ArgumentParser, unit: str) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit non-zero when any {unit} fails (default: only when every one does)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
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
    _debug_option(parser, argparse.SUPPRESS)
    _verbose_option(parser, argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
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
    _debug_option(parser, False)
    _verbose_option(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p)
        return p

    p = sub.add_parser(
        "sample-footage",
        help="write the built-in sample footage and its ground truth",
        description="Write a deterministic set of short videos made from scikit-image's photographs "
        "(hard cuts, a dissolve, static/fast/blurred/dark/text shots, VP9 WebM, variable frame rate) "
        "with <file>.gt.json ground truth beside each. Takes a few seconds.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="folder to write the videos into (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of the camera shake (default 0)")
    _debug_option(p, argparse.SUPPRESS)

    p = add(
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

    p = add(
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
    _strict_option(p, "file")

    p = add(
        "score",
        "score clips: aesthetics, motion, technical quality, on-screen text, embedding, duplicates",
        "Add score columns to the clips table with a Ray Data job (model scorers as actors). "
        "Resumes: only clips lacking the columns are scored unless --recompute.",
    )
    p.add_argument("--recompute", action="store_true", help="score every clip again and replace the columns")
    _strict_option(p, "clip")

    p = add(
        "filter",
        "select clips with the config's filter expression (recorded with the dataset)",
        "Evaluate filter.expression over the score columns and store the selection as the `selected` "
        "column; clips are never deleted.",
    )
    p.add_argument("--expression", default=None, help="use this expression instead of filter.expression")

    p = add(
        "caption",
        "caption the selected clips with a vision-language model (vLLM)",
        "Caption clips with the engine in caption.engine (vllm in-process or an OpenAI-compatible "
        "server). Only clips lacking a caption are captioned unless --recaption.",
    )
    p.add_argument("--recaption", action="store_true", help="caption every clip again")
    _strict_option(p, "clip")

    p = add(
        "encode",
        "precompute VAE latents and text embeddings into Lance columns",
        "Encode the selected, captioned clips into latents and their captions into text embeddings, so "
        "training does not decode video on every epoch. Resumes: clips already encoded are skipped.",
    )
    p.add_argument("--overwrite", action="store_true", help="encode every clip again and replace the columns")
    _strict_option(p, "clip")

    p = add(
        "train-vae",
        "train the causal 3D video autoencoder on the clips",
        "Train the video compression network into train.vae_train.out_dir; skipped when "
        "train.vae.weights_path already holds weights (unless --fresh).",
    )
    p.add_argument("--fresh", action="store_true", help="train even if weights exist")

    p = add(
        "train",
        "train the DiT on the clips table (latents from encode when present)",
        "Train on the clips selected by train.data.filter; resumes exactly from the last checkpoint in "
        "train.out_dir. For DDP: torchrun -m pipelines.jobs.train (see the README).",
    )
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    p.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        metavar="N",
        help="train with N Ray Train workers (DDP over the Ray cluster) instead of in this process",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each Ray Train worker asks for (with --ray-workers); 0 trains on the workers' CPUs",
    )

    p = add(
        "sample",
        "generate videos from prompts with a trained checkpoint (MP4 + GIF)",
        "Sample videos for prompts with the Euler sampler and classifier-free guidance.",
    )
    p.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeatable; default: sample.prompts)"
    )

    p = add(
        "report",
        "write the HTML report of the dataset (or --scores for a text summary)",
        "Counts per stage, score histograms with filter thresholds, thumbnails, captions, duplicates "
        "and the configs used.",
    )
    p.add_argument(
        "--scores", action="store_true", help="print score percentiles and what each filter rule removes"
    )
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default: report.out)")

    p = add(
        "plan",
        "resolve every stage's Ray resources on the cluster; refuse what could never be scheduled",
        "Resolve each stage's CPUs, GPUs, memory, concurrency, batch sizes, actor counts and vLLM "
        "replicas x tensor-parallel size against the connected Ray cluster (ray.address, or a local Ray) "
        "or a spec file (`nodes:` a list of {count, cpus, gpus, memory_gb}; `shared_paths:` the folders "
        "every node mounts), print a table per stage and refuse, with the reason, anything that could "
        "never be scheduled. Every job runs the same check when it starts.",
    )
    p.add_argument("--cluster", type=Path, default=None, metavar="SPEC.yaml", help="plan for this spec file")

    p = add(
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
    _strict_option(p, "video")

    p = add(
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
    _strict_option(p, "clip")

    p = add(
        "status",
        "what the store holds, what each stage did, what is stale and the next command",
        "Videos (ok, failed by reason), clips and hours of footage; for every stage the columns it "
        "added, how many clips have them, when, with which config and models (placeholders marked); "
        "what is stale (clips that arrived after a stage ran, captions made before the filter changed, "
        "latents from another autoencoder); and the next command to run. Reads only.",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")

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
        _common(action)
        if name == "stats":
            action.add_argument("--json", action="store_true", help="print the stats as JSON")

    _ray_parser(sub)

    p = add(
        "demo",
        "run every stage end to end on the built-in sample footage (or INPUT)",
        "Generate the sample footage (unless inputs are given) and run split, score, filter, caption, "
        "encode, train, sample and report, printing the time of each stage and where data landed.",
    )
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="your own footage instead of the sample footage"
    )
    return parser


def _config(args: argparse.Namespace) -> PipelineConfig:
    overrides = list(args.overrides)
    if args.root is not None:
        overrides.append(f"store.root={args.root}")
    return load_config(args.config, overrides)


def _sample_footage(args: argparse.Namespace) -> int:
    from pipelines.sample_footage import write_sample_footage

    for path in write_sample_footage(args.out, seed=args.seed):
        print(path)
    return 0


def _inputs(cfg: PipelineConfig, args: argparse.Namespace) -> list[str]:
    from pipelines.jobs.split import InputError, resolve_inputs

    try:
        return resolve_inputs(list(args.inputs) or list(cfg.input.paths), cfg.input)
    except InputError as err:
        raise UsageError(str(err)) from None


def _probe(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from curate.probe import probe_file

    results = [probe_file(path, cfg.split.probe).as_row() for path in _inputs(cfg, args)]
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


def _split(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.split import run_scenes_only, run_split

    inputs = _inputs(cfg, args)
    if not args.scenes_only:
        _writable_root(cfg)
    if args.scenes_only:
        if args.json is None:
            raise UsageError("--scenes-only writes nothing to the store: give --json OUT.json")
        entries = run_scenes_only(cfg, args.json, paths=inputs)
        print(f"split: boundaries of {len(entries)} file(s) written to {args.json}")
        return 0
    with _job(cfg, "split", creates=True):
        summary = run_split(cfg, paths=inputs)
        print("\n".join(summary.lines()))
        if args.json:
            dump_json(run_scenes_json(cfg), args.json)
    _compact_after(cfg)
    return _outcome("split", summary.ok + summary.failed, summary.failed, args, "files")


def run_scenes_json(cfg: PipelineConfig) -> list[dict[str, object]]:
    """The boundaries recorded in the videos table, in the --scenes-only JSON layout."""
    rows = store_of(cfg).read("videos", ["uri", "status", "error", "boundaries"]).to_pylist()
    return [
        {"path": r["uri"], "status": r["status"], "error": r["error"], "boundaries": r["boundaries"]}
        for r in rows
    ]


def _outcome(command: str, attempted: int, failed: int, args: argparse.Namespace, unit: str) -> int:
    """The exit code of a stage run whose items may have failed (pipelines/outcome.py)."""
    from pipelines.outcome import exit_code, failure_line

    strict = getattr(args, "strict", False)  # the demo runs the handlers without the option
    code = exit_code(attempted, failed, strict=strict)
    if code:
        print(failure_line(command, attempted, failed, strict=strict, unit=unit), file=sys.stderr)
    return code


def _preflight(
    command: str, cfg: PipelineConfig, filter_expression: str | None = None, *, train_workers: int = 1
) -> None:
    from pipelines.preflight import PreflightError, check

    try:
        check(command, cfg, filter_expression, train_workers=train_workers)
    except PreflightError as err:
        raise UsageError(str(err)) from None


def _score(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.score import run_score

    _preflight("score", cfg)
    with _job(cfg, "score"):
        summary = run_score(cfg, recompute=args.recompute)
    print("\n".join(summary.lines()))
    _compact_after(cfg)
    return _outcome("score", summary.scored, summary.failed, args, "clips")


def _filter(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.filter import run_filter
    from store.filters import FilterError

    _preflight("filter", cfg, args.expression)
    try:
        with _job(cfg, "filter"):
            print("\n".join(run_filter(cfg, args.expression).lines()))
    except FilterError as err:
        raise UsageError(str(err)) from None
    _compact_after(cfg)
    return 0


def _report(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    _preflight("report", cfg)
    # Only reads, but holds the job lock all the same: vacuum must not delete files it is reading.
    if args.scores:
        from pipelines.report.scores_text import render

        with _job(cfg, "report") as store:
            print(render(store))
        return 0
    from pipelines.jobs.report import run

    with _job(cfg, "report"):
        print(f"report: {run(cfg, out=args.out)}")
    return 0


def _caption(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.caption import caption_command
    from pipelines.jobs.caption_checks import CaptionJobError

    _preflight("caption", cfg)
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
            with _job(cfg, "caption"):
                result = caption_command(cfg, argv, recaption=args.recaption)
        except CaptionJobError as err:
            raise UsageError(str(err)) from None
    _compact_after(cfg)
    if isinstance(result, int):  # the exit code of the same command run in the vLLM environment
        return result
    return _outcome("caption", result.attempted, result.failed, args, "clips")


def _encode(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.encode import run_encode

    _preflight("encode", cfg)
    with _job(cfg, "encode"):
        summary = run_encode(cfg, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    _compact_after(cfg)
    return _outcome("encode", summary.encoded, summary.failed, args, "clips")


def _train_vae(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.train import run_train_vae
    from train.vae import WEIGHTS_FILE

    weights = cfg.train.vae.weights_path
    if weights and (Path(weights) / WEIGHTS_FILE).is_file() and not args.fresh:
        print(f"train-vae: weights already in {weights} (use --fresh to train again)")
        return 0
    _preflight("train-vae", cfg)
    with _job(cfg, "train-vae"):
        result = run_train_vae(cfg)
    print(f"train-vae: {json.dumps(result, default=str)}")
    return 0


def _train(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.train import run_train, run_train_ray

    if args.ray_workers < 0:
        raise UsageError(f"--ray-workers {args.ray_workers}: give at least 1 (or leave it out to train here)")
    gpus_per_worker = getattr(args, "gpus_per_worker", 0.0)  # the demo runs the handler without it
    if gpus_per_worker < 0 or (gpus_per_worker and not args.ray_workers):
        raise UsageError(f"--gpus-per-worker {gpus_per_worker:g}: give 0 or more, with --ray-workers N")
    _preflight("train", cfg, train_workers=max(1, args.ray_workers))
    if args.ray_workers:
        from pipelines.preflight import PreflightError, check_ray_workers
        from pipelines.runtime import init_ray

        init_ray(cfg.ray)
        try:
            check_ray_workers(args.ray_workers, gpus_per_worker)
        except PreflightError as err:
            raise UsageError(str(err)) from None
        with _job(cfg, "train"):
            result = run_train_ray(cfg, args.ray_workers, gpus_per_worker, fresh=args.fresh)
        print(f"train: Ray Train finished: {result.metrics}, checkpoint {result.checkpoint.path}")
        return 0
    with _job(cfg, "train"):
        summary = run_train(cfg, fresh=args.fresh)
    val = "n/a" if summary.val_loss is None else f"{summary.val_loss:.4f}"
    print(
        f"train: {summary.steps} steps on {summary.train_clips} clips ({summary.val_clips} held out), "
        f"loss {summary.final_loss:.4f}, validation loss {val}, checkpoint {summary.checkpoint}"
    )
    if summary.placeholder_inputs:
        print(f"  PLACEHOLDER inputs (random-weight models): {_placeholder_list(summary.placeholder_inputs)}")
    return 0


def _placeholder_list(marks: dict[str, str]) -> str:
    return ", ".join(f"{column} from {source}" for column, source in sorted(marks.items()))


def _sample(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.jobs.train import run_sample

    _preflight("sample", cfg)
    results = run_sample(cfg, args.prompt)
    for result in results:
        print(f"sample: {result.prompt!r} -> {result.mp4} and {result.gif} ({result.record.name})")
    if results and results[0].placeholder_inputs:
        print(
            "  PLACEHOLDER: the checkpoint learnt from random-weight output "
            f"({_placeholder_list(results[0].placeholder_inputs)})"
        )
    return 0


def _plan(cfg: PipelineConfig, args: argparse.Namespace) -> int:
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


def _eval(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    import itertools

    from curate.aesthetic import MissingWeightsError
    from pipelines.export import filter_problem
    from pipelines.jobs.eval import checkpoint_items, file_items, run_eval, store_items

    if not (args.inputs or args.checkpoint or args.store):
        raise UsageError(
            "nothing to evaluate: give INPUT (videos or a samples folder), --checkpoint DIR or --store"
        )
    if args.prompts is not None and args.checkpoint is None:
        raise UsageError("--prompts goes with --checkpoint DIR (the checkpoint that samples them)")
    sources = [file_items(_inputs(cfg, args))] if args.inputs else []
    with _job(cfg, "eval", creates=not args.store) as store:
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
    return _outcome("eval", len(summary.rows), summary.failed, args, "videos")


def _eval_prompts(cfg: PipelineConfig, prompts_file: Path | None) -> list[str]:
    if prompts_file is None:
        return list(cfg.eval.prompts or cfg.sample.prompts)
    if not prompts_file.is_file():
        raise UsageError(f"prompts file not found: {prompts_file}")
    prompts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"{prompts_file} holds no prompt (one a line)")
    return prompts


def _export(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.export import ExportError, export

    settings = cfg.export.model_copy(
        update={k: v for k, v in (("format", args.format), ("filter", args.filter)) if v is not None}
    )
    try:
        with _job(cfg, "export") as store:
            summary = export(store, args.out, settings, resume=args.resume, overwrite=args.overwrite)
    except ExportError as err:
        raise UsageError(str(err)) from None
    print("\n".join(summary.lines()))
    return _outcome("export", summary.attempted, summary.failed, args, "clips")


def _status(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.status import format_status, store_status

    given = [
        *(["--config", args.config] if args.config else []),
        *(["--root", args.root] if args.root else []),
    ]
    found = store_status(cfg, command_options=given)
    print(json.dumps(found, indent=2, default=str) if args.json else format_status(found))
    return 0


def _store(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    store = store_of(cfg)
    if args.action == "stats":
        with _job(cfg, "store stats"):
            found = stats(store)
        print(json.dumps(found, indent=2) if args.json else format_stats(found))
        return 0
    summary = compact(store, cfg.store) if args.action == "compact" else vacuum(store, cfg.store)
    print("\n".join(summary.lines()))
    return 0


def _ray_parser(sub: argparse._SubParsersAction) -> None:
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
        _common(actions.add_parser(name, help=help, description=help))


def _ray(cfg: PipelineConfig, args: argparse.Namespace) -> int:
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


def _demo(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    if args.inputs:
        _inputs(cfg, args)  # a missing input is refused before the first stage prints anything

    return run_demo(cfg, list(args.inputs), HANDLERS)


# Commands whose jobs may run on Ray: they join the project's running Ray (`reelforge ray start`), if any.
RAY_COMMANDS = frozenset({"split", "score", "caption", "encode", "train", "demo"})

HANDLERS: dict[str, Callable[[PipelineConfig, argparse.Namespace], int]] = {
    "probe": _probe,
    "split": _split,
    "score": _score,
    "filter": _filter,
    "caption": _caption,
    "encode": _encode,
    "train-vae": _train_vae,
    "train": _train,
    "sample": _sample,
    "report": _report,
    "plan": _plan,
    "eval": _eval,
    "export": _export,
    "status": _status,
    "store": _store,
    "ray": _ray,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command if args.command not in ("store", "ray") else f"{args.command} {args.action}"
    debug = getattr(args, "debug", False) or os.environ.get("REELFORGE_DEBUG", "") not in ("", "0")
    if getattr(args, "verbose", False):
        from pipelines.runtime import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # read where Ray starts, also by the commands this one runs
    try:
        if args.command == "sample-footage":
            return _sample_footage(args)
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


def dump_json(data: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def store_of(cfg: PipelineConfig) -> Store:
    return Store(cfg.store.root)


@contextmanager
def _job(cfg: PipelineConfig, name: str, *, creates: bool = False) -> Iterator[Store]:
    """Hold the store's job lock while a stage runs, so that maintenance never rewrites or deletes files
    under it. The store is checked first (another schema version; no clips table unless the stage
    creates the store), so a refused run leaves the folder as it was."""
    store = store_of(cfg)
    for table in (CLIPS, VIDEOS):
        store.dataset(table)
    if creates:
        store.root.mkdir(parents=True, exist_ok=True)
    else:
        store.require(CLIPS)
    with job_lock(store.root, name):
        yield store


def _compact_after(cfg: PipelineConfig) -> None:
    """A stage that wrote the store compacts it once it has more small fragments than the configured
    bound. Called after the job lock is released: compaction needs the store to itself, and is skipped
    with a note while another job holds it."""
    summary = maybe_compact(store_of(cfg), cfg.store)
    if summary is not None:
        print("\n".join(summary.lines()))


if __name__ == "__main__":
    sys.exit(main())

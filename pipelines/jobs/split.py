"""`reelforge split`: input files -> `videos` and `clips` Lance tables, as a Ray Data job.

One row per input file; a per-file task (resources from `split.num_cpus` / `split.concurrency`; its
code in pipelines/jobs/split_worker.py) probes, detects and extracts, and writes that file's clips as
Lance fragments on the worker, flushing every `_FRAGMENT_BYTES` of clip data so a long video never sits
in memory. The driver streams the results and commits every `split.commit_every` files: their clips
first, then their video rows (the store's exactly-once protocol). A killed job keeps every committed
file; the next run removes orphan clips and skips files whose video_id already has a row.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from curate.split_config import SplitConfig
from pipelines.config import InputConfig, PipelineConfig
from pipelines.plan import start_job
from pipelines.runtime import WorkerPrestart, init_ray, task_pool
from store import CLIPS, VIDEOS, VIDEOS_SCHEMA, Store

# What a split task imports (and the worker prestarted for the first file): the worker side only.
WORKER_MODULE = "pipelines.jobs.split_worker"
# How long the driver waits for that worker before handing out the files anyway.
PRESTART_WAIT_S = 60.0


class InputError(ValueError):
    """The input names nothing that can be read (one line, for the CLI)."""


# ---- inputs ------------------------------------------------------------------------------------------


def resolve_inputs(paths: Sequence[str], cfg: InputConfig) -> list[str]:
    """Folders (recursive, by extension), glob patterns and list files (one path per line) -> paths.

    Files named directly or in a list are kept whatever their extension or state (a missing file
    becomes an error row); folders and globs contribute files with a video extension.
    """
    if not paths:
        raise InputError("no input given: pass a folder, a glob pattern or a list file")
    found: list[str] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found += [str(p) for p in sorted(path.rglob("*")) if _is_video_name(p, cfg) and not p.is_dir()]
        elif glob.has_magic(entry):
            found += [p for p in sorted(glob.glob(entry, recursive=True)) if _is_video_name(Path(p), cfg)]
        elif path.suffix.lower() in (".txt", ".list", ".lst") and path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            base = path.parent
            found += [
                str(Path(line) if Path(line).is_absolute() else base / line)
                for line in lines
                if line and not line.startswith("#")
            ]
        elif path.exists() or path.is_symlink():
            found.append(str(path))
        else:
            raise InputError(f"input not found: {entry}")
    unique = list(dict.fromkeys(os.path.abspath(p) for p in found))
    if not unique:
        raise InputError(f"no video files under {', '.join(paths)} (extensions: {' '.join(cfg.extensions)})")
    return unique


def _resolve(config: PipelineConfig, inputs: Sequence[str] | None) -> list[str]:
    return resolve_inputs(list(inputs) if inputs else list(config.input.paths), config.input)


def _is_video_name(path: Path, cfg: InputConfig) -> bool:
    return path.suffix.lower() in cfg.extensions


# ---- the driver ------------------------------------------------------------------------------------------


@dataclass
class SplitSummary:
    """Counts of one split run, printed at its end."""

    files: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    partial: int = 0
    clips: int = 0
    footage_s: float = 0.0
    orphans_removed: int = 0
    duplicates: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    files_per_node: Counter = field(default_factory=Counter)
    wall_s: float = 0.0

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
        out = [
            f"split: {self.files} files ({self.skipped} already done), {self.ok} ok "
            f"({self.partial} partial), {self.failed} failed; {self.clips} clips from "
            f"{self.footage_s / 3600:.3f} h of footage in {self.wall_s:.1f} s "
            f"on {len(self.files_per_node)} node(s)",
        ]
        if self.orphans_removed:
            out.append(f"  removed clips of {self.orphans_removed} file(s) left by an interrupted run")
        out.extend(f"  {count:5d} x {reason}" for reason, count in self.reasons.most_common())
        out.extend(f"  duplicate content, not stored again: {dup}" for dup in self.duplicates)
        return out

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


def _file_dataset(paths: Sequence[str]) -> Any:
    """One block per file, largest first: a long file then starts early instead of running alone
    at the end while the other workers idle (results are committed in completion order anyway)."""
    import ray

    by_size = sorted(paths, key=_size_or_zero, reverse=True)
    return ray.data.from_items([{"path": p} for p in by_size], override_num_blocks=max(1, len(paths)))


def _size_or_zero(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # missing or unreadable: split_one turns it into an error row
        return 0


def _await_worker(prestarted: Any) -> None:
    """Wait (at most PRESTART_WAIT_S) for the worker prestarted for the first file: handed out before
    it is idle, the first file goes to another worker, which then imports the same modules at the same
    time, each slowing the other on a small machine (first work 2.35 s instead of 2.14 s here, median of
    5 on 2 cores, and up to 4.2 s)."""
    import ray

    ray.wait([prestarted], timeout=PRESTART_WAIT_S)


def _ray_options(cfg: SplitConfig, files: int) -> dict[str, Any]:
    return {"num_cpus": cfg.num_cpus, "compute": task_pool(cfg.concurrency, files)}  # a block per file


def run_split(
    config: PipelineConfig,
    inputs: Sequence[str] | None = None,
    *,
    paths: Sequence[str] | None = None,
    progress: bool = True,
) -> SplitSummary:
    """Split every input file into the store; resumable, exactly once.

    `inputs` are resolved with `resolve_inputs` (default: input.paths of the config); `paths` are
    files already resolved (a listed file that is missing stays in and becomes an error row).
    """
    import ray

    started = time.monotonic()
    paths = list(paths) if paths is not None else _resolve(config, inputs)
    # Ray first: a worker for the first file starts (WORKER_MODULE imported) while the store is prepared.
    prestarted = start_job(config, "split", WorkerPrestart((WORKER_MODULE,), config.split.num_cpus))
    from pipelines.jobs.split_worker import pipeline_version, split_one  # PyAV, OpenCV: after Ray is up

    store = Store(config.store.root)
    store.root.mkdir(parents=True, exist_ok=True)
    store.create(VIDEOS)
    store.create(CLIPS)
    summary = SplitSummary(files=len(paths))
    summary.orphans_removed = store.remove_orphan_clips()
    done = frozenset(store.done_video_ids())
    cfg = config.split
    clips_uri = store.clips_uri

    def task(row: dict[str, Any]) -> dict[str, Any]:
        result = split_one(row["path"], cfg, clips_uri, done)
        # Where the file ran: the summary counts files per node (how well a cluster was used).
        result["node_id"] = ray.get_runtime_context().get_node_id()
        return result

    results = _file_dataset(paths).map(task, **_ray_options(cfg, len(paths)))
    _await_worker(prestarted)
    committed: set[str] = set(done)
    batch: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), desc="split", unit="file", disable=not progress)
    for result in results.iter_rows():
        bar.update(1)
        summary.files_per_node[result["node_id"]] += 1
        if result["skipped"]:
            summary.skipped += 1
            continue
        if result["video_id"] in committed:
            summary.duplicates.append(result["path"])
            continue
        committed.add(result["video_id"])
        batch.append(result)
        if len(batch) >= cfg.commit_every:
            _commit(store, batch, summary)
            batch = []
    bar.close()
    _commit(store, batch, summary)
    store.record(VIDEOS, "split", {"config": cfg.model_dump(mode="json"), "version": pipeline_version()})
    summary.wall_s = time.monotonic() - started
    return summary


def _commit(store: Store, batch: list[dict[str, Any]], summary: SplitSummary) -> None:
    """Clips first, then the video rows (journalled in between): a video row means all its clips are in."""
    if not batch:
        return
    from curate.probe import reason_of  # not at the top: PyAV and OpenCV, which the CLI needs no sooner

    rows = [json.loads(r["row"]) for r in batch]
    for row in rows:
        row["processed_at"] = dt.datetime.fromisoformat(row["processed_at"])
    store.commit_split(
        [f for r in batch for f in r["fragments"]], pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)
    )
    for row in rows:
        summary.clips += row["num_clips"]
        summary.footage_s += row["duration_s"] or 0.0
        if row["status"] == "ok":
            summary.ok += 1
            summary.partial += bool(row["error"])
        else:
            summary.failed += 1
        for part in filter(None, (row["error"] or "").split(" | ")):
            summary.reasons[reason_of(part)] += 1


def run_scenes_only(
    config: PipelineConfig,
    out_json: Path,
    inputs: Sequence[str] | None = None,
    *,
    paths: Sequence[str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Detect boundaries only and write them as JSON: [{path, status, error, fps, boundaries}]."""

    paths = list(paths) if paths is not None else _resolve(config, inputs)
    prestarted = init_ray(config.ray, WorkerPrestart((WORKER_MODULE,), config.split.num_cpus))
    from pipelines.jobs.split_worker import scan_one

    cfg = config.split
    entries = []
    bar = tqdm(total=len(paths), desc="scenes", unit="file", disable=not progress)
    results = _file_dataset(paths).map(
        lambda row: scan_one(row["path"], cfg), **_ray_options(cfg, len(paths))
    )
    _await_worker(prestarted)
    for result in results.iter_rows():
        entries.append(json.loads(result["entry"]))
        bar.update(1)
    bar.close()
    order = {p: i for i, p in enumerate(paths)}
    entries.sort(key=lambda e: order[e["path"]])
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(entries, indent=1) + "\n")
    return entries

"""Table maintenance: compaction, index upkeep and vacuum.

Why a store needs it: split writes one small fragment per input file, every column stage adds Lance
versions, and a replaced column keeps its files for the older versions. So a store accumulates many tiny
fragments (every scan and lookup pays per fragment) and files only old versions read.

- `compact`: merges small fragments into ones of `store.target_rows_per_fragment` rows (one Lance commit;
  the tables have stable row ids, so every `_rowid` that work lists and staging datasets carry stays
  valid), then brings the scalar indices up to date. Jobs call `maybe_compact` when they end.
- `vacuum`: removes the versions outside the retention and the files only they reference: it keeps the
  latest `store.keep_versions` versions, every version younger than `store.keep_days`, and every tagged
  version (tag what you want to keep for good: `lance.dataset(uri).tags.create(name, version)`). It also
  removes files of writes that never committed, and staging datasets whose stage has been merged.

`store.stats` reports what the tables hold (and what compaction and vacuum would find); the lock that
keeps maintenance off running jobs is `store.locks`: compaction and vacuum take `maintenance_lock` and
refuse at once while a job holds the store.

Kill safety: compaction and cleanup change a table by one atomic Lance commit or by deleting files no
kept version references, so a kill at any moment leaves the latest committed version readable; the
files of a killed compaction are unreferenced and the next vacuum removes them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lance

from store.config import StoreConfig
from store.contract import CLIPS, VIDEOS
from store.errors import StoreError
from store.lance_store import Store
from store.locks import StoreBusy, maintenance_lock

TABLES: Final = (CLIPS, VIDEOS)
INDEXED: Final = {CLIPS: ("clip_id", "video_id"), VIDEOS: ("video_id",)}  # BTREE scalar indices
_STAGE_KEY_PREFIX: Final = "reelforge.stage."


# ---- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableCompaction:
    """What compaction did to one table."""

    table: str
    rows: int
    fragments_before: int
    fragments_after: int
    version_before: int
    version_after: int
    indices: tuple[str, ...]  # indices created or extended to new fragments

    def line(self) -> str:
        """The compaction as one line."""
        changed = f"version {self.version_before} -> {self.version_after}"
        if self.version_after == self.version_before:
            changed = f"unchanged at version {self.version_after}"
        index = f"; indices: {', '.join(self.indices)}" if self.indices else ""
        return (
            f"{self.table}: {self.rows} rows, fragments {self.fragments_before} -> {self.fragments_after}, "
            f"{changed}{index}"
        )


@dataclass(frozen=True)
class CompactSummary:
    """What `store compact` did."""

    tables: tuple[TableCompaction, ...] = ()
    skipped: str = ""  # why nothing was compacted: another process holds the store

    def lines(self) -> list[str]:
        """The summary as the lines printed."""
        if self.skipped:
            return [f"compact: skipped, {self.skipped}"]
        return [f"compact: {t.line()}" for t in self.tables]


@dataclass(frozen=True)
class TableVacuum:
    """What vacuum did to one table."""

    table: str
    versions_before: int
    kept: tuple[int, ...]  # the versions left
    tags: tuple[str, ...]
    files_removed: int
    bytes_removed: int

    def line(self) -> str:
        """The vacuum as one line."""
        tags = f", tags {', '.join(self.tags)}" if self.tags else ""
        return (
            f"{self.table}: versions {self.versions_before} -> {len(self.kept)} "
            f"(kept {_ranges(self.kept)}{tags}), {self.files_removed} files / "
            f"{human_bytes(self.bytes_removed)} removed"
        )


@dataclass(frozen=True)
class VacuumSummary:
    """What `store vacuum` did."""

    tables: tuple[TableVacuum, ...]
    staging_removed: tuple[str, ...]  # stages whose merged staging dataset was removed
    staging_kept: tuple[str, ...]  # stages with staged rows not merged yet: a resumed run needs them

    def lines(self) -> list[str]:
        """The summary as the lines printed."""
        lines = [f"vacuum: {t.line()}" for t in self.tables]
        if self.staging_removed:
            lines.append(f"vacuum: removed the merged staging of {', '.join(self.staging_removed)}")
        if self.staging_kept:
            lines.append(
                f"vacuum: kept the staging of {', '.join(self.staging_kept)} (not merged yet: a re-run resumes)"
            )
        return lines


# ---- indices ----------------------------------------------------------------------------------------
def ensure_indices(store: Store) -> list[str]:
    """BTREE indices on clips.clip_id, clips.video_id and videos.video_id: created when missing and
    extended to fragments appended since. Commits nothing when nothing changed (~40 ms at 10^3 fragments).
    Returns what it did, e.g. ["clips.clip_id_idx created"]."""
    done: list[str] = []
    for table in TABLES:
        ds = store.dataset(table)
        if ds is not None:
            done += _ensure_table_indices(ds, table)
    return done


def _ensure_table_indices(ds: lance.LanceDataset, table: str) -> list[str]:
    existing = {d.field_names[0]: d for d in ds.describe_indices() if len(d.field_names) == 1}
    fragments = {f.fragment_id for f in ds.get_fragments()}
    done: list[str] = []
    for column in INDEXED[table]:
        index = existing.get(column)
        if index is None:
            ds.create_scalar_index(column, "BTREE", name=f"{column}_idx")
            done.append(f"{table}.{column}_idx created")
        elif fragments - indexed_fragments(index):
            ds.optimize.optimize_indices(index_names=[index.name])
            done.append(f"{table}.{index.name} extended")
    return done


def indexed_fragments(index: Any) -> set[int]:
    """The ids of the fragments an index (a `describe_indices` entry) covers."""
    return {int(i) for segment in index.segments for i in segment.fragment_ids}


# ---- compaction -------------------------------------------------------------------------------------
def compact(store: Store, cfg: StoreConfig) -> CompactSummary:
    """Merge the small fragments of both tables and update their indices (refuses while a job runs)."""
    require_tables(store)
    with maintenance_lock(store.root, "compact"):
        return CompactSummary(tuple(_compact_table(store, t, cfg) for t in TABLES))


def maybe_compact(store: Store, cfg: StoreConfig) -> CompactSummary | None:
    """What a job calls when it ends, after leaving its job lock: compacts the tables with more than
    `cfg.compact_fragment_bound` fragments below the target size. None when nothing was due; a summary
    that says it was skipped when another process holds the store (the next job or `store compact` will
    do it)."""
    if cfg.compact_fragment_bound == 0:
        return None
    due = [t for t in TABLES if _small_fragments(store.dataset(t), cfg) > cfg.compact_fragment_bound]
    if not due:
        return None
    try:
        with maintenance_lock(store.root, "compact"):
            return CompactSummary(tuple(_compact_table(store, t, cfg) for t in due))
    except StoreBusy as busy:
        parent = os.getppid()
        if busy.holders and all(h.pid == parent and h.host == socket.gethostname() for h in busy.holders):
            return None  # run by a job that holds the store (caption in the vLLM environment): it compacts
        return CompactSummary(skipped=str(busy))


def _small_fragments(ds: lance.LanceDataset | None, cfg: StoreConfig) -> int:
    if ds is None:
        return 0
    return sum(1 for f in ds.get_fragments() if f.metadata.physical_rows < cfg.target_rows_per_fragment)


def _compact_table(store: Store, table: str, cfg: StoreConfig) -> TableCompaction:
    ds = store.require(table)
    if not ds.has_stable_row_ids:
        raise StoreError(
            f"{store.uri(table)} has no stable row ids, so compaction would renumber the rows that staged "
            "work refers to: write the store again with this reelforge"
        )
    fragments_before, version_before = len(ds.get_fragments()), ds.version
    # Lance plans the work: only runs of adjacent small fragments (and ones with many deleted rows) are
    # rewritten, and nothing is committed when there are none.
    ds.optimize.compact_files(target_rows_per_fragment=cfg.target_rows_per_fragment)
    indices = _ensure_table_indices(store.require(table), table)
    ds = store.require(table)
    return TableCompaction(
        table,
        ds.count_rows(),
        fragments_before,
        len(ds.get_fragments()),
        version_before,
        ds.version,
        tuple(indices),
    )


# ---- vacuum -----------------------------------------------------------------------------------------
def vacuum(store: Store, cfg: StoreConfig) -> VacuumSummary:
    """Remove old versions (outside the retention; tagged ones stay), files no kept version references,
    and merged staging datasets (refuses while a job runs)."""
    require_tables(store)
    with maintenance_lock(store.root, "vacuum"):
        tables = tuple(_vacuum_table(store, t, cfg) for t in TABLES)
        removed, kept = _clear_staging(store)
    return VacuumSummary(tables, tuple(removed), tuple(kept))


def _vacuum_table(store: Store, table: str, cfg: StoreConfig) -> TableVacuum:
    ds = store.require(table)
    before = len(ds.versions())
    removed = ds.cleanup_old_versions(
        older_than=dt.timedelta(days=cfg.keep_days),
        retain_versions=cfg.keep_versions,
        # Files of writes that never committed (a killed job's fragments) count as "unverified" and would
        # otherwise stay for 7 days. Deleting them is safe only because no job runs: we hold the store.
        delete_unverified=True,
        error_if_tagged_old_versions=False,  # tagged versions are kept, silently
    )
    ds = store.require(table)
    files = (
        removed.data_files_removed
        + removed.transaction_files_removed
        + removed.index_files_removed
        + removed.deletion_files_removed
    )
    return TableVacuum(
        table,
        before,
        tuple(v["version"] for v in ds.versions()),
        tuple(sorted(ds.tags.list())),
        files,
        removed.bytes_removed,
    )


def _clear_staging(store: Store) -> tuple[list[str], list[str]]:
    """Remove `staging/<stage>.lance` datasets whose rows are all merged into clips; keep the others.

    Merged means: the stage's record in the clips metadata is at least as new as the staging's last
    commit. Jobs remove their staging right after merging, so a merged staging is left only by a job
    killed between the two steps; an unmerged one is the progress a re-run resumes from, never garbage.
    (Age alone cannot tell them apart: a stage killed a week ago still resumes from its staging.)"""
    folder = store.root / "staging"
    if not folder.is_dir():
        return [], []
    for leftover in folder.glob(".*.removing"):  # a vacuum killed while removing
        shutil.rmtree(leftover, ignore_errors=True)
    records = stage_records_of(store.require(CLIPS))
    removed, kept = [], []
    for path in sorted(folder.glob("*.lance")):
        stage = path.name.removesuffix(".lance")
        if staging_merged(path, records.get(stage)):
            trash = path.with_name(f".{path.name}.removing")
            os.replace(path, trash)  # one rename: a kill never leaves a half-removed staging in place
            shutil.rmtree(trash)
            removed.append(stage)
        else:
            kept.append(stage)
    return removed, kept


def staging_merged(path: Path, record: dict[str, Any] | None) -> bool:
    """Are the rows of the staging dataset at `path` all merged into clips (`record`: its stage's record)?"""
    if not (path / "_versions").is_dir():
        return True  # never committed a batch: nothing to resume from
    if record is None or "at" not in record:
        return False
    stamp = lance.dataset(str(path)).get_version()["timestamp"]
    # lance gives a naive local datetime (typed as one or as epoch nanoseconds); .timestamp() reads it as local
    last_commit = stamp.timestamp() if isinstance(stamp, dt.datetime) else stamp / 1e9
    # The record's time is whole seconds, cut down: the merge started within the second after it.
    return last_commit < dt.datetime.fromisoformat(record["at"]).timestamp() + 1.0


def stage_records_of(ds: lance.LanceDataset) -> dict[str, dict[str, Any]]:
    """The stage records in a clips dataset's metadata (one that does not parse is left out)."""
    records: dict[str, dict[str, Any]] = {}
    for key, value in ds.metadata.items():
        if key.startswith(_STAGE_KEY_PREFIX):
            with contextlib.suppress(ValueError):
                records[key.removeprefix(_STAGE_KEY_PREFIX)] = json.loads(value)
    return records


def require_tables(store: Store) -> dict[str, lance.LanceDataset]:
    """Both tables, or a one-line StoreError (missing table, another schema version) before any work."""
    return {t: store.require(t) for t in TABLES}


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _ranges(versions: tuple[int, ...]) -> str:
    """(1, 2, 3, 7, 9, 10) -> "1-3, 7, 9-10"."""
    runs: list[list[int]] = []
    for v in sorted(versions):
        if runs and runs[-1][-1] == v - 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)

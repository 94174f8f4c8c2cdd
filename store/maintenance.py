"""Table maintenance: stats, compaction, index upkeep, vacuum, and the lock that keeps them off running jobs.

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
- `stats`: rows, fragments, versions, bytes per column and the indices of each table.

Locking: every stage job holds `job_lock` (shared: jobs run side by side) for its whole run, readers
included, since vacuum deletes files an older version reads. Maintenance takes `maintenance_lock`
(exclusive, never waits) and refuses at once while a job holds the store.

Kill safety: compaction and cleanup change a table by one atomic Lance commit or by deleting files no
kept version references, so a kill at any moment leaves the latest committed version readable; the
files of a killed compaction are unreferenced and the next vacuum removes them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import lance
import pyarrow.compute as pc
from lance.dataset import FieldStatistics

from store.config import StoreConfig
from store.lance_store import CLIPS, VIDEOS, Store, StoreError

TABLES: Final = (CLIPS, VIDEOS)
INDEXED: Final = {CLIPS: ("clip_id", "video_id"), VIDEOS: ("video_id",)}  # BTREE scalar indices
LOCK_DIR: Final = "_locks"  # in the store root: the lock file and one record per holder
_LOCK_FILE: Final = "store.lock"
_STAGE_KEY_PREFIX: Final = "reelforge.stage."
_EXTERNAL_BLOB: Final = 3  # blob v2 descriptor kind of a value stored outside the dataset


# ---- the lock ---------------------------------------------------------------------------------------
# fcntl.flock on one file in the store root: the kernel releases it when its holder exits or is killed,
# so a crashed job never leaves the store locked. Holders also leave a small JSON record beside it (name,
# pid, host) so that a refusal can say who holds the store; records of dead processes are ignored.
# On NFS, Linux emulates flock with POSIX byte-range locks, which the server arbitrates between clients
# (NFSv4, or v3 with lockd); mounts with `local_lock=flock` and some cluster filesystems (CephFS or Lustre
# without flock support) keep the lock per node, and then it only guards jobs on the same node.


@dataclass(frozen=True)
class _Holder:
    kind: str  # "job" | "maintenance"
    name: str
    pid: int
    host: str

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # a process on another node cannot be checked from here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
        return True

    def __str__(self) -> str:
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"{self.name}, pid {self.pid}{host}"


class _Busy(StoreError):
    """The exclusive lock is taken; `holders` are the live processes that hold the store."""

    def __init__(self, message: str, holders: list[_Holder]):
        super().__init__(message)
        self.holders = holders


def _open_lock(root: Path) -> int:
    if not root.is_dir():
        raise StoreError(f"no store at {root}: run `reelforge split` first")
    path = root / LOCK_DIR / _LOCK_FILE
    try:
        path.parent.mkdir(exist_ok=True)
        # O_CLOEXEC: a subprocess (the caption command re-run in the vLLM environment) must not inherit
        # the lock, or it would outlive this process
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        pass
    try:  # a store this user may only read: flock needs no write access
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise StoreError(f"cannot lock the store {root}: {err.strerror}") from None


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _register(root: Path, kind: str, name: str) -> Path | None:
    host, pid = socket.gethostname(), os.getpid()
    path = root / LOCK_DIR / f"{kind}.{host}.{pid}.{uuid.uuid4().hex[:8]}.json"
    try:
        path.write_text(json.dumps({"kind": kind, "name": name, "pid": pid, "host": host}))
    except OSError:  # a read-only store: the lock still holds, messages just cannot name this holder
        return None
    return path


def _records(root: Path) -> Iterator[tuple[Path, _Holder | None]]:
    for path in sorted((root / LOCK_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            yield path, _Holder(str(data["kind"]), str(data["name"]), int(data["pid"]), str(data["host"]))
        except (OSError, ValueError, KeyError, TypeError):
            yield path, None  # being written or removed right now, or not ours


def _holders(root: Path, kind: str | None = None) -> list[_Holder]:
    return [h for _, h in _records(root) if h is not None and h.alive() and kind in (None, h.kind)]


def _named(holders: list[_Holder]) -> str:
    return "; ".join(map(str, holders)) or "holder unknown"


@contextlib.contextmanager
def job_lock(root: str | Path, name: str) -> Iterator[None]:
    """Held by every stage job for its whole run (shared: several jobs may hold it at once).

    While maintenance holds the store, the job waits for it to finish, saying so on stderr."""
    root = Path(root)
    fd = _open_lock(root)
    try:
        if not _try_flock(fd, fcntl.LOCK_SH):
            holders = _named(_holders(root, "maintenance"))
            print(f"{name}: waiting for store maintenance ({holders}) on {root} to finish", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_SH)
        record = _register(root, "job", name)
        try:
            yield
        finally:
            if record is not None:  # before the lock goes: a record without a holder is never left
                record.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def maintenance_lock(root: str | Path, name: str = "maintenance") -> Iterator[None]:
    """Exclusive hold of the store for maintenance; raises StoreError at once if anyone holds it."""
    root = Path(root)
    fd = _open_lock(root)
    try:
        if not _try_flock(fd, fcntl.LOCK_EX):
            jobs, others = _holders(root, "job"), _holders(root, "maintenance")
            if others and not jobs:
                message = f"{root} is being maintained ({_named(others)}): run {name} when it has finished"
            else:
                message = f"{root} is in use by a running job ({_named(jobs)}): run maintenance when it has finished"
            raise _Busy(message, jobs or others)
        for path, _ in _records(root):  # nobody else holds the lock: these are left by killed processes
            path.unlink(missing_ok=True)
        record = _register(root, "maintenance", name)
        try:
            yield
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
    finally:
        os.close(fd)


# ---- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableCompaction:
    table: str
    rows: int
    fragments_before: int
    fragments_after: int
    version_before: int
    version_after: int
    indices: tuple[str, ...]  # indices created or extended to new fragments

    def line(self) -> str:
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
    tables: tuple[TableCompaction, ...] = ()
    skipped: str = ""  # why nothing was compacted: another process holds the store

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"compact: skipped, {self.skipped}"]
        return [f"compact: {t.line()}" for t in self.tables]


@dataclass(frozen=True)
class TableVacuum:
    table: str
    versions_before: int
    kept: tuple[int, ...]  # the versions left
    tags: tuple[str, ...]
    files_removed: int
    bytes_removed: int

    def line(self) -> str:
        tags = f", tags {', '.join(self.tags)}" if self.tags else ""
        return (
            f"{self.table}: versions {self.versions_before} -> {len(self.kept)} "
            f"(kept {_ranges(self.kept)}{tags}), {self.files_removed} files / "
            f"{_human(self.bytes_removed)} removed"
        )


@dataclass(frozen=True)
class VacuumSummary:
    tables: tuple[TableVacuum, ...]
    staging_removed: tuple[str, ...]  # stages whose merged staging dataset was removed
    staging_kept: tuple[str, ...]  # stages with staged rows not merged yet: a resumed run needs them

    def lines(self) -> list[str]:
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
        elif fragments - _covered(index):
            ds.optimize.optimize_indices(index_names=[index.name])
            done.append(f"{table}.{index.name} extended")
    return done


def _covered(index: Any) -> set[int]:
    return {int(i) for segment in index.segments for i in segment.fragment_ids}


# ---- compaction -------------------------------------------------------------------------------------
def compact(store: Store, cfg: StoreConfig) -> CompactSummary:
    """Merge the small fragments of both tables and update their indices (refuses while a job runs)."""
    _require_all(store)
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
    except _Busy as busy:
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
    _require_all(store)
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
    records = _stage_records(store.require(CLIPS))
    removed, kept = [], []
    for path in sorted(folder.glob("*.lance")):
        stage = path.name.removesuffix(".lance")
        if _merged(path, records.get(stage)):
            trash = path.with_name(f".{path.name}.removing")
            os.replace(path, trash)  # one rename: a kill never leaves a half-removed staging in place
            shutil.rmtree(trash)
            removed.append(stage)
        else:
            kept.append(stage)
    return removed, kept


def _merged(path: Path, record: dict[str, Any] | None) -> bool:
    if not (path / "_versions").is_dir():
        return True  # never committed a batch: nothing to resume from
    if record is None or "at" not in record:
        return False
    stamp = lance.dataset(str(path)).get_version()["timestamp"]
    # lance gives a naive local datetime (typed as one or as epoch nanoseconds); .timestamp() reads it as local
    last_commit = stamp.timestamp() if isinstance(stamp, dt.datetime) else stamp / 1e9
    # The record's time is whole seconds, cut down: the merge started within the second after it.
    return last_commit < dt.datetime.fromisoformat(record["at"]).timestamp() + 1.0


def _stage_records(ds: lance.LanceDataset) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for key, value in ds.metadata.items():
        if key.startswith(_STAGE_KEY_PREFIX):
            with contextlib.suppress(ValueError):
                records[key.removeprefix(_STAGE_KEY_PREFIX)] = json.loads(value)
    return records


# ---- stats ------------------------------------------------------------------------------------------
def stats(store: Store) -> dict[str, Any]:
    """Rows, fragments, versions, tags, bytes (per column, latest version, on disk) and indices of each
    table, and the staging datasets present."""
    datasets = _require_all(store)
    return {
        "root": str(store.root),
        "tables": {t: _table_stats(ds) for t, ds in datasets.items()},
        "staging": _staging_stats(store, datasets[CLIPS]),
    }


def _table_stats(ds: lance.LanceDataset) -> dict[str, Any]:
    fragments = ds.get_fragments()
    data_files = {d.path.removesuffix(".lance") for f in fragments for d in f.data_files()}
    latest = on_disk = 0
    for batch in ds.all_files():
        for path, size in zip(batch["path"].to_pylist(), batch["size_bytes"].to_pylist(), strict=True):
            on_disk += size
            parts = path.split("/")
            # a data file and its blob sidecars (data/<file>.lance, data/<file>/<n>.blob)
            if parts[0] == "data" and len(parts) > 1 and parts[1].removesuffix(".lance") in data_files:
                latest += size
    covered = {int(f.fragment_id) for f in fragments}
    return {
        "version": ds.version,
        "rows": ds.count_rows(),
        "deleted_rows": ds.stats.dataset_stats()["num_deleted_rows"],
        "fragments": len(fragments),
        "versions": len(ds.versions()),
        "tags": {name: tag["version"] for name, tag in sorted(ds.tags.list().items())},
        "bytes_latest": latest,
        "bytes_on_disk": on_disk,
        "columns": _column_bytes(ds),
        "indices": [
            {
                "name": d.name,
                "type": d.index_type,
                "columns": list(d.field_names),
                "rows_indexed": d.num_rows_indexed,
                "unindexed_fragments": len(covered - _covered(d)),
                "bytes": d.total_size_bytes,
            }
            for d in ds.describe_indices()
        ],
    }


def _column_bytes(ds: lance.LanceDataset) -> dict[str, int]:
    """Bytes per top-level column in the latest version. Lance's field statistics count the encoded
    column pages; a blob column's payloads (inline or in sidecar files) are not among them, so they are
    added from the blob descriptors."""
    # lance annotates `fields` as one FieldStatistics; it is a list of them
    fields = cast(list[FieldStatistics], ds.stats.data_stats().fields)
    per_field = {f.id: f.bytes_on_disk for f in fields}

    def total(field: Any) -> int:
        return per_field.get(field.id(), 0) + sum(total(child) for child in field.children())

    out = {f.name(): total(f) for f in ds.lance_schema.fields()}
    for name in out:
        if "blob" in str(ds.schema.field(name).type):
            descriptors = ds.to_table(columns=[name]).column(name)
            if len(descriptors):
                stored = pc.not_equal(pc.struct_field(descriptors, "kind"), _EXTERNAL_BLOB)
                out[name] += pc.sum(pc.filter(pc.struct_field(descriptors, "size"), stored)).as_py() or 0
    return out


def _staging_stats(store: Store, clips: lance.LanceDataset) -> dict[str, dict[str, Any]]:
    folder = store.root / "staging"
    records = _stage_records(clips)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.lance")) if folder.is_dir() else []:
        stage = path.name.removesuffix(".lance")
        committed = (path / "_versions").is_dir()
        out[stage] = {
            "rows": lance.dataset(str(path)).count_rows() if committed else 0,
            "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            "merged": _merged(path, records.get(stage)),
        }
    return out


def _require_all(store: Store) -> dict[str, lance.LanceDataset]:
    """Both tables, or a one-line StoreError (missing table, another schema version) before any work."""
    return {t: store.require(t) for t in TABLES}


def format_stats(s: dict[str, Any]) -> str:
    """`stats` as the text `reelforge store stats` prints."""
    lines = [f"store {s['root']}", ""]
    tables = s["tables"]
    lines += _table(
        ["table", "version", "rows", "fragments", "versions", "tags", "latest", "on disk"],
        [
            [
                name,
                t["version"],
                t["rows"],
                t["fragments"],
                t["versions"],
                ", ".join(f"{k}={v}" for k, v in t["tags"].items()) or "-",
                _human(t["bytes_latest"]),
                _human(t["bytes_on_disk"]),
            ]
            for name, t in tables.items()
        ],
    )
    for name, t in tables.items():
        lines += ["", f"{name}: bytes per column (latest version; blob payloads included)"]
        filled = {c: b for c, b in t["columns"].items() if b}
        lines += _table(["column", "bytes"], [[c, _human(b)] for c, b in filled.items()], indent=2)
        empty = [c for c in t["columns"] if c not in filled]
        if empty:  # all null (or not written yet): one line instead of a row each
            lines.append(f"  0 B: {', '.join(empty)}")
    rows = [
        [
            f"{name}.{i['name']}",
            i["type"],
            ",".join(i["columns"]),
            i["rows_indexed"],
            i["unindexed_fragments"],
            _human(i["bytes"]),
        ]
        for name, t in tables.items()
        for i in t["indices"]
    ]
    lines += ["", "indices"]
    lines += (
        _table(["index", "type", "column", "rows", "unindexed fragments", "bytes"], rows, indent=2)
        if rows
        else ["  none (`reelforge store compact` creates them)"]
    )
    staging = s["staging"]
    if staging:
        lines += ["", "staging"]
        lines += _table(
            ["stage", "rows", "bytes", "state"],
            [
                [
                    stage,
                    st["rows"],
                    _human(st["bytes"]),
                    "merged (vacuum removes it)" if st["merged"] else "not merged: a re-run resumes from it",
                ]
                for stage, st in staging.items()
            ],
            indent=2,
        )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]], indent: int = 0) -> list[str]:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    # numbers and sizes right-aligned, names and words left-aligned
    numeric = [bool(rows) and all(r[i][:1].isdigit() for r in cells[1:]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)]
        return " " * indent + "  ".join(parts).rstrip()

    return [fmt(r) for r in cells]


def _human(n: int) -> str:
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

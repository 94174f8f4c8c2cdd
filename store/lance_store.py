"""The Lance store: one project folder holding two versioned Lance datasets, `videos` and `clips`.

- `videos.lance`: one row per input file (ok or error, with the reason).
- `clips.lance`: one row per clip; the clip's encoded bytes live in the blob column `video`.
  Every stage after split ADDS columns here (Lance data evolution) and never rewrites the blobs.
The columns are declared in `store/contract.py`; the store refuses a column a stage did not declare.

Reads cost O(batch), not O(dataset): clips are created with stable row ids, a stage's work list
(`work_list`) carries each clip's `_rowid` and the dataset version it was listed at, and a batch
fetches its blobs and columns by those ids (`ClipReader`). Lookups by `clip_id` or `video_id` go
through scalar (BTREE) indices that `store.maintenance.ensure_indices` keeps current after commits.

Exactly-once protocol of the split stage: before committing a batch of files the driver journals
their video_ids (`staging/split_pending.json`), commits their clips, then their video rows, then clears
the journal. A video row therefore means "all its clips are in". A job killed in between leaves
journalled ids without a video row; `remove_orphan_clips` deletes their clips when the next run starts
(one indexed delete per file, never a scan of the table), and that run redoes the files.

Column stages (score, caption, encode, dedup, filter) go through `ColumnStaging`: each finished batch
is appended to a small staging dataset keyed by the clip's row id (appends are atomic and never
conflict), and `merge_into_clips` adds the stage's columns fragment by fragment, reading only the
staged rows of one clips fragment at a time (a BTREE range lookup on the staging table), then commits
one Lance Merge. Neither table is ever held whole in memory. A killed stage keeps every batch it
committed; a killed merge leaves the previous version and the staging, and the rerun merges again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lance.dataset import Version
from lance.fragment import FragmentMetadata, write_fragments

from store import contract
from store.contract import CLIPS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, VIDEOS

_STAGE_KEY_PREFIX = "reelforge.stage."
# A staging compacts its fragments beyond this many (see ColumnStaging.append) into fragments of up to
# _STAGING_FRAGMENT_ROWS rows; fragments already that large are left alone, so each row is rewritten
# a few times at most.
_STAGING_FRAGMENT_BOUND: Final = 64
_STAGING_FRAGMENT_ROWS: Final = 1 << 16
DATA_STORAGE_VERSION: Final = "2.2"  # Lance file format 2.2: blob columns are stored as blob v2
ROW_ID: Final = "_rowid"  # Lance's stable row id, as scans return it
STAGED_ROW_ID: Final = "clip_rowid"  # the same id as a plain column of a staging dataset
SCAN_BATCH_ROWS: Final = 65_536

VIDEOS_SCHEMA = contract.schema(VIDEOS)
CLIPS_SCHEMA = contract.schema(CLIPS)
_SCHEMAS = {VIDEOS: VIDEOS_SCHEMA, CLIPS: CLIPS_SCHEMA}


def utc_now() -> str:
    """When a stage ran, as every stage record and the report write it (UTC, whole seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class StoreError(RuntimeError):
    """A store that cannot be used as asked (other schema version, missing dataset, ...)."""


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast a table to `schema`; Ray blocks lose field metadata (the blob marker) without it."""
    return table.select(schema.names).cast(schema)


def write_fragment_json(uri: str | Path, table: pa.Table, schema: pa.Schema) -> list[str]:
    """Worker side: write `table` as new fragment files of `uri` (not yet visible) and return them as JSON."""
    if table.num_rows == 0:
        return []
    fragments = write_fragments(
        conform(table, schema),
        str(uri),
        schema=schema,
        mode="append",
        data_storage_version=DATA_STORAGE_VERSION,
    )
    return [json.dumps(f.to_json()) for f in fragments]


@dataclass(frozen=True)
class WorkList:
    """The clips a stage will work on: their row ids (and any listed columns) at one clips version."""

    version: int
    rows: pa.Table  # _rowid (uint64) + the listed columns

    def __len__(self) -> int:
        return self.rows.num_rows


class Store:
    """A project folder with the `videos` and `clips` datasets."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.videos_uri = str(self.root / "videos.lance")
        self.clips_uri = str(self.root / "clips.lance")

    def uri(self, table: str) -> str:
        return {VIDEOS: self.videos_uri, CLIPS: self.clips_uri}[table]

    # ---- opening -------------------------------------------------------------------------------
    def dataset(self, table: str, version: int | str | None = None) -> lance.LanceDataset | None:
        """The dataset, or None before its first commit; refuses another schema version."""
        uri = self.uri(table)
        if not _committed(uri):
            return None
        ds = lance.dataset(uri, version=version)
        found = (ds.schema.metadata or {}).get(SCHEMA_VERSION_KEY.encode(), b"?").decode()
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"{uri} has reelforge schema version {found}, this reelforge writes {SCHEMA_VERSION}: "
                "use a new store.root or migrate the dataset"
            )
        return ds

    def videos_dataset(self) -> lance.LanceDataset | None:
        return self.dataset(VIDEOS)

    def clips_dataset(self) -> lance.LanceDataset | None:
        return self.dataset(CLIPS)

    def require(self, table: str, version: int | None = None) -> lance.LanceDataset:
        ds = self.dataset(table, version)
        if ds is None:
            raise StoreError(f"no {table} table in {self.root}: run `reelforge split` first")
        return ds

    def create(self, table: str) -> lance.LanceDataset:
        """The dataset, created empty first if needed, so that every worker write is a plain append."""
        ds = self.dataset(table)
        if ds is None:
            schema = _SCHEMAS[table]
            lance.write_dataset(
                schema.empty_table(),
                self.uri(table),
                schema=schema,
                mode="create",
                data_storage_version=DATA_STORAGE_VERSION,
                enable_stable_row_ids=True,
            )
            ds = self.require(table)
        return ds

    # ---- writing rows --------------------------------------------------------------------------
    def commit_fragments(self, table: str, fragment_json: Iterable[str]) -> int | None:
        """Driver side: make fragments written by workers visible in one atomic commit."""
        fragments = [FragmentMetadata.from_json(j) for j in fragment_json]
        if not fragments:
            return None
        ds = self.create(table)
        new = lance.LanceDataset.commit(
            self.uri(table), lance.LanceOperation.Append(fragments), read_version=ds.version
        )
        return new.version

    def append(self, table: str, rows: pa.Table) -> int | None:
        """Append rows written from this process (one commit)."""
        return self.commit_fragments(table, write_fragment_json(self.uri(table), rows, _SCHEMAS[table]))

    def commit_split(self, clip_fragments: Sequence[str], video_rows: pa.Table) -> None:
        """Clips first, then the video rows, with the video_ids journalled around the two commits."""
        if video_rows.num_rows == 0:
            return
        self.journal_pending(video_rows.column("video_id").to_pylist())
        self.commit_fragments(CLIPS, clip_fragments)
        self.append(VIDEOS, video_rows)
        self._pending_path().unlink(missing_ok=True)
        self.index()

    def journal_pending(self, video_ids: Sequence[str]) -> None:
        """Record files whose clips are about to be committed (atomic replace of a small JSON file)."""
        path = self._pending_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(video_ids)))
        os.replace(tmp, path)

    def _pending_path(self) -> Path:
        return self.root / "staging" / "split_pending.json"

    def done_video_ids(self) -> set[str]:
        """video_ids with a row in `videos` (one row per input file: O(files), not O(clips))."""
        ds = self.videos_dataset()
        if ds is None:
            return set()
        return set(ds.to_table(columns=["video_id"]).column("video_id").to_pylist())

    def remove_orphan_clips(self) -> int:
        """Delete the clips of journalled files that never got their video row (a job killed between
        the two commits); returns how many files had orphans removed."""
        path = self._pending_path()
        if not path.exists():
            return 0
        clips = self.clips_dataset()
        pending = set(json.loads(path.read_text()))
        orphaned = sorted(pending - self.done_video_ids()) if clips is not None else []
        removed = 0
        for video_id in orphaned:
            assert clips is not None  # orphans are only looked for in an existing clips table
            where = f"video_id = {_quote(video_id)}"  # one indexed lookup per file
            if clips.count_rows(filter=where):
                clips.delete(where)
                removed += 1
        path.unlink()
        return removed

    def index(self) -> None:
        """Keep the scalar indices current after a commit: clip_id and video_id lookups (resume, orphan
        clean-up, previews) then read a few index pages instead of scanning the column."""
        from store.maintenance import ensure_indices  # maintenance builds on this module

        ensure_indices(self)

    # ---- reading ------------------------------------------------------------------------------
    def read(self, table: str, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        """Rows of a table with column projection and a SQL filter (blob columns come as descriptors).
        For small tables and selective filters; use `scan` for a whole table."""
        return self.require(table).to_table(columns=list(columns) if columns else None, filter=filter or None)

    def read_clips(self, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        return self.read(CLIPS, columns, filter)

    def scan(
        self,
        table: str,
        columns: Sequence[str],
        filter: str | None = None,
        batch_rows: int = SCAN_BATCH_ROWS,
        version: int | None = None,
        readahead: int | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream a table in batches of at most `batch_rows`, each with its `_rowid` column.

        `readahead` bounds the batches (and fragments) Lance decodes ahead of the reader (default:
        Lance's, which keeps many batches in flight): a slow reader of wide rows sets it low, since each
        batch decoded ahead is memory held until the reader takes it."""
        ds = self.require(table, version)
        yield from ds.to_batches(
            columns=list(columns),
            filter=filter or None,
            with_row_id=True,
            batch_size=batch_rows,
            batch_readahead=readahead,
            fragment_readahead=readahead,
        )

    def work_list(
        self,
        columns: Sequence[str] = ("clip_id",),
        filter: str | None = None,
        exclude: ColumnStaging | None = None,
        exclude_where: str | None = None,
    ) -> WorkList:
        """Row ids (+ `columns`) of the clips matching `filter`, minus those already staged in `exclude`
        (those matching `exclude_where` there), at the current clips version: workers read that version,
        so later commits cannot move the rows they were given. 16 bytes + the columns per clip."""
        ds = self.require(CLIPS)
        rows = ds.to_table(columns=list(columns), filter=filter or None, with_row_id=True)
        if exclude is not None:
            done = exclude.done_row_ids(exclude_where)
            if done is not None and len(done):
                rows = rows.filter(pc.invert(pc.is_in(rows[ROW_ID], value_set=done)))
        return WorkList(ds.version, rows)

    def read_clip_bytes(self, clip_ids: Sequence[str], column: str = "video") -> dict[str, bytes]:
        """The blob bytes of a few clips named by clip_id (the clip_id index finds them).

        For tests, the report's handful of previews and single lookups; stages read by row id."""
        ds = self.require(CLIPS)
        out: dict[str, bytes] = {}
        for clip_id in clip_ids:
            found = ds.to_table(columns=["clip_id"], filter=f"clip_id = {_quote(clip_id)}", with_row_id=True)
            if found.num_rows:
                out[clip_id] = ClipReader.of(ds).blobs(found[ROW_ID].to_pylist(), column)[0]
        return out

    # ---- data evolution -------------------------------------------------------------------------
    def add_columns(
        self,
        source: pa.Table | Iterable[pa.Table | pa.RecordBatch],
        stage: str,
        config: Mapping[str, Any],
        models: Mapping[str, Any] | None = None,
        *,
        schema: pa.Schema | None = None,
    ) -> int:
        """Replace a stage's columns on `clips` with rows keyed by `_rowid`; blobs are never rewritten.
        Rows may stream in batches (they pass through the stage's staging dataset, so memory stays
        bounded); clips not given get nulls. `schema` types the columns when no row comes. A table
        keyed by clip_id alone (tests, small helpers) gets its row ids from `with_row_ids`."""
        staging = ColumnStaging(self, stage)
        staging.reset()
        if isinstance(source, pa.Table) and ROW_ID not in source.column_names:
            source = self.with_row_ids(source)
        chunks = [source] if isinstance(source, pa.Table) else source
        wrote = False
        for chunk in chunks:
            table = chunk if isinstance(chunk, pa.Table) else pa.Table.from_batches([chunk])
            try:  # rows built by pyarrow's inference (all-null columns, float lists) get the contract's types
                table = contract.cast_to_contract(stage, table)
            except contract.ContractError as err:
                raise StoreError(str(err)) from err
            if ROW_ID not in table.column_names:
                raise StoreError(f"stage {stage}: rows to add need the clips' {ROW_ID} column")
            if table.num_rows:
                staging.append(table)
                wrote = True
            elif schema is None:
                schema = table.schema
        if not wrote:  # nothing computed: the columns still exist, all null
            if schema is None:
                raise StoreError(f"stage {stage}: no rows and no schema to add")
            staging.append_empty(schema)
        version = staging.merge_into_clips(config, models, replace=True)
        staging.reset()
        assert version is not None
        return version

    def drop_columns(self, stage: str) -> None:
        """Remove a stage's columns from `clips` (a forced recompute starts from nothing)."""
        ds = self.require(CLIPS)
        present = [c for c in contract.STAGES[stage].writes if c in ds.schema.names]
        if present:
            ds.drop_columns(present)  # metadata only; the old column files stay for older versions

    def with_row_ids(self, table: pa.Table) -> pa.Table:
        """`table` (keyed by clip_id) with each clip's `_rowid`, by a streamed join against the clip_id
        column: bounded memory, one pass over the column. For small tables made outside a stage."""
        row_ids = pa.nulls(table.num_rows, pa.uint64())
        for batch in self.scan(CLIPS, ["clip_id"]):
            at = pc.index_in(table["clip_id"], value_set=batch.column("clip_id"))
            row_ids = pc.coalesce(row_ids, pc.take(batch.column(ROW_ID), at))
        joined = table.append_column(ROW_ID, row_ids).filter(pc.is_valid(row_ids))
        if joined.num_rows != table.num_rows:
            raise StoreError(
                f"{table.num_rows - joined.num_rows} of the rows name clip ids that are not in clips"
            )
        return joined

    def merge_staged(
        self,
        staged: lance.LanceDataset,
        stage: str,
        config: Mapping[str, Any],
        models: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> int:
        """Add the staged columns to `clips`, one clips fragment at a time.

        Columns new to `clips` are added to every fragment in one Merge commit (nulls where nothing was
        staged). Columns already there are updated in place for the staged rows only (one Update
        commit, `rewrite_columns`): a run that scored the clips a later split added leaves the earlier
        scores as they are. `replace` drops the stage's columns first (a whole-table stage: dedup,
        filter). Memory: one fragment's keys and staged rows at a time."""
        names = [n for n in staged.schema.names if n not in (STAGED_ROW_ID, "clip_id")]
        written = pa.schema([staged.schema.field(n) for n in names])
        try:
            contract.check_written(stage, written)
        except contract.ContractError as err:
            raise StoreError(str(err)) from err
        if replace:
            self.drop_columns(stage)
        _ensure_btree(staged, STAGED_ROW_ID)
        ds = self.require(CLIPS)
        new = [n for n in names if n not in ds.schema.names]
        existing = [n for n in names if n in ds.schema.names]
        if new:
            self._add_new_columns(ds, staged, new, pa.schema([written.field(n) for n in new]))
        if existing:
            self._update_columns(staged, existing, pa.schema([written.field(n) for n in existing]))
        record = {
            "stage": stage,
            "columns": names,
            "config": dict(config),
            "models": dict(models or {}),
            "rows": staged.count_rows(),
            "at": utc_now(),
        }
        ds = self.require(CLIPS)
        ds.update_metadata({_STAGE_KEY_PREFIX + stage: json.dumps(record, sort_keys=True, default=str)})
        return self.require(CLIPS).version

    def _add_new_columns(
        self, ds: lance.LanceDataset, staged: lance.LanceDataset, names: list[str], schema: pa.Schema
    ) -> None:
        merged: list[FragmentMetadata] = []
        new_schema = None
        for fragment in ds.get_fragments():
            keys = fragment.to_table(columns=["clip_id"], with_row_id=True)
            values, _ = _staged_rows_for(staged, keys[ROW_ID], names, schema)
            right = pa.Table.from_arrays(
                [keys["clip_id"], *values.columns], names=["clip_id", *values.column_names]
            )
            metadata, new_schema = fragment.merge(right, left_on="clip_id")
            merged.append(metadata)
        if new_schema is None:  # no clips yet: the columns are added to the (empty) schema only
            ds.add_columns(schema)
            return
        lance.LanceDataset.commit(
            self.clips_uri, lance.LanceOperation.Merge(merged, new_schema), read_version=ds.version
        )

    def _update_columns(self, staged: lance.LanceDataset, names: list[str], schema: pa.Schema) -> None:
        ds = self.require(CLIPS)
        updated: list[FragmentMetadata] = []
        fields: list[int] = []
        for fragment in ds.get_fragments():
            keys = fragment.to_table(columns=["clip_id"], with_row_id=True)
            values, hit = _staged_rows_for(staged, keys[ROW_ID], names, schema)
            if not pc.any(hit).as_py():
                continue
            right = pa.Table.from_arrays(
                [keys["clip_id"], *values.columns], names=["clip_id", *values.column_names]
            ).filter(hit)
            metadata, fields = fragment.update_columns(right, left_on="clip_id")
            updated.append(metadata)
        if updated:
            lance.LanceDataset.commit(
                self.clips_uri,
                lance.LanceOperation.Update(
                    updated_fragments=updated, fields_modified=fields, update_mode="rewrite_columns"
                ),
                read_version=ds.version,
            )

    def record(self, table: str, stage: str, record: Mapping[str, Any]) -> None:
        """Record a stage's config on a table without changing its rows (e.g. split on `videos`)."""
        ds = self.require(table)
        stamped = {**record, "at": utc_now()}
        ds.update_metadata({_STAGE_KEY_PREFIX + stage: json.dumps(stamped, sort_keys=True, default=str)})

    def stage_records(self, table: str = CLIPS) -> dict[str, dict[str, Any]]:
        """What produced each stage's columns: {stage: {columns, config, models, rows, at}}."""
        ds = self.dataset(table)
        if ds is None:
            return {}
        meta = ds.metadata() if callable(ds.metadata) else ds.metadata
        return {
            k[len(_STAGE_KEY_PREFIX) :]: json.loads(v)
            for k, v in meta.items()
            if k.startswith(_STAGE_KEY_PREFIX)
        }

    def versions(self, table: str = CLIPS) -> list[Version]:
        ds = self.dataset(table)
        return [] if ds is None else list(ds.versions())


class ClipReader:
    """Reads blobs and columns of clips by row id at one dataset version (what a stage's worker uses).

    One open dataset per (uri, version) and process: opening a Lance dataset reads its manifest, which
    is worth doing once per worker, not once per batch."""

    _open: dict[tuple[str, int], lance.LanceDataset] = {}  # noqa: RUF012  (a per-process cache)

    def __init__(self, ds: lance.LanceDataset):
        self.ds = ds

    @classmethod
    def of(cls, ds: lance.LanceDataset) -> ClipReader:
        return cls(ds)

    @classmethod
    def at(cls, store_root: str | Path, version: int) -> ClipReader:
        uri = Store(store_root).clips_uri
        key = (uri, int(version))
        if key not in cls._open:
            cls._open.clear()  # a new version replaces the old one: one open dataset per process
            cls._open[key] = lance.dataset(uri, version=int(version))
        return cls(cls._open[key])

    def blobs(self, row_ids: Sequence[int] | np.ndarray, column: str = "video") -> list[bytes]:
        """The bytes of each row's blob, in the order of `row_ids` (b"" for a missing value)."""
        if not len(row_ids):
            return []
        ids = [int(r) for r in row_ids]
        found = cast(dict[int, bytes | None], dict(self.ds.read_blobs(column, ids=ids, preserve_order=True)))
        if len(found) == len(ids):
            return [b or b"" for b in found.values()]
        # read_blobs keys its answer by row address; map ids to addresses to restore the order
        addresses = self.ds._take_rows(ids, columns=[], with_row_address=True)["_rowaddr"].to_pylist()
        return [found.get(a) or b"" for a in addresses]

    def columns(self, row_ids: Sequence[int] | np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Scalar columns of the rows, in the order of `row_ids`."""
        return self.ds._take_rows([int(r) for r in row_ids], columns=list(columns))


class ColumnStaging:
    """Exactly-once progress of a column stage: finished rows are appended to `staging/<stage>.lance`,
    keyed by the clip's row id (`clip_rowid`) and carrying its clip_id.

    `done_row_ids()` tells a resumed run what to skip; `merge_into_clips()` adds the stage's columns to
    `clips` fragment by fragment. `reset()` starts the stage over (a forced recompute) and removes the
    staging once its columns are merged.
    """

    def __init__(self, store: Store, stage: str):
        self.store = store
        self.stage = stage
        self.uri = str(store.root / "staging" / f"{stage}.lance")

    def _dataset(self) -> lance.LanceDataset | None:
        return lance.dataset(self.uri) if _committed(self.uri) else None

    def done_row_ids(self, where: str | None = None) -> pa.Array | None:
        """Row ids already staged (matching `where`): one int column, 8 bytes per clip."""
        ds = self._dataset()
        if ds is None:
            return None
        ids = ds.to_table(columns=[STAGED_ROW_ID], filter=where or None).column(STAGED_ROW_ID)
        return ids.combine_chunks().cast(pa.uint64())

    def count(self) -> int:
        ds = self._dataset()
        return 0 if ds is None else ds.count_rows()

    def append(self, rows: pa.Table) -> None:
        """Commit one finished batch (atomic: after a kill it is either fully there or not at all).
        `rows` carries the clips' `_rowid` (or `clip_rowid`) and clip_id plus the stage's columns."""
        if rows.num_rows == 0:
            return
        if ROW_ID in rows.column_names:
            rows = rows.rename_columns([STAGED_ROW_ID if n == ROW_ID else n for n in rows.column_names])
        if STAGED_ROW_ID not in rows.column_names:
            raise StoreError(f"stage {self.stage}: staged rows need the clips' {ROW_ID}")
        rows = rows.set_column(
            rows.schema.get_field_index(STAGED_ROW_ID), STAGED_ROW_ID, rows[STAGED_ROW_ID].cast(pa.uint64())
        )
        ds = self._dataset()
        if ds is not None and rows.schema != ds.schema:
            rows = rows.select(ds.schema.names).cast(ds.schema)
        mode = "append" if ds is not None else "create"
        ds = lance.write_dataset(rows, self.uri, mode=mode, data_storage_version=DATA_STORAGE_VERSION)
        if len(ds.get_fragments()) > _STAGING_FRAGMENT_BOUND:
            # Each append is a fragment and a version, and a commit rewrites the manifest listing every
            # fragment: unchecked, a pass of n appends costs O(n^2) (at 10^6 clips in appends of 256
            # rows the last appends took 6x the first). Merging the small fragments and dropping the
            # versions nothing reads keeps every append's cost flat; a kill mid-way leaves the latest
            # committed version whole, which is all a resumed run reads.
            ds.optimize.compact_files(target_rows_per_fragment=_STAGING_FRAGMENT_ROWS)
            ds.cleanup_old_versions(older_than=dt.timedelta(0))

    def append_empty(self, schema: pa.Schema) -> None:
        """Create the staging with `schema` and no rows (a stage that computed nothing)."""
        fields = [pa.field(STAGED_ROW_ID, pa.uint64())] + [f for f in schema if f.name != ROW_ID]
        lance.write_dataset(
            pa.schema(fields).empty_table(),
            self.uri,
            mode="create",
            data_storage_version=DATA_STORAGE_VERSION,
        )

    def scan(self, columns: Sequence[str], filter: str | None = None) -> Iterator[pa.RecordBatch]:
        ds = self._dataset()
        if ds is None:
            return iter(())
        return ds.to_batches(columns=list(columns), filter=filter or None, batch_size=SCAN_BATCH_ROWS)

    def errors(self, column: str, examples: int = 3) -> tuple[int, list[str]]:
        """How many staged rows carry an error in `column`, and the first few as `clip_id: error`."""
        ds = self._dataset()
        if ds is None:
            return 0, []
        where = f"{column} IS NOT NULL"
        head = ds.to_table(columns=["clip_id", column], filter=where, limit=examples)
        ids, reasons = head["clip_id"].to_pylist(), head[column].to_pylist()
        return ds.count_rows(filter=where), [f"{c}: {e}" for c, e in zip(ids, reasons, strict=True)]

    def merge_into_clips(
        self, config: Mapping[str, Any], models: Mapping[str, Any] | None = None, *, replace: bool = False
    ) -> int | None:
        """Add the staged columns to `clips` (see Store.merge_staged); None when nothing was staged."""
        ds = self._dataset()
        if ds is None:
            return None
        return self.store.merge_staged(ds, self.stage, config, models, replace=replace)

    def reset(self) -> None:
        # Staging is scratch space, not a source of truth: dropping it whole also allows a new column set.
        shutil.rmtree(self.uri, ignore_errors=True)


def _staged_rows_for(
    staged: lance.LanceDataset, row_ids: pa.ChunkedArray, names: list[str], schema: pa.Schema
) -> tuple[pa.Table, pa.Array]:
    """The staged values of `names` aligned to `row_ids` (nulls where nothing was staged), and which
    rows had staged values.

    Reads only the staged rows within the fragment's row-id range (a BTREE range lookup); the last row
    wins where a retried batch staged a clip twice."""
    ids = row_ids.combine_chunks().cast(pa.uint64())
    if len(ids) == 0:
        return schema.empty_table(), pa.array([], pa.bool_())
    lo, hi = pc.min(ids).as_py(), pc.max(ids).as_py()
    found = staged.to_table(
        columns=[STAGED_ROW_ID, *names],
        filter=f"{STAGED_ROW_ID} >= {lo} AND {STAGED_ROW_ID} <= {hi}",
    )
    found = _last_per_key(found, STAGED_ROW_ID)
    position = pc.index_in(ids, value_set=found[STAGED_ROW_ID].combine_chunks())
    return found.select(names).take(position).cast(schema), pc.is_valid(position)


def _ensure_btree(ds: lance.LanceDataset, column: str) -> None:
    """A BTREE index on `column` covering every fragment (created, or extended to new fragments)."""
    if any(column in idx["fields"] for idx in ds.list_indices()):
        ds.optimize.optimize_indices(index_names=[f"{column}_idx"])
    else:
        ds.create_scalar_index(column, "BTREE")


def _committed(uri: str | Path) -> bool:
    """Has the dataset a first version? (Workers may have written fragment files before it does.)"""
    return (Path(uri) / "_versions").is_dir()


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _last_per_key(table: pa.Table, key: str) -> pa.Table:
    """Last row per key: a batch staged twice (a retried task) must not duplicate a clip in the merge."""
    if pc.count_distinct(table.column(key)).as_py() == table.num_rows:
        return table
    positions = pa.array(range(table.num_rows), pa.int64())
    last = (
        pa.table({"k": table.column(key), "i": positions})
        .group_by("k", use_threads=False)
        .aggregate([("i", "max")])
        .column("i_max")
    )
    return table.take(pc.take(last, pc.sort_indices(last)))

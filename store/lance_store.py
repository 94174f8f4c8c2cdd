"""The Lance store: one project folder holding two versioned Lance datasets, `videos` and `clips`.

- `videos.lance`: one row per input file (ok or error, with the reason).
- `clips.lance`: one row per clip; the clip's encoded bytes live in the blob column `video`.
  Every stage after split ADDS columns here (Lance data evolution) and never rewrites the blobs.
The columns are declared in `store/contract.py`; the store refuses a column a stage did not declare.

Reads cost O(batch), not O(dataset): clips are created with stable row ids, a stage's work list
(`work_list`) carries each clip's `_rowid` and the dataset version it was listed at, and a batch
fetches its blobs and columns by those ids (`ClipReader`, store/clip_reader.py). Lookups by `clip_id` or `video_id` go
through scalar (BTREE) indices that `store.maintenance.ensure_indices` keeps current after commits.

Exactly-once protocol of the split stage: before committing a batch of files the driver journals
their video_ids (`staging/split_pending.json`), commits their clips, then their video rows, then clears
the journal. A video row therefore means "all its clips are in". A job killed in between leaves
journalled ids without a video row; `remove_orphan_clips` deletes their clips when the next run starts
(one indexed delete per file, never a scan of the table), and that run redoes the files.

Column stages (score, caption, encode, dedup, filter) add their columns through `ColumnStaging`
(store/column_staging.py, which says how a killed stage or merge resumes).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import lance
import pyarrow as pa
import pyarrow.compute as pc
from lance.dataset import Version
from lance.fragment import FragmentMetadata, write_fragments

from store import contract
from store.contract import CLIPS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, VIDEOS
from store.errors import StoreError

if TYPE_CHECKING:
    from store.column_staging import ColumnStaging

_STAGE_KEY_PREFIX = "reelforge.stage."
DATA_STORAGE_VERSION: Final = "2.2"  # Lance file format 2.2: blob columns are stored as blob v2
ROW_ID: Final = "_rowid"  # Lance's stable row id, as scans return it
SCAN_BATCH_ROWS: Final = 65_536

VIDEOS_SCHEMA = contract.schema(VIDEOS)
CLIPS_SCHEMA = contract.schema(CLIPS)
_SCHEMAS = {VIDEOS: VIDEOS_SCHEMA, CLIPS: CLIPS_SCHEMA}


def utc_now() -> str:
    """When a stage ran, as every stage record and the report write it (UTC, whole seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
        return int(self.rows.num_rows)


class Store:
    """A project folder with the `videos` and `clips` datasets."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.videos_uri = str(self.root / "videos.lance")
        self.clips_uri = str(self.root / "clips.lance")

    def uri(self, table: str) -> str:
        """The URI of `table`."""
        return {VIDEOS: self.videos_uri, CLIPS: self.clips_uri}[table]

    # ---- opening -------------------------------------------------------------------------------
    def dataset(self, table: str, version: int | str | None = None) -> lance.LanceDataset | None:
        """The dataset, or None before its first commit; refuses another schema version."""
        uri = self.uri(table)
        if not is_committed(uri):
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
        """The videos dataset, or None before its first commit."""
        return self.dataset(VIDEOS)

    def clips_dataset(self) -> lance.LanceDataset | None:
        """The clips dataset, or None before its first commit."""
        return self.dataset(CLIPS)

    def require(self, table: str, version: int | None = None) -> lance.LanceDataset:
        """The dataset; StoreError when the table does not exist yet."""
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
        """The clips table's `columns` of the rows matching `filter`."""
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
        from store.clip_reader import ClipReader  # the reader builds on this module

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
        from store.column_staging import ColumnStaging  # staging builds on this module

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

    def record(self, table: str, stage: str, record: Mapping[str, Any]) -> None:
        """Record a stage's config on a table without changing its rows (split on `videos`; a column
        stage on `clips` once its columns are merged)."""
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
        """The table's versions (none before its first commit)."""
        ds = self.dataset(table)
        return [] if ds is None else list(ds.versions())


def is_committed(uri: str | Path) -> bool:
    """Has the dataset a first version? (Workers may have written fragment files before it does.)"""
    return (Path(uri) / "_versions").is_dir()


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"

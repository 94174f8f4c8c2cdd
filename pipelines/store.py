"""The Lance store: one project folder holding two versioned Lance datasets, `videos` and `clips`.

- `videos.lance`: one row per input file (ok or error, with the reason).
- `clips.lance`: one row per clip; the clip's encoded bytes live in the blob column `video`.
  Every stage after split ADDS columns here (Lance data evolution) and never rewrites the blobs.

Exactly-once protocol of the split stage: a worker writes fragments for one input file; the driver
commits its clips first and its video row second. A video row therefore means "all its clips are in".
A job killed between the two commits leaves clips without a video row; `remove_orphan_clips` deletes them
when the next run starts, and that run redoes the file. Files whose video_id has a row are skipped.

Column stages (score, caption, encode) resume through `ColumnStaging`: each finished batch is appended to
a small staging dataset keyed by clip_id (appends are atomic and never conflict), and the stage's columns
are merged into `clips` once at the end. A killed stage keeps every batch it committed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import lance
import pyarrow as pa
import pyarrow.compute as pc
from lance.dataset import Version
from lance.fragment import FragmentMetadata, write_fragments

# Bumped when a column of VIDEOS_SCHEMA or CLIPS_SCHEMA changes meaning; a dataset written with another
# version is refused with a one-line error instead of being silently mixed.
SCHEMA_VERSION = "1"
_SCHEMA_VERSION_KEY = "reelforge.schema_version"
_STAGE_KEY_PREFIX = "reelforge.stage."
DATA_STORAGE_VERSION: Final = "2.2"  # Lance file format 2.2: blob columns are stored as blob v2

# On file format 2.2 a large_binary field with this marker becomes a blob v2 column: scans return
# descriptors, bytes come from `read_blobs`, and adding columns never rewrites it.
_BLOB = {"lance-encoding:blob": "true"}

BOUNDARY_TYPE = pa.struct(
    [
        pa.field("seconds", pa.float64()),  # presentation time of the first frame of the new shot
        pa.field("frame", pa.int64()),  # its index in decoding order
        pa.field("kind", pa.string()),  # "cut" | "gradual"
    ]
)

VIDEOS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),  # content hash of the file's bytes
        pa.field("uri", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("rotation", pa.int32()),  # display rotation: clockwise degrees a player turns the picture
        pa.field("nominal_fps", pa.float64()),
        pa.field("avg_fps", pa.float64()),
        pa.field("is_vfr", pa.bool_()),
        pa.field("duration_s", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("has_audio", pa.bool_()),
        pa.field("boundaries", pa.list_(BOUNDARY_TYPE)),
        pa.field("num_clips", pa.int32()),
        pa.field("status", pa.string()),  # "ok" | "error"
        pa.field("error", pa.string()),  # the specific reason when status == "error" (or a partial decode)
        pa.field("pipeline_version", pa.string()),
        pa.field("processed_at", pa.timestamp("us", tz="UTC")),
    ],
    metadata={_SCHEMA_VERSION_KEY: SCHEMA_VERSION},
)

CLIPS_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # video_id + start timestamp: deterministic
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),  # the source file
        pa.field("clip_index", pa.int32()),
        pa.field("start_s", pa.float64()),  # container timestamps of the source, in seconds
        pa.field("end_s", pa.float64()),
        pa.field("start_frame", pa.int64()),  # decoding-order indices in the source, end exclusive
        pa.field("end_frame", pa.int64()),
        pa.field("num_frames", pa.int32()),  # frames in the encoded clip
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("video", pa.large_binary(), metadata=_BLOB),  # the encoded clip (MP4)
        pa.field("thumbnail", pa.binary()),  # JPEG of the middle frame
    ],
    metadata={_SCHEMA_VERSION_KEY: SCHEMA_VERSION},
)

VIDEOS, CLIPS = "videos", "clips"
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
        found = (ds.schema.metadata or {}).get(_SCHEMA_VERSION_KEY.encode(), b"?").decode()
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

    def require(self, table: str) -> lance.LanceDataset:
        ds = self.dataset(table)
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

    def done_video_ids(self) -> set[str]:
        ds = self.videos_dataset()
        if ds is None:
            return set()
        return set(ds.to_table(columns=["video_id"]).column("video_id").to_pylist())

    def remove_orphan_clips(self) -> int:
        """Delete clips whose video row was never committed (a job killed between the two commits)."""
        clips = self.clips_dataset()
        if clips is None:
            return 0
        done = pa.array(sorted(self.done_video_ids()), pa.string())
        ids = clips.to_table(columns=["video_id"]).column("video_id")
        orphans = sorted(set(pc.filter(ids, pc.invert(pc.is_in(ids, value_set=done))).to_pylist()))
        if orphans:
            clips.delete(_in_list("video_id", orphans))
        return len(orphans)

    # ---- reading ------------------------------------------------------------------------------
    def read(self, table: str, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        """Rows of a table with column projection and a SQL filter (blob columns come as descriptors)."""
        return self.require(table).to_table(columns=list(columns) if columns else None, filter=filter or None)

    def read_clips(self, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        return self.read(CLIPS, columns, filter)

    def read_clip_bytes(self, clip_ids: Sequence[str], column: str = "video") -> dict[str, bytes]:
        """The encoded bytes of the given clips' blob column, by clip_id."""
        ds = self.require(CLIPS)
        if not clip_ids:
            return {}
        rows = ds.to_table(columns=["clip_id"], filter=_in_list("clip_id", clip_ids), with_row_address=True)
        addresses = rows.column("_rowaddr").to_pylist()
        # read_blobs types every blob as optional; split writes the bytes of every clip it adds
        blobs = cast(dict[int, bytes], dict(ds.read_blobs(column, addresses=addresses, preserve_order=True)))
        return {cid: blobs[a] for cid, a in zip(rows.column("clip_id").to_pylist(), addresses, strict=True)}

    # ---- data evolution -------------------------------------------------------------------------
    def add_columns(
        self,
        table: pa.Table,
        stage: str,
        config: Mapping[str, Any],
        models: Mapping[str, Any] | None = None,
        key: str = "clip_id",
    ) -> int:
        """Add (or replace) a stage's columns on `clips`, joined on `key`; blobs are never rewritten.

        Clips missing from `table` get nulls. The stage's config, models and columns are recorded in the
        dataset's metadata under `reelforge.stage.<stage>`. Column changes conflict with concurrent
        writers: run them one stage at a time (the jobs do).
        """
        ds = self.require(CLIPS)
        new_columns = [c for c in table.column_names if c != key]
        reserved = set(CLIPS_SCHEMA.names)
        clash = sorted(set(new_columns) & reserved)
        if clash:
            raise StoreError(f"stage {stage} may not replace base clip columns {clash}")
        existing = [c for c in new_columns if c in ds.schema.names]
        if existing:
            ds.drop_columns(existing)  # metadata only; the old column files stay for older versions
            ds = self.require(CLIPS)
        if table.num_rows:
            ds.merge(_unique_by(table, key), left_on=key)
        else:  # nothing computed: the columns still exist, all null
            ds.merge(_empty_join(ds, key, table.schema), left_on=key)
        ds = self.require(CLIPS)
        record = {
            "stage": stage,
            "columns": new_columns,
            "config": dict(config),
            "models": dict(models or {}),
            "rows": table.num_rows,
            "at": utc_now(),
        }
        ds.update_metadata({_STAGE_KEY_PREFIX + stage: json.dumps(record, sort_keys=True)})
        return self.require(CLIPS).version

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


class ColumnStaging:
    """Exactly-once progress of a column stage: finished rows are appended to `staging/<stage>.lance`.

    `done_ids()` tells a resumed run what to skip; `merge_into_clips()` adds the stage's columns to
    `clips` once, from everything staged. `reset()` starts the stage over (a forced recompute).
    """

    def __init__(self, store: Store, stage: str):
        self.store = store
        self.stage = stage
        self.uri = str(store.root / "staging" / f"{stage}.lance")

    def _dataset(self) -> lance.LanceDataset | None:
        return lance.dataset(self.uri) if _committed(self.uri) else None

    def done_ids(self) -> set[str]:
        ds = self._dataset()
        if ds is None:
            return set()
        return set(ds.to_table(columns=["clip_id"]).column("clip_id").to_pylist())

    def append(self, rows: pa.Table) -> None:
        """Commit one finished batch (atomic: after a kill it is either fully there or not at all)."""
        if rows.num_rows == 0:
            return
        ds = self._dataset()
        mode = "append" if ds is not None else "create"
        if ds is not None and rows.schema != ds.schema:
            rows = rows.select(ds.schema.names).cast(ds.schema)
        lance.write_dataset(rows, self.uri, mode=mode, data_storage_version=DATA_STORAGE_VERSION)

    def table(self) -> pa.Table | None:
        ds = self._dataset()
        return None if ds is None else ds.to_table()

    def errors(self, column: str, examples: int = 3) -> tuple[int, list[str]]:
        """How many staged rows carry an error in `column`, and the first few as `clip_id: error`."""
        staged = self.table()
        if staged is None:
            return 0, []
        failed = staged.filter(pc.is_valid(staged[column]))
        head = failed.slice(0, examples)
        ids, reasons = head["clip_id"].to_pylist(), head[column].to_pylist()
        return failed.num_rows, [f"{c}: {e}" for c, e in zip(ids, reasons, strict=True)]

    def merge_into_clips(
        self, config: Mapping[str, Any], models: Mapping[str, Any] | None = None
    ) -> int | None:
        staged = self.table()
        if staged is None:
            return None
        return self.store.add_columns(staged, self.stage, config, models)

    def reset(self) -> None:
        # Staging is scratch space, not a source of truth: dropping it whole also allows a new column set.
        shutil.rmtree(self.uri, ignore_errors=True)


def _committed(uri: str | Path) -> bool:
    """Has the dataset a first version? (Workers may have written fragment files before it does.)"""
    return (Path(uri) / "_versions").is_dir()


def _in_list(column: str, values: Iterable[str]) -> str:
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def _unique_by(table: pa.Table, key: str) -> pa.Table:
    """Last row per key: a batch staged twice (a retried task) must not duplicate a clip in the merge."""
    if pc.count_distinct(table.column(key)).as_py() == table.num_rows:
        return table
    keys = table.column(key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    return table.take(sorted(last.values()))


def _empty_join(ds: lance.LanceDataset, key: str, schema: pa.Schema) -> pa.Table:
    ids = ds.to_table(columns=[key]).column(key)
    columns = [ids] + [pa.nulls(len(ids), schema.field(n).type) for n in schema.names if n != key]
    return pa.Table.from_arrays(
        columns, schema=pa.schema([schema.field(key)] + [f for f in schema if f.name != key])
    )

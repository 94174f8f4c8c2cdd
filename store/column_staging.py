"""Column stages (score, caption, encode, dedup, filter): how their columns reach `clips`.

Each finished batch of a stage is appended to a small staging dataset keyed by the clip's row id
(`ColumnStaging`; appends are atomic and never conflict), and `merge_into_clips` adds the stage's
columns fragment by fragment, reading only the staged rows of one clips fragment at a time (a BTREE
range lookup on the staging table), then commits one Lance Merge. Neither table is ever held whole in
memory. A killed stage keeps every batch it committed; a killed merge leaves the previous version and
the staging, and the rerun merges again.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import lance
import pyarrow as pa
import pyarrow.compute as pc
from lance.fragment import FragmentMetadata

from store import contract
from store.contract import CLIPS
from store.errors import StoreError
from store.lance_store import DATA_STORAGE_VERSION, ROW_ID, SCAN_BATCH_ROWS, Store, is_committed

# A staging compacts its fragments beyond this many (see ColumnStaging.append) into fragments of up to
# _STAGING_FRAGMENT_ROWS rows; fragments already that large are left alone, so each row is rewritten
# a few times at most.
_STAGING_FRAGMENT_BOUND: Final = 64
_STAGING_FRAGMENT_ROWS: Final = 1 << 16
STAGED_ROW_ID: Final = "clip_rowid"  # the clips' row id as a plain column of a staging dataset


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
        return lance.dataset(self.uri) if is_committed(self.uri) else None

    def done_row_ids(self, where: str | None = None) -> pa.Array | None:
        """Row ids already staged (matching `where`): one int column, 8 bytes per clip."""
        ds = self._dataset()
        if ds is None:
            return None
        ids = ds.to_table(columns=[STAGED_ROW_ID], filter=where or None).column(STAGED_ROW_ID)
        return ids.combine_chunks().cast(pa.uint64())

    def count(self) -> int:
        """Rows staged so far."""
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
        """Batches of the staged rows' `columns` matching `filter`."""
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
        """Add the staged columns to `clips` (see `merge_staged`); None when nothing was staged."""
        ds = self._dataset()
        if ds is None:
            return None
        return merge_staged(self.store, ds, self.stage, config, models, replace=replace)

    def reset(self) -> None:
        """Drop everything staged."""
        # Staging is scratch space, not a source of truth: dropping it whole also allows a new column set.
        shutil.rmtree(self.uri, ignore_errors=True)


def merge_staged(
    store: Store,
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
        store.drop_columns(stage)
    _ensure_btree(staged, STAGED_ROW_ID)
    ds = store.require(CLIPS)
    new = [n for n in names if n not in ds.schema.names]
    existing = [n for n in names if n in ds.schema.names]
    if new:
        _add_new_columns(store, ds, staged, new, pa.schema([written.field(n) for n in new]))
    if existing:
        _update_columns(store, staged, existing, pa.schema([written.field(n) for n in existing]))
    record = {
        "stage": stage,
        "columns": names,
        "config": dict(config),
        "models": dict(models or {}),
        "rows": staged.count_rows(),
    }
    store.record(CLIPS, stage, record)
    return store.require(CLIPS).version


def _add_new_columns(
    store: Store, ds: lance.LanceDataset, staged: lance.LanceDataset, names: list[str], schema: pa.Schema
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
        store.clips_uri, lance.LanceOperation.Merge(merged, new_schema), read_version=ds.version
    )


def _update_columns(store: Store, staged: lance.LanceDataset, names: list[str], schema: pa.Schema) -> None:
    ds = store.require(CLIPS)
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
            store.clips_uri,
            lance.LanceOperation.Update(
                updated_fragments=updated, fields_modified=fields, update_mode="rewrite_columns"
            ),
            read_version=ds.version,
        )


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

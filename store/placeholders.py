"""Placeholder marks in the clips table's Arrow schema.

A column computed by a model with random weights (the demo's and the tests' stand-ins) carries
`{"reelforge.placeholder": "<stage>/<model>"}` in its field metadata, so whoever reads clips.lance with
plain pyarrow, or any tool that shows Arrow field metadata, sees that its values are not real scores or
captions, without knowing reelforge's stage records. The records stay the source: the marks are derived
from them after every stage that merges model output.

pandas drops Arrow field metadata (pyarrow's `to_pandas` keeps none of it), so the table's schema also
carries the marks as pandas metadata: `lance.dataset(uri).to_table().to_pandas().attrs` holds
`{"reelforge.placeholders": {column: "stage/model"}}`. DuckDB keeps no Arrow metadata at all (field or
schema, checked with DuckDB 2.0.0): there the values themselves are the mark (placeholder heads are not
centred on a plausible rating) and `reelforge status` names the placeholder models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from store.contract import CLIPS
from store.lance_store import Store

PLACEHOLDER_KEY = "reelforge.placeholder"
PANDAS_ATTRS_KEY = "reelforge.placeholders"


def placeholder_columns(records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Columns produced by random-weight models, from the stage records: {column: "stage/model"}.

    A model entry marked `placeholder: true` taints the columns it lists, or, without a `columns` key,
    every column of its stage (the safe reading: an unlisted column might come from it).
    """
    out: dict[str, str] = {}
    for stage, record in records.items():
        stage_columns = list(record.get("columns", []))
        models = record.get("models") or {}
        entries: list[tuple[str, Any]] = [(stage, models)] + [(f"{stage}/{k}", v) for k, v in models.items()]
        for name, entry in entries:
            if isinstance(entry, Mapping) and entry.get("placeholder") is True:
                # an explicit list (even empty) is authoritative; no list means the whole stage
                for column in entry.get("columns", stage_columns):
                    out.setdefault(column, name)
    return out


def schema_marks(schema: pa.Schema) -> dict[str, str]:
    """The placeholder marks a schema carries: {column: "stage/model"}."""
    key = PLACEHOLDER_KEY.encode()
    return {f.name: f.metadata[key].decode() for f in schema if f.metadata and key in f.metadata}


def mark_placeholders(store: Store) -> dict[str, str]:
    """Make the clips table's field metadata carry exactly the marks its stage records imply: set on
    placeholder columns, removed from columns a real model has since rewritten. One metadata-only
    commit when anything changes. Returns the marks now in the schema."""
    ds = store.require(CLIPS)
    wanted = {c: m for c, m in placeholder_columns(store.stage_records()).items() if c in ds.schema.names}
    present = schema_marks(ds.schema)
    updates: dict[str, dict[str, str | None]] = {
        column: {PLACEHOLDER_KEY: wanted.get(column)}
        for column in set(wanted) | set(present)
        if wanted.get(column) != present.get(column)
    }
    if updates:
        ds.update_field_metadata(updates)
    pandas = _pandas_metadata(wanted)
    if (ds.schema.metadata or {}).get(b"pandas") != (pandas.encode() if pandas else None):
        store.require(CLIPS).update_schema_metadata({"pandas": pandas})
    return wanted


def _pandas_metadata(marks: Mapping[str, str]) -> str | None:
    """Schema metadata under pyarrow's "pandas" key that gives `to_pandas()` DataFrames the marks in
    `.attrs`; no column entries, so every column converts by its Arrow type as without it."""
    if not marks:
        return None
    return json.dumps(
        {
            "index_columns": [],
            "column_indexes": [],
            "columns": [],
            "attributes": {PANDAS_ATTRS_KEY: dict(marks)},
        },
        sort_keys=True,
    )

"""Placeholder marks in the clips table's Arrow schema.

A column computed by a model with random weights (the demo's and the tests' stand-ins) carries
`{"reelforge.placeholder": "<stage>/<model>"}` in its field metadata, so whoever reads clips.lance with
plain pyarrow, or any tool that shows Arrow field metadata, sees that its values are not real scores or
captions, without knowing reelforge's stage records. The records stay the source: the marks are derived
from them after every stage that merges model output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from store.contract import CLIPS
from store.lance_store import Store

PLACEHOLDER_KEY = "reelforge.placeholder"


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
    return wanted

"""Placeholder columns carry their mark in the clips table's Arrow schema, derived from the stage records:
set when a random-weight model wrote them, gone once a real model rewrote them."""

from __future__ import annotations

import lance
import pyarrow as pa
from caption_clips import clips_rows, photo_clips

from store import Store
from store.placeholders import PANDAS_ATTRS_KEY, PLACEHOLDER_KEY, mark_placeholders, schema_marks

AESTHETIC = ["aesthetic_mean", "aesthetic_min"]


def _score(store: Store, placeholder: bool) -> None:
    ids = store.read_clips(["clip_id"]).column("clip_id").to_pylist()
    values = [0.1 * i for i in range(len(ids))]
    store.add_columns(
        pa.table({"clip_id": ids, "aesthetic_mean": values, "aesthetic_min": values}),
        "score",
        config={},
        models={"aesthetic": {"placeholder": placeholder, "columns": AESTHETIC}},
    )


def test_marks_follow_the_records_into_the_arrow_schema(tmp_path):
    store = Store(tmp_path / "store")
    store.append("clips", clips_rows(photo_clips()))
    _score(store, placeholder=True)
    assert mark_placeholders(store) == dict.fromkeys(AESTHETIC, "score/aesthetic")
    # what a reader with plain pyarrow sees, reelforge not involved
    table = lance.dataset(store.clips_uri).to_table(columns=["clip_id", *AESTHETIC])
    assert table.schema.field("aesthetic_mean").metadata == {PLACEHOLDER_KEY.encode(): b"score/aesthetic"}
    assert table.schema.field("clip_id").metadata is None
    # pandas keeps no field metadata: the marks reach a DataFrame's attrs through the schema's pandas key
    frame = lance.dataset(store.clips_uri).to_table(columns=["clip_id", "aesthetic_mean"]).to_pandas()
    assert frame.attrs == {PANDAS_ATTRS_KEY: dict.fromkeys(AESTHETIC, "score/aesthetic")}
    assert list(frame.columns) == ["clip_id", "aesthetic_mean"] and frame["aesthetic_mean"].dtype == "float64"
    version = lance.dataset(store.clips_uri).version
    mark_placeholders(store)
    assert lance.dataset(store.clips_uri).version == version  # nothing to change: no commit

    # records that no longer call the columns placeholders (the columns themselves unchanged)
    record = store.stage_records()["score"]
    store.record("clips", "score", {**record, "models": {"aesthetic": {"placeholder": False}}})
    assert mark_placeholders(store) == {}
    assert schema_marks(lance.dataset(store.clips_uri).schema) == {}
    assert lance.dataset(store.clips_uri).to_table(columns=["clip_id"]).to_pandas().attrs == {}

    _score(store, placeholder=True)
    mark_placeholders(store)
    _score(store, placeholder=False)  # a real model rewrote the columns
    assert mark_placeholders(store) == {} and schema_marks(lance.dataset(store.clips_uri).schema) == {}

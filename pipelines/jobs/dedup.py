"""`duplicate_of` over the whole clips table: exact duplicates by content hash, near duplicates by a
vector index (curate/dedup.py, curate/near_search.py). The signature column streams from Lance in
batches; only the duplicates come back, and the column is written through the store's streaming
merge (originals get null)."""

from __future__ import annotations

import pyarrow as pa

from curate.config import DedupConfig
from curate.dedup import find_duplicates_streaming
from store import CLIPS, ROW_ID, Store

DEDUP_STAGE = "dedup"


def run_dedup(store: Store, cfg: DedupConfig, *, tower_placeholder: bool) -> int:
    """Add `duplicate_of` to every clip; returns how many clips are duplicates."""
    column = "clip_embedding" if cfg.signature == "clip_embedding" else "frame_signature"
    names = store.require(CLIPS).schema.names
    vectors = column if column in names else None
    version = store.require(CLIPS).version

    def batches():  # a fresh pass over one version each call: the index makes several
        return store.scan(
            CLIPS,
            ["clip_id", "content_hash", *([vectors] if vectors else [])],
            batch_rows=cfg.batch_rows,
            version=version,
            readahead=1,  # the search is far slower than the read: batches decoded ahead only wait in memory
        )

    duplicates = find_duplicates_streaming(batches, vectors, cfg)
    models = {"signature": column, "placeholder": column == "clip_embedding" and tower_placeholder}
    schema = pa.schema([(ROW_ID, pa.uint64()), ("clip_id", pa.string()), ("duplicate_of", pa.string())])
    store.add_columns(
        duplicates.cast(schema), DEDUP_STAGE, cfg.model_dump(mode="json"), models, schema=schema
    )
    return duplicates.num_rows

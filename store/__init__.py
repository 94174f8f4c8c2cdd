"""The data contract and the Lance store, free of Ray: curate/, caption/, train/ and pipelines/ import it.

- `store.contract`: every table's columns (type, nullability, writing stage, meaning) and what each stage
  reads and writes.
- `store.lance_store`: the project folder's Lance datasets, reads by row id, column staging and merges.
- `store.maintenance`: stats, compaction, index upkeep, vacuum and the job lock.
"""

from store.contract import CLIPS, VIDEOS, ContractError
from store.lance_store import (
    CLIPS_SCHEMA,
    ROW_ID,
    VIDEOS_SCHEMA,
    ClipReader,
    ColumnStaging,
    Store,
    StoreError,
    WorkList,
    conform,
    utc_now,
    write_fragment_json,
)

__all__ = [
    "CLIPS",
    "CLIPS_SCHEMA",
    "ROW_ID",
    "VIDEOS",
    "VIDEOS_SCHEMA",
    "ClipReader",
    "ColumnStaging",
    "ContractError",
    "Store",
    "StoreError",
    "WorkList",
    "conform",
    "utc_now",
    "write_fragment_json",
]

"""The data contract and the Lance store, free of Ray: curate/, caption/, train/ and pipelines/ import it.

- `store.contract`: every table's columns (type, nullability, writing stage, meaning) and what each stage
  reads and writes.
- `store.lance_store`: the project folder's Lance datasets: opening, appends, the split's journal, reads
  and work lists.
- `store.clip_reader`: a stage worker's reads of clips by row id.
- `store.column_staging`: how a column stage's rows are staged and merged into `clips`.
- `store.maintenance`: compaction, index upkeep and vacuum; `store.stats` what the tables hold;
  `store.locks` the job lock that keeps maintenance off running jobs.
"""

from store.clip_reader import ClipReader
from store.column_staging import ColumnStaging
from store.contract import CLIPS, VIDEOS, ContractError
from store.lance_store import (
    CLIPS_SCHEMA,
    ROW_ID,
    VIDEOS_SCHEMA,
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

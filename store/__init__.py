"""The data contract and the Lance store, free of Ray: curate/, caption/, train/ and pipelines/ import it.

- `store.columns`: every table's columns (type, nullability, writing stage, meaning), declared once;
  `store.contract`: what each stage reads and writes, the schemas and checks built from them.
- `store.lance_store`: the project folder's Lance datasets: opening, appends, the split's journal, reads
  and work lists.
- `store.clip_reader`: a stage worker's reads of clips by row id.
- `store.column_staging`: how a column stage's rows are staged and merged into `clips`.
- `store.maintenance`: compaction, index upkeep and vacuum; `store.stats` what the tables hold;
  `store.locks` the job lock that keeps maintenance off running jobs.
"""

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use, not with the package: every command reads its config, which imports
# store.config, and the package's Lance import (with pandas, ~0.35 s) would then come before a stage
# could start Ray, and on `--help`.
if TYPE_CHECKING:
    from store.clip_reader import ClipReader
    from store.column_staging import ColumnStaging
    from store.columns import CLIPS, VIDEOS, ContractError
    from store.errors import StoreError
    from store.lance_store import (
        CLIPS_SCHEMA,
        ROW_ID,
        VIDEOS_SCHEMA,
        Store,
        WorkList,
        conform,
        utc_now,
        write_fragment_json,
    )

_HOMES = {
    "ClipReader": "store.clip_reader",
    "ColumnStaging": "store.column_staging",
    "CLIPS": "store.columns",
    "VIDEOS": "store.columns",
    "ContractError": "store.columns",
    "StoreError": "store.errors",
    **dict.fromkeys(
        (
            "CLIPS_SCHEMA",
            "ROW_ID",
            "VIDEOS_SCHEMA",
            "Store",
            "WorkList",
            "conform",
            "utc_now",
            "write_fragment_json",
        ),
        "store.lance_store",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


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

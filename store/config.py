"""The `store` section of a pipeline config: where the project folder is and how it is maintained.

It lives here, not in pipelines/, so that `store.maintenance` (Ray-free) can take it; pipelines/config.py
composes it into the pipeline config like every other section.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StoreConfig(BaseModel):
    """Where the store is and when jobs compact its tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The project folder: it holds the `videos.lance` and `clips.lance` datasets.
    root: Path = Path("data/demo")
    # A job compacts a table when it ends if more than this many of its fragments are smaller than
    # target_rows_per_fragment (split writes one fragment per input file); 0 = jobs never compact.
    compact_fragment_bound: int = Field(default=64, ge=0)
    # Rows per fragment that compaction aims for. A fragment is the unit of a read task and of the
    # per-fragment merge of a column stage: large enough to keep fragments few, small enough to spread.
    target_rows_per_fragment: int = Field(default=20_000, ge=1)
    # `store vacuum` keeps the latest this-many versions of each table (1 = only the latest) ...
    keep_versions: int = Field(default=5, ge=1)
    # ... and every version younger than this many days (0 = age keeps nothing). Tagged versions are
    # always kept.
    keep_days: float = Field(default=0.0, ge=0)

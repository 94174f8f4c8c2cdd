"""`reelforge filter`: the `selected` column, from `filter.expression` evaluated by Lance.

One streaming scan: Lance computes `selected` as a projection (the expression, null counted as not
selected, and never a clip whose scoring failed); the rows stream through the store's column merge.
The expression and the clips version it was evaluated on are recorded, so training reads exactly
this selection."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import PipelineConfig
from store import CLIPS, ROW_ID, Store
from store.filters import FilterError, check_on, parse_filter, selects

FILTER_STAGE = "filter"
FILTER_KEY = "filter.expression"
SCAN_ROWS = 65536


@dataclass
class FilterSummary:
    """What one filter run selected."""

    expression: str
    total: int
    selected: int

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
        return [
            f"filter: {self.selected}/{self.total} clips selected by: {self.expression or '(everything scored)'}"
        ]


def selection_sql(condition: str) -> str:
    """`selected` as SQL: the condition holds (not null) and the clip was scored without error."""
    return f"{selects(condition)} AND score_error IS NULL" if condition else "score_error IS NULL"


def run_filter(config: PipelineConfig, expression: str | None = None) -> FilterSummary:
    """Evaluate the filter (filter.expression, or `expression` from --expression) over every clip."""
    store = Store(config.store.root)
    text = config.filter.expression if expression is None else expression
    clips = store.require(CLIPS)
    if "score_error" not in clips.schema.names:
        raise FilterError("no score columns in the clips table: run `reelforge score` first")
    checked = parse_filter(text, FILTER_KEY, clips.schema.names)
    check_on(clips, checked)
    counts = {"total": 0, "selected": 0}

    def selections() -> Iterator[pa.Table]:
        projection = {"clip_id": "clip_id", "selected": selection_sql(checked.source)}
        for batch in clips.to_batches(columns=projection, with_row_id=True, batch_size=SCAN_ROWS):
            counts["total"] += batch.num_rows
            counts["selected"] += int(pc.sum(batch["selected"]).as_py() or 0)
            yield pa.Table.from_batches([batch]).select([ROW_ID, "clip_id", "selected"])

    store.add_columns(
        selections(),
        FILTER_STAGE,
        {
            "expression": checked.sql,
            "source_expression": text,
            "evaluated_on_version": clips.version,
        },
        schema=pa.schema([(ROW_ID, pa.uint64()), ("clip_id", pa.string()), ("selected", pa.bool_())]),
    )
    return FilterSummary(expression=checked.sql, total=counts["total"], selected=counts["selected"])

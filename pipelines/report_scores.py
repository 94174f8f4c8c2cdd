"""`reelforge report --scores`: a text summary of the score columns and of the filter's rules.

For every numeric score column: count, nulls and percentiles; for flags: how many are set. For the
filter expression: how many clips each top-level rule fails, how many only that rule removes, and
the final selection. Columns computed with random placeholder weights are marked on every line.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import filtering
from pipelines.jobs.score import DEDUP_STAGE, FILTER_STAGE, SCORE_STAGE
from store import CLIPS_SCHEMA, Store

PERCENTILES = (5, 25, 50, 75, 95)
_NOT_SCORES = {
    "clip_embedding",
    "frame_signature",
    "content_hash",
    "score_error",
    "frames_sampled",
    "selected",
}


def placeholder_columns(store: Store) -> set[str]:
    """Columns whose producing model was recorded as a random-weight placeholder."""
    records = store.stage_records()
    marked: set[str] = set()
    for model in records.get(SCORE_STAGE, {}).get("models", {}).values():
        if isinstance(model, dict) and model.get("placeholder"):
            marked.update(model.get("columns", []))
    dedup = records.get(DEDUP_STAGE, {})
    if dedup.get("models", {}).get("placeholder"):
        marked.add("duplicate_of")
    return marked


def render(store: Store, expression: str | None = None) -> str:
    """The report. `expression` defaults to the one recorded by the last filter run."""
    ds = store.require("clips")
    records = store.stage_records()
    if SCORE_STAGE not in records:
        return "no scores yet: run `reelforge score` first"
    score_columns = [n for n in ds.schema.names if n not in CLIPS_SCHEMA.names]
    table = store.read_clips(columns=["clip_id", *score_columns])
    marked = placeholder_columns(store)
    mark = lambda name: "  [PLACEHOLDER: random weights]" if name in marked else ""  # noqa: E731
    lines = [f"clips: {table.num_rows} (dataset version {ds.version})"]
    if "score_error" in table.column_names:
        failed = table.num_rows - table["score_error"].null_count
        lines.append(f"clips whose scoring failed: {failed}")
    header = f"{'score':<20}{'n':>6}{'null':>6}" + "".join(f"{'p' + str(p):>11}" for p in PERCENTILES)
    lines += ["", header, "-" * len(header)]
    flags = []
    for name in score_columns:
        if name in _NOT_SCORES:
            continue
        column = table[name]
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            values = column.drop_null().to_numpy()
            cells = "".join(f"{v:>11.4g}" for v in np.percentile(values, PERCENTILES)) if len(values) else ""
            lines.append(f"{name:<20}{len(values):>6}{column.null_count:>6}{cells}{mark(name)}")
        elif pa.types.is_boolean(column.type):
            flags.append(
                f"{name}: {int(pc.sum(column).as_py() or 0)} of {len(column) - column.null_count}"
                + mark(name)
            )
    if "duplicate_of" in table.column_names:
        flags.append(f"duplicates: {len(table) - table['duplicate_of'].null_count}{mark('duplicate_of')}")
    if flags:
        lines += ["", "flags: " + "; ".join(flags)]
    if expression is None:
        expression = records.get(FILTER_STAGE, {}).get("config", {}).get("expression", "")
    lines += ["", *filter_lines(table, expression, marked)]
    if marked:
        lines += [
            "",
            "NOTE: columns marked PLACEHOLDER come from random weights (demo/tests); they are not real scores.",
        ]
    return "\n".join(lines)


def filter_lines(table: pa.Table, expression: str, marked: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    node = filtering.parse(expression)
    if node is None:
        return ["filter: no expression (every clip scored without error is selected)"]
    lines = [f"filter: {node}"]
    rule_masks = [filtering.selection(str(rule), table) for rule in filtering.rules(node)]
    for i, (rule, mask) in enumerate(zip(filtering.rules(node), rule_masks, strict=True)):
        fails = pc.invert(mask)
        others = [m for j, m in enumerate(rule_masks) if j != i]
        only = fails
        for other in others:
            only = pc.and_(only, other)
        uses_placeholder = filtering.columns(rule) & marked
        lines.append(
            f"  {rule!s:<44} removes {int(pc.sum(fails).as_py() or 0):>5}"
            f"   (only this rule: {int(pc.sum(only).as_py() or 0)})"
            + ("  [PLACEHOLDER input]" if uses_placeholder else "")
        )
    selected = filtering.selection(expression, table)
    if "score_error" in table.column_names:
        selected = pc.and_(selected, pc.is_null(table["score_error"]).combine_chunks())
    lines.append(f"  selected: {int(pc.sum(selected).as_py() or 0)} of {table.num_rows}")
    return lines

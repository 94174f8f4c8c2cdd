"""`reelforge report --scores`: a text summary of the score columns and of the filter's rules.

For every numeric score column: count, nulls and percentiles; for flags: how many are set. For the
filter expression: how many clips each top-level rule fails, how many only that rule removes, and
the final selection. Columns computed with random placeholder weights are marked on every line.

Everything streams over one dataset version, so memory does not grow with the clips: counts come
from `count_rows`, the rule counts are summed batch by batch, and percentiles come from a fixed-bin
histogram (QUANTILE_BINS bins between the column's min and max, found by a first pass) that also
keeps the smallest and largest value of each bin. A percentile is then interpolated between the
values of its bin: exact when the bin holds one or two distinct values, otherwise within that bin's
spread, at most (max - min) / QUANTILE_BINS from numpy's linear percentile.
"""

from __future__ import annotations

from collections.abc import Sequence

import lance
import numpy as np
import pyarrow as pa

from curate.camera import LABELS
from pipelines.jobs.filter import FILTER_STAGE
from pipelines.jobs.score import SCORE_STAGE
from pipelines.report.filter_rules import filter_lines
from pipelines.report.scan import SCAN_ROWS, finite_ranges, floats, streaming
from store import CLIPS, CLIPS_SCHEMA, Store
from store.placeholders import placeholder_columns

PERCENTILES = (5, 25, 50, 75, 95)
QUANTILE_BINS = 1 << 14
_NOT_SCORES = {
    "clip_embedding",
    "frame_signature",
    "content_hash",
    "score_error",
    "frames_sampled",
    "selected",
}


class Quantiles:
    """Streamed percentiles of one column in [lo, hi]: bin counts plus each bin's smallest and largest
    value (see the module docstring for the accuracy)."""

    def __init__(self, lo: float, hi: float, bins: int = QUANTILE_BINS):
        self.lo, self.bins = lo, bins
        self.width = (hi - lo) / bins if hi > lo else 1.0
        self.counts = np.zeros(bins, np.int64)
        self.smallest = np.full(bins, np.inf)
        self.largest = np.full(bins, -np.inf)

    def add(self, values: np.ndarray) -> None:
        """Add the finite values to the histogram."""
        values = values[np.isfinite(values)]
        where = np.clip(((values - self.lo) / self.width).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(where, minlength=self.bins)
        np.minimum.at(self.smallest, where, values)
        np.maximum.at(self.largest, where, values)

    def _nth(self, cumulative: np.ndarray, k: int) -> float:
        """The k-th smallest value (0-based), spread evenly between its bin's smallest and largest."""
        b = int(np.searchsorted(cumulative, k, side="right"))
        count, within = int(self.counts[b]), k - int(cumulative[b] - self.counts[b])
        if count == 1:
            return float(self.smallest[b])
        return float(self.smallest[b] + (self.largest[b] - self.smallest[b]) * within / (count - 1))

    def percentiles(self, ps: Sequence[float]) -> list[float]:
        """numpy's default (linear) percentiles of the values added."""
        cumulative = np.cumsum(self.counts)
        n = int(cumulative[-1])
        out = []
        for p in ps:
            rank = p / 100 * (n - 1)
            k = int(np.floor(rank))
            low = self._nth(cumulative, k)
            high = self._nth(cumulative, min(k + 1, n - 1))
            out.append(low + (rank - k) * (high - low))
        return out


def _batches(ds: lance.LanceDataset, columns: Sequence[str]):
    return ds.to_batches(columns=list(columns), batch_size=SCAN_ROWS, strict_batch_size=True)


def render(store: Store, expression: str | None = None) -> str:  # noqa: PLR0912 — one section of the report per branch
    """The report. `expression` defaults to the one recorded by the last filter run."""
    ds = streaming(store.require(CLIPS))  # one version for every pass below
    records = store.stage_records()
    if SCORE_STAGE not in records:
        return "no scores yet: run `reelforge score` first"
    schema = ds.schema
    score_columns = [n for n in schema.names if n not in CLIPS_SCHEMA.names]
    numeric = [
        n
        for n in score_columns
        if n not in _NOT_SCORES
        and (pa.types.is_floating(schema.field(n).type) or pa.types.is_integer(schema.field(n).type))
    ]
    total = ds.count_rows()
    marked = set(placeholder_columns(records)) & set(score_columns)
    mark = lambda name: "  [PLACEHOLDER: random weights]" if name in marked else ""  # noqa: E731
    lines = [f"clips: {total} (dataset version {ds.version})"]
    if "score_error" in score_columns:
        lines.append(f"clips whose scoring failed: {ds.count_rows(filter='score_error IS NOT NULL')}")
    header = f"{'score':<20}{'n':>6}{'null':>6}" + "".join(f"{'p' + str(p):>11}" for p in PERCENTILES)
    lines += ["", header, "-" * len(header)]

    ranges = finite_ranges(ds, numeric)
    quantiles = {c: Quantiles(*ranges[c]) for c in ranges}
    nulls = dict.fromkeys(numeric, 0)
    for batch in _batches(ds, numeric) if numeric else ():
        for name in numeric:
            nulls[name] += batch[name].null_count
            if name in quantiles:
                quantiles[name].add(floats(batch[name]))
    for name in numeric:
        cells = (
            "".join(f"{v:>11.4g}" for v in quantiles[name].percentiles(PERCENTILES))
            if name in quantiles
            else ""
        )
        lines.append(f"{name:<20}{total - nulls[name]:>6}{nulls[name]:>6}{cells}{mark(name)}")
    flags = []
    for name in score_columns:
        if name not in _NOT_SCORES and pa.types.is_boolean(schema.field(name).type):
            true = ds.count_rows(filter=f"{name} = true")
            flags.append(f"{name}: {true} of {ds.count_rows(filter=f'{name} IS NOT NULL')}{mark(name)}")
    if "duplicate_of" in score_columns:
        flags.append(f"duplicates: {ds.count_rows(filter='duplicate_of IS NOT NULL')}{mark('duplicate_of')}")
    if flags:
        lines += ["", "flags: " + "; ".join(flags)]
    if "camera_motion" in score_columns:
        counts = {label: ds.count_rows(filter=f"camera_motion = '{label}'") for label in LABELS}
        counts["not measured"] = ds.count_rows(filter="camera_motion IS NULL")
        lines += ["", "camera_motion: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)]
    if expression is None:
        expression = records.get(FILTER_STAGE, {}).get("config", {}).get("expression", "")
    lines += ["", *filter_lines(ds, expression, marked)]
    if marked:
        lines += [
            "",
            "NOTE: columns marked PLACEHOLDER come from random weights (demo/tests); they are not real scores.",
        ]
    return "\n".join(lines)

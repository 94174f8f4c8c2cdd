"""The score sections: a histogram of every score with the filter's thresholds drawn on it, the counts of
every flag, and the highest and lowest clips of every score.

Histograms are counted batch by batch on fixed bin edges (from a first pass over the value ranges);
the highest and lowest clips are running top-n selections of row ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.report.cards import Card
from pipelines.report.media import histogram_counts_svg, histogram_edges
from pipelines.report.scan import Lowest, ScanBatch, finite_ranges, floats
from store import CLIPS_SCHEMA
from store.filters import Threshold, parse_filter

# Scores always visible on a card (the filter's columns, else the first few); the rest fold away.
KEY_SCORES = 4
FAILED_CLIPS = 50  # clips whose scoring failed, listed with their error
# A computed column of the streamed pass (no clips column starts with "__").
_FAILED = "__score_failed"


def thresholds(expression: str) -> list[Threshold]:
    """Every `column <op> number` comparison of a recorded filter expression, column first."""
    return parse_filter(expression, "filter.expression").thresholds


def score_columns(table_schema: pa.Schema, records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Floating-point scalar columns added by stages: the scores (counts and ids are not scores)."""
    added: list[str] = []
    for record in records.values():
        added += [c for c in record.get("columns", []) if c not in added]
    names = [c for c in table_schema.names if c not in CLIPS_SCHEMA.names]
    ordered = [c for c in added if c in names] + [c for c in names if c not in added]
    return [c for c in ordered if pa.types.is_floating(table_schema.field(c).type)]


def flag_columns(table_schema: pa.Schema) -> list[str]:
    """The boolean score columns of the clips table (stage flags, not the contract's columns)."""
    return [
        c
        for c in table_schema.names
        if c not in CLIPS_SCHEMA.names and c != "selected" and pa.types.is_boolean(table_schema.field(c).type)
    ]


@dataclass
class FilterFacts:
    """The filter the report draws: the recorded one when the filter stage ran, else the configured one."""

    expression: str
    applied: bool  # recorded with the dataset: `selected` holds its result
    at: str
    marks: list[Threshold]

    @classmethod
    def of(cls, records: Mapping[str, Mapping[str, Any]], names: set[str], configured: str) -> FilterFacts:
        """The filter as last run (or as configured when it has not run)."""
        record = records.get("filter")
        expression = str(record["config"].get("expression", "")) if record is not None else configured
        return cls(
            expression=expression,
            applied=record is not None and "selected" in names,
            at=str(record.get("at", "")) if record is not None else "",
            marks=thresholds(expression) if expression else [],
        )


@dataclass
class Histogram:
    """One score column's histogram with the filter's thresholds marked."""

    column: str
    svg: bytes
    marks: list[Threshold]
    rules: str  # the thresholds as text, or "no threshold"


@dataclass
class Flag:
    """How many clips a boolean column marks true, false and missing."""

    column: str
    count_true: int
    count_false: int
    count_missing: int


@dataclass
class Scores:
    """The report's scores section."""

    columns: list[str]
    key_columns: list[str]  # shown on every card; the other scores fold away
    filter_expression: str
    filter_applied: bool
    histograms: list[Histogram]
    flags: list[Flag]
    failed: int  # clips whose scoring failed
    failed_clips: list[tuple[str, str]]  # the first FAILED_CLIPS of them: (clip_id, error)


@dataclass
class Extremes:
    """The clips with the highest and lowest values of one score column."""

    column: str
    highest: list[Card]
    lowest: list[Card]
    open: bool  # a key score: unfolded


@dataclass
class _ScoreStats:
    """One score column over a streamed pass: histogram counts (all and kept) on fixed edges, and the
    row ids of its highest and lowest values."""

    edges: np.ndarray
    marks: list[Threshold]
    highest: Lowest
    lowest: Lowest
    counts: np.ndarray = field(init=False)
    kept: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.edges) - 1, np.int64)
        self.kept = np.zeros(len(self.edges) - 1, np.int64)

    def add(self, values: np.ndarray, ids: np.ndarray, selected: np.ndarray | None) -> None:
        finite = np.isfinite(values)
        self.counts += np.histogram(values[finite], self.edges)[0]
        if selected is not None:
            self.kept += np.histogram(values[finite & selected], self.edges)[0]
        self.highest.add(-values[finite], ids[finite])
        self.lowest.add(values[finite], ids[finite])


class ScoresPass:
    """Histograms, extremes, flag counts and scoring failures, batch by batch."""

    def __init__(
        self,
        ds: lance.LanceDataset | None,
        columns: list[str],
        flags: list[str],
        filter_facts: FilterFacts,
        extremes: int,
    ):
        self.columns, self.flags, self.filter = columns, flags, filter_facts
        self.errors_recorded = ds is not None and "score_error" in ds.schema.names
        # the first pass: every score's range fixes its histogram's bin edges
        ranges = finite_ranges(ds, columns) if ds is not None else {}
        marks = filter_facts.marks
        self.stats = {
            column: _ScoreStats(
                histogram_edges(lo, hi, [(t.op, t.value, t.is_rule) for t in marks if t.column == column]),
                [t for t in marks if t.column == column],
                Lowest(extremes),
                Lowest(extremes),
            )
            for column, (lo, hi) in ranges.items()
        }
        self.flag_counts = {c: [0, 0] for c in flags}  # true, null
        self.errors = 0

    def projection(self) -> dict[str, str]:
        """The columns this pass reads, as {name: SQL}."""
        wanted = {c: c for c in [*self.stats, *self.flags]}
        if self.errors_recorded:
            wanted[_FAILED] = "score_error IS NOT NULL"
        return wanted

    def add(self, batch: ScanBatch) -> None:
        """Add one scanned batch to the statistics and flag counts."""
        columns = batch.columns
        for column, stat in self.stats.items():
            stat.add(floats(columns[column]), batch.ids, batch.selected)
        for column in self.flags:
            self.flag_counts[column][0] += int(
                pc.sum(pc.cast(pc.fill_null(columns[column], False), pa.int64())).as_py() or 0
            )
            self.flag_counts[column][1] += columns[column].null_count
        if self.errors_recorded:
            self.errors += int(pc.sum(pc.cast(columns[_FAILED], pa.int64())).as_py() or 0)

    def sampled(self) -> list[np.ndarray]:
        """Row ids of the highest and lowest clips of every score."""
        return [ids for s in self.stats.values() for ids in (s.highest.ids, s.lowest.ids)]

    def scores(
        self, ds: lance.LanceDataset | None, placeholders: Mapping[str, str], scored: bool, total: int
    ) -> Scores:
        """The score section; `scored`: the score stage ran (its failed clips are then listed)."""
        failed_clips: list[tuple[str, str]] = []
        if scored and self.errors and ds is not None:
            head = ds.to_table(
                columns=["clip_id", "score_error"], filter="score_error IS NOT NULL", limit=FAILED_CLIPS
            )
            failed_clips = list(
                zip(head["clip_id"].to_pylist(), head["score_error"].to_pylist(), strict=True)
            )
        histograms = []
        for column, stat in self.stats.items():
            title = column + ("  [placeholder]" if column in placeholders else "")
            svg = histogram_counts_svg(
                stat.counts,
                stat.edges,
                title,
                [(t.op, t.value, t.is_rule) for t in stat.marks],
                stat.kept if self.filter.applied else None,
            )
            rules = "; ".join(t.text for t in stat.marks) or "no threshold"
            histograms.append(Histogram(column, svg, stat.marks, rules))
        in_filter = {t.column for t in self.filter.marks}
        return Scores(
            columns=self.columns,
            key_columns=[c for c in self.columns if c in in_filter] or self.columns[:KEY_SCORES],
            filter_expression=self.filter.expression,
            filter_applied=self.filter.applied,
            histograms=histograms,
            flags=[
                Flag(c, true, total - true - nulls, nulls) for c, (true, nulls) in self.flag_counts.items()
            ],
            failed=self.errors,
            failed_clips=failed_clips,
        )

    def extremes(self, cards: Mapping[int, Card], key_columns: list[str]) -> list[Extremes]:
        """The highest and lowest clips of every score column, key columns unfolded."""
        return [
            Extremes(
                column,
                [cards[int(r)] for r in stat.highest.ids],
                [cards[int(r)] for r in stat.lowest.ids],
                open=column in key_columns,
            )
            for column, stat in self.stats.items()
        ]

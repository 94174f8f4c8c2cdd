"""The filter's per-rule view: what each top-level rule of an expression removes, alone and in all."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import lance
import numpy as np
import pyarrow.compute as pc

from pipelines.jobs.filter import selection_sql
from pipelines.report.scan import SCAN_ROWS
from store.filters import parse_filter, selects


@dataclass
class RuleCount:
    """How many clips one rule of the filter removes."""

    rule: str
    removes: int  # clips that fail the rule
    only: int  # clips that fail this rule and pass every other one
    placeholder_input: bool  # the rule reads a column of a random-weight model


@dataclass
class FilterRules:
    """The filter expression split into its rules, with the clips each removes."""

    sql: str  # the expression as the filter evaluates it; empty without one
    rules: list[RuleCount]
    selected: int
    total: int


def filter_rules(ds: lance.LanceDataset, expression: str, marked: Set[str] = frozenset()) -> FilterRules:
    """The counts of every top-level rule of `expression` in one scan: Lance evaluates every rule as a
    projected boolean column, and the counts add up batch by batch. `marked`: placeholder columns."""
    checked = parse_filter(expression, "filter.expression", ds.schema.names)
    if checked.tree is None:
        return FilterRules("", [], 0, 0)
    rules = checked.rules
    projection = {f"rule_{i}": selects(rule) for i, rule in enumerate(rules)}
    scored = "score_error" in ds.schema.names
    projection["chosen"] = selection_sql(checked.source) if scored else selects(checked.source)
    fails = np.zeros(len(rules), np.int64)
    only = np.zeros(len(rules), np.int64)
    selected = total = 0
    for batch in ds.to_batches(columns=projection, batch_size=SCAN_ROWS):
        total += batch.num_rows
        passed = np.stack(
            [batch[f"rule_{i}"].to_numpy(zero_copy_only=False) for i in range(len(rules))]
        ).astype(bool)
        fails += np.count_nonzero(~passed, axis=1)
        # fails this rule and passes every other one
        only += np.count_nonzero(~passed & (passed.sum(axis=0) == len(rules) - 1), axis=1)
        selected += int(pc.sum(batch["chosen"]).as_py() or 0)
    counts = [
        RuleCount(rule, int(fail), int(alone), bool(parse_filter(rule, "filter.expression").columns & marked))
        for rule, fail, alone in zip(rules, fails, only, strict=True)
    ]
    return FilterRules(checked.sql, counts, selected, total)


def filter_lines(ds: lance.LanceDataset, expression: str, marked: Set[str] = frozenset()) -> list[str]:
    """The per-rule view as the lines of `reelforge report --scores`."""
    found = filter_rules(ds, expression, marked)
    if not found.sql:
        return ["filter: no expression (every clip scored without error is selected)"]
    lines = [f"filter: {found.sql}"]
    lines.extend(
        f"  {rule.rule:<44} removes {rule.removes:>5}   (only this rule: {rule.only})"
        + ("  [PLACEHOLDER input]" if rule.placeholder_input else "")
        for rule in found.rules
    )
    lines.append(f"  selected: {found.selected} of {found.total}")
    return lines

"""The one filter dialect: Lance SQL over the clips table's columns.

`filter.expression`, `caption.filter`, `train.data.filter` and `train.vae_train.filter` are all the
`WHERE` part of a Lance scan, for example

    aesthetic_mean >= 4.5 AND motion > 0.002 AND text_area < 0.05 AND duplicate_of IS NULL

Lance evaluates them (DataFusion's SQL); this module only reads them, with sqlglot, to check them
before a job starts and to explain them afterwards:
- a filter runs no code: it may name columns, literals, operators and built-in scalar functions, never
  a subquery, an aggregate or a window;
- a syntax error or an unknown column is a one-line error naming the config key, and for a column, the
  columns there are;
- the report's per-rule view reads the top-level AND terms (each one removes clips on its own) and the
  `column <op> number` comparisons (drawn as thresholds on the histograms).
A comparison with a null is null, and a null result never selects: a clip whose score is missing is
never chosen by a rule on that score (`selects()` spells that out for Lance projections).

The hand-written language this replaces was SQL but for two spellings: `==` (Lance takes it, so it
stays allowed) and double-quoted strings, which SQL reads as column names; those get an error showing
the SQL to write.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import lance
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

__all__ = ["Filter", "FilterError", "Threshold", "check_on", "parse_filter", "selects"]


class FilterError(ValueError):
    """A filter that does not parse, runs more than column expressions or names an unknown column."""


@dataclass(frozen=True)
class Threshold:
    """One comparison of a column with a number, column on the left (`motion > 0.002`)."""

    column: str
    op: str
    value: float
    is_rule: bool  # a top-level AND term by itself: it removes clips on its own

    @property
    def text(self) -> str:
        """The threshold as SQL text."""
        return f"{self.column} {self.op} {self.value:g}"


# Nodes that would make a filter more than an expression over one row's columns (Anonymous: a
# function sqlglot does not know, Dot: a method call; neither is a SQL built-in).
_FORBIDDEN = (
    exp.Select,
    exp.Subquery,
    exp.AggFunc,
    exp.Window,
    exp.Star,
    exp.Placeholder,
    exp.Anonymous,
    exp.Dot,
)
_COMPARISONS: dict[type[exp.Expr], str] = {
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.EQ: "=",
    exp.NEQ: "!=",
}
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "!=": "!="}
_DOUBLE_QUOTED = re.compile(r'"([^"]*)"')
_CLASS = re.compile(r"<class '[\w.]+\.(\w+)'>")  # sqlglot names its node classes in errors
_RUST_LOCATION = re.compile(r",\s*\S+\.rs:\d+:\d+")


@dataclass(frozen=True)
class Filter:
    """A checked filter: the text as written (what Lance runs) and its parse."""

    key: str  # the config key it came from, named in every error
    source: str
    tree: exp.Expr | None  # None: the empty filter, which selects everything

    @property
    def sql(self) -> str:
        """The canonical spelling (recorded with the filter's result; Lance accepts it)."""
        return "" if self.tree is None else self.tree.sql()

    @property
    def columns(self) -> set[str]:
        """The columns the expression reads."""
        if self.tree is None:
            return set()
        return {c.name for c in self.tree.find_all(exp.Column)}

    @property
    def rules(self) -> list[str]:
        """The top-level AND terms, each as SQL: every one must hold for a clip to be selected."""
        if self.tree is None:
            return []
        return [term.sql() for term in _and_terms(self.tree)]

    @property
    def thresholds(self) -> list[Threshold]:
        """Every `column <op> number` comparison at any depth, column first."""
        if self.tree is None:
            return []
        rules = {id(t) for t in _and_terms(self.tree)}
        found = []
        for node in self.tree.find_all(*_COMPARISONS, bfs=False):
            op = _COMPARISONS[type(node)]
            left, right = node.this, node.expression
            if isinstance(left, exp.Literal | exp.Neg) and isinstance(right, exp.Column):
                left, right, op = right, left, _FLIPPED[op]
            value = _number(right)
            if isinstance(left, exp.Column) and value is not None:
                found.append(Threshold(left.name, op, value, id(node) in rules))
        return found


def parse_filter(text: str | None, key: str, columns: Collection[str] | None = None) -> Filter:
    """Check `text` (the value of config `key`) against the table's `columns`; raise FilterError.
    `columns=None` skips the column check (an expression recorded by a run that checked it)."""
    if text is None or not text.strip():
        return Filter(key, text or "", None)
    try:
        statements = sqlglot.parse(text, read=None)
    except (ParseError, TokenError) as err:
        first = _CLASS.sub(r"\1", str(err).splitlines()[0])
        raise FilterError(f"{key} {text!r} is not SQL: {first}") from None
    tree = statements[0] if len(statements) == 1 else None
    if tree is None or isinstance(tree, exp.Select | exp.Command):
        raise FilterError(f"{key} {text!r} is not a SQL condition (write only what follows WHERE)")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise FilterError(
                f"{key} may only use columns, literals, operators and scalar functions; "
                f"{node.sql()!r} is not allowed"
            )
    known = None if columns is None else set(columns)
    for column in tree.find_all(exp.Column):
        if known is None or column.name in known:
            continue
        if column.this.args.get("quoted"):
            fixed = _DOUBLE_QUOTED.sub(lambda m: "'" + m.group(1).replace("'", "''") + "'", text)
            raise FilterError(
                f'{key}: "{column.name}" in double quotes is a column name in SQL; '
                f"for a string write single quotes: {fixed}"
            )
        raise FilterError(f"{key} names unknown column {column.name!r}; columns: {', '.join(sorted(known))}")
    return Filter(key, text, tree)


def check_on(dataset: lance.LanceDataset, checked: Filter) -> None:
    """Have Lance plan the filter on `dataset`: catches what only the column types tell (a number
    compared with a string, a condition that is not boolean, a function DataFusion lacks)."""
    if checked.tree is None:
        return
    try:
        dataset.scanner(columns=[], filter=checked.source, with_row_id=True).explain_plan()
    except (ValueError, OSError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        reason = _RUST_LOCATION.sub("", reason.replace("Invalid user input: ", ""))
        raise FilterError(f"{checked.key} {checked.source!r} cannot run on these clips: {reason}") from None


def selects(condition: str) -> str:
    """SQL that is true exactly where `condition` is true (false where it is false or null)."""
    return f"coalesce(({condition}), false)"


def _and_terms(tree: exp.Expr) -> list[exp.Expr]:
    inner = tree.unnest()
    if isinstance(inner, exp.And):
        return [t for part in inner.flatten() for t in _and_terms(part)]
    return [inner]


def _number(node: exp.Expr) -> float | None:
    if isinstance(node, exp.Neg):
        inner = _number(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    return None

"""Declarative clip selection: a small, safe expression language over score columns.

    aesthetic_mean >= 4.5 and motion > 0.002 and text_area < 0.05 and duplicate_of is null

Grammar (keywords are case-insensitive; nothing is ever passed to eval):
    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" expr ")" | column "is" ["not"] "null" | operand [op operand]
    op         := "<" | "<=" | ">" | ">=" | "==" | "=" | "!="
    operand    := column | number | 'string' | "string" | true | false

It is evaluated with pyarrow.compute over a table. Comparisons with a null are null, and a null
result is not selected, so a clip whose score is missing is never selected by a rule on that score.
The top-level `and` terms are the rules whose individual effect `reelforge report --scores` shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


class FilterExpressionError(ValueError):
    """An expression that does not parse or names a column the table does not have."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op><=|>=|==|!=|<|>|=)|(?P<paren>[()])|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
_OPS = {
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
    "==": pc.equal,
    "=": pc.equal,
    "!=": pc.not_equal,
}
_KEYWORDS = {"and", "or", "not", "is", "null", "true", "false"}


@dataclass(frozen=True)
class Column:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Literal:
    value: float | str | bool

    def __str__(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, str):
            return "'" + self.value + "'"
        return repr(self.value)


@dataclass(frozen=True)
class Compare:
    op: str
    left: Column | Literal
    right: Column | Literal

    def __str__(self) -> str:
        return f"{self.left} {'==' if self.op == '=' else self.op} {self.right}"


@dataclass(frozen=True)
class IsNull:
    column: Column
    negated: bool

    def __str__(self) -> str:
        return f"{self.column} is {'not ' if self.negated else ''}null"


@dataclass(frozen=True)
class Truthy:
    """A bare boolean column or literal used as a condition."""

    operand: Column | Literal

    def __str__(self) -> str:
        return str(self.operand)


@dataclass(frozen=True)
class Not:
    inner: Node

    def __str__(self) -> str:
        return f"not {_wrap(self.inner)}"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    terms: tuple[Node, ...]

    def __str__(self) -> str:
        return f" {self.op} ".join(_wrap(t) for t in self.terms)


Node = Compare | IsNull | Truthy | Not | BoolOp


def _wrap(node: Node) -> str:
    return f"({node})" if isinstance(node, BoolOp) else str(node)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterExpressionError(f"unexpected character at position {pos}: {text[pos : pos + 12]!r}")
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        tokens.append((kind, value))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FilterExpressionError(f"expression ends too early: {self.text!r}")
        self.i += 1
        return tok

    def accept_kw(self, word: str) -> bool:
        if self.peek() == ("kw", word):
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise FilterExpressionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return node

    def expr(self) -> Node:
        terms = [self.and_expr()]
        while self.accept_kw("or"):
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else BoolOp("or", tuple(terms))

    def and_expr(self) -> Node:
        terms = [self.not_expr()]
        while self.accept_kw("and"):
            terms.append(self.not_expr())
        return terms[0] if len(terms) == 1 else BoolOp("and", tuple(terms))

    def not_expr(self) -> Node:
        if self.accept_kw("not"):
            return Not(self.not_expr())
        return self.primary()

    def primary(self) -> Node:
        if self.peek() == ("paren", "("):
            self.take()
            node = self.expr()
            if self.take() != ("paren", ")"):
                raise FilterExpressionError(f"missing ')' in {self.text!r}")
            return node
        left = self.operand()
        if self.accept_kw("is"):
            negated = self.accept_kw("not")
            if not self.accept_kw("null") or not isinstance(left, Column):
                raise FilterExpressionError(f"'is' must be '<column> is [not] null' in {self.text!r}")
            return IsNull(left, negated)
        tok = self.peek()
        if tok is not None and tok[0] == "op":
            self.take()
            return Compare(tok[1], left, self.operand())
        return Truthy(left)

    def operand(self) -> Column | Literal:
        kind, value = self.take()
        if kind == "num":
            return Literal(float(value))
        if kind == "str":
            return Literal(value[1:-1])
        if kind == "kw" and value in ("true", "false"):
            return Literal(value == "true")
        if kind == "name":
            return Column(value)
        raise FilterExpressionError(f"expected a column, number or string, got {value!r} in {self.text!r}")


def parse(expression: str) -> Node | None:
    """The parsed expression, or None for an empty one (select everything)."""
    if not expression.strip():
        return None
    return _Parser(expression).parse()


def columns(node: Node | None) -> set[str]:
    if node is None:
        return set()
    if isinstance(node, Compare):
        return {o.name for o in (node.left, node.right) if isinstance(o, Column)}
    if isinstance(node, IsNull):
        return {node.column.name}
    if isinstance(node, Truthy):
        return {node.operand.name} if isinstance(node.operand, Column) else set()
    if isinstance(node, Not):
        return columns(node.inner)
    return set().union(*(columns(t) for t in node.terms))


def rules(node: Node | None) -> list[Node]:
    """The top-level `and` terms: the rules a report counts one by one."""
    if node is None:
        return []
    return list(node.terms) if isinstance(node, BoolOp) and node.op == "and" else [node]


def evaluate(node: Node | None, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Boolean mask with nulls (Kleene logic); use selection() for the final yes/no."""
    if node is None:
        return pa.array([True] * table.num_rows, type=pa.bool_())
    missing = sorted(columns(node) - set(table.column_names))
    if missing:
        raise FilterExpressionError(
            f"filter names unknown column(s) {missing}; available: {', '.join(sorted(table.column_names))}"
        )
    return _eval(node, table)


def _value(operand: Column | Literal, table: pa.Table):
    return table[operand.name] if isinstance(operand, Column) else pa.scalar(operand.value)


def _eval(node: Node, table: pa.Table):
    if isinstance(node, Compare):
        try:
            return _OPS[node.op](_value(node.left, table), _value(node.right, table))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as err:
            raise FilterExpressionError(f"cannot evaluate '{node}': {err}") from err
    if isinstance(node, IsNull):
        result = pc.is_null(table[node.column.name])
        return pc.invert(result) if node.negated else result
    if isinstance(node, Truthy):
        value = _value(node.operand, table)
        if isinstance(node.operand, Literal):
            return pa.array([bool(node.operand.value)] * table.num_rows, type=pa.bool_())
        if not pa.types.is_boolean(value.type):
            raise FilterExpressionError(f"'{node}' is not a boolean column: compare it with a value")
        return value
    if isinstance(node, Not):
        return pc.invert(_eval(node.inner, table))
    combine = pc.and_kleene if node.op == "and" else pc.or_kleene
    result = _eval(node.terms[0], table)
    for term in node.terms[1:]:
        result = combine(result, _eval(term, table))
    return result


def selection(expression: str, table: pa.Table) -> pa.Array:
    """Final selection mask (nulls count as not selected) of `expression` over `table`."""
    mask = evaluate(parse(expression), table)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.fill_null(mask, False)


def canonical(expression: str) -> str:
    """The expression re-printed from its parse tree (recorded with the dataset version)."""
    node = parse(expression)
    return "" if node is None else str(node)

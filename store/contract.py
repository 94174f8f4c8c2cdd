"""The data contract: every table, every column (declared in store/columns.py), and which stage reads
and writes it, declared once.

The store builds its schemas from here, every stage takes its output schema from here, the store refuses
a column a stage did not declare, `tests/store/test_contract.py` checks the declarations against the
code, and the README's column table is generated from here (`markdown()`).

Nothing in this package imports Ray: curate/, caption/, train/ and pipelines/ may all import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from store.columns import (
    CLIP_COLUMNS,
    CLIPS,
    EVAL_COLUMNS,
    EVALS,
    MODEL_WIDTH,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    VIDEO_COLUMNS,
    VIDEOS,
    Column,
    ContractError,
)

__all__ = [
    "CLIPS",
    "COLUMNS",
    "EVALS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "STAGES",
    "VIDEOS",
    "Column",
    "ContractError",
    "StageColumns",
    "cast_to_contract",
    "check_written",
    "markdown",
    "schema",
    "stage_schema",
    "table_schema",
]

COLUMNS: dict[str, dict[str, Column]] = {
    VIDEOS: {c.name: c for c in VIDEO_COLUMNS},
    CLIPS: {c.name: c for c in CLIP_COLUMNS},
    EVALS: {c.name: c for c in EVAL_COLUMNS},
}


@dataclass(frozen=True)
class StageColumns:
    """What a stage reads and writes (on `clips` unless said otherwise)."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    table: str = CLIPS


def _written_by(stage: str, table: str = CLIPS) -> tuple[str, ...]:
    return tuple(c.name for c in COLUMNS[table].values() if c.stage == stage)


# `filter` reads whichever score columns its expression names; `train` reads the caption column it is
# configured with. The key column (clip_id) is read by every stage.
STAGES: dict[str, StageColumns] = {
    st.name: st
    for st in (
        StageColumns("split", reads=(), writes=_written_by("split", CLIPS) + _written_by("split", VIDEOS)),
        StageColumns("score", reads=("clip_id", "video"), writes=_written_by("score")),
        StageColumns(
            "dedup",
            reads=("clip_id", "content_hash", "clip_embedding", "frame_signature"),
            writes=_written_by("dedup"),
        ),
        StageColumns("filter", reads=("clip_id", "score_error"), writes=_written_by("filter")),
        StageColumns(
            "caption",
            reads=("clip_id", "video", "selected", "caption_camera", "caption_motion"),
            writes=_written_by("caption"),
        ),
        StageColumns(
            "encode",
            reads=("clip_id", "video", "width", "height", "num_frames", "caption"),
            writes=_written_by("encode"),
        ),
        StageColumns(
            "train",
            reads=(
                "clip_id",
                "video",
                "width",
                "height",
                "num_frames",
                "caption",
                "latent",
                "latent_shape",
                "latent_bucket",
                "text_emb",
                "text_shape",
                "text_len",
            ),
            writes=(),
        ),
    )
}


def schema(table: str) -> pa.Schema:
    """The base schema of a table: the columns the split stage writes (later stages add theirs)."""
    fields = [c.field() for c in COLUMNS[table].values() if c.stage == "split"]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION})


def table_schema(table: str, widths: dict[str, int] | None = None) -> pa.Schema:
    """Every column of a table written whole by one stage (evals); `widths` fills MODEL_WIDTH lists."""
    widths = widths or {}
    fields = [c.field(widths.get(c.name)) for c in COLUMNS[table].values()]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION})


def stage_schema(
    stage: str,
    names: Iterable[str] | None = None,
    *,
    key: str = "clip_id",
    widths: dict[str, int] | None = None,
) -> pa.Schema:
    """The key column plus `names` (default: everything the stage writes), typed by the contract."""
    declared = STAGES[stage].writes
    chosen = declared if names is None else tuple(names)
    undeclared = [n for n in chosen if n not in declared]
    if undeclared:
        raise ContractError(
            f"stage {stage} does not declare column(s) {undeclared}; it writes {list(declared)}"
        )
    cols = COLUMNS[STAGES[stage].table]
    widths = widths or {}
    return pa.schema([cols[key].field()] + [cols[n].field(widths.get(n)) for n in chosen])


def cast_to_contract(stage: str, table: pa.Table, keys: Iterable[str] = ("clip_id", "_rowid")) -> pa.Table:
    """`table` with each column the stage writes cast to its declared type: a column of nulls or a
    list of floats built by pyarrow's inference becomes the contract's type. A value that does not
    fit (text in a float column) raises ContractError naming the column."""
    decl = STAGES.get(stage)
    if decl is None:
        raise ContractError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    cols = COLUMNS[decl.table]
    out = table
    for i, name in enumerate(table.column_names):
        if name in keys or name not in decl.writes:
            continue  # keys pass through; an undeclared column is refused by check_written
        col = cols[name]
        current = table.schema.field(name).type
        width = None
        if col.width == MODEL_WIDTH:
            if pa.types.is_fixed_size_list(current):
                width = current.list_size
            elif pa.types.is_null(current):
                continue  # no value gives the width; check_written names the column
            else:
                sizes = pc.list_value_length(table.column(name)).drop_null()
                width = int(sizes[0].as_py()) if len(sizes) else None
                if width is None:
                    continue
        target = col.field(width)
        if current == target.type or col.blob:
            continue
        try:
            out = out.set_column(i, target, table.column(name).cast(target.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            raise ContractError(
                f"stage {stage} wrote column {name!r} as {current}, which does not convert to "
                f"{col.type_name}: {err}"
            ) from err
    return out


def check_written(stage: str, written: pa.Schema, key: str = "clip_id") -> None:
    """Refuse a column the stage did not declare, or a type other than the declared one."""
    decl = STAGES.get(stage)
    if decl is None:
        raise ContractError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    cols = COLUMNS[decl.table]
    for f in written:
        if f.name == key:
            continue
        if f.name not in decl.writes:
            raise ContractError(
                f"stage {stage} wrote column {f.name!r}, which it does not declare "
                f"(store/contract.py declares: {', '.join(decl.writes)})"
            )
        if not cols[f.name].accepts(f):
            raise ContractError(
                f"stage {stage} wrote column {f.name!r} as {f.type}; the contract says {cols[f.name].type_name}"
            )


def markdown(tables: Sequence[str] = (CLIPS, VIDEOS, EVALS)) -> str:
    """The column tables of the README's "Where data lands", generated from the contract."""
    out: list[str] = []
    for table in tables:
        out += [f"`{table}`:", "", "| column | type | null | written by | meaning |", "|---|---|---|---|---|"]
        for c in COLUMNS[table].values():
            out.append(
                f"| `{c.name}` | {c.type_name} | {'yes' if c.nullable else 'no'} | {c.stage} | {c.doc} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"

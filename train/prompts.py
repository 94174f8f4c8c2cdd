"""Training prompts: train.data.prompt_template filled with each clip's columns (e.g. "{caption}
{caption_camera}."), the same for the trainer and the encode stage."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from train.config import DataConfig


def template_columns(template: str) -> list[str]:
    """The clips columns a prompt template names, in order."""
    return list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))


def prompt_template(config: DataConfig) -> str:
    """train.data.prompt_template, or the caption column as it is."""
    return config.prompt_template or f"{{{config.caption_column}}}"


def render_prompts(columns: Mapping[str, Sequence[Any]], template: str, rows: int) -> list[str]:
    """One prompt per row: `template` filled with the row's values (null = empty), with the spaces
    and punctuation an empty value leaves behind tidied ("a cat, ." -> "a cat.")."""
    names = template_columns(template)
    out = []
    for i in range(rows):
        values = {n: "" if columns[n][i] is None else str(columns[n][i]).strip() for n in names}
        text = template.format(**values)
        text = _SPACE_BEFORE_MARK.sub(r"\1", _SPACES.sub(" ", text)).strip()
        out.append(_LONE_MARKS.sub("", text).lstrip(".,;:!? ").strip())
    return out


_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,;:!?])")
# A run of marks keeps its last ("a car, ." -> "a car."); a prompt never starts with one.
_LONE_MARKS = re.compile(r"[.,;:!?]+(?=[.,;:!?])")

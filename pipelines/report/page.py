"""The report's HTML: templates/report.html.j2 (one partial per section) with autoescaping on.

The page is one self-contained file that opens offline: the CSS and JS (static/) are inlined, images
are `data:` URIs, and a Content-Security-Policy blocks any fetch. static/report.js sorts the grid
(each card carries a data-s-<column> value per score; missing scores always sort last) and swaps a
card's still thumbnail for its animated preview while the pointer is over it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from importlib import resources

import jinja2

from pipelines.report.camera import CAMERA_STRIP
from pipelines.report.data import ReportData
from pipelines.report.media import data_uri
from pipelines.report.overview import NOT_RUN

PACKAGE, TEMPLATE = "pipelines.report", "report.html.j2"


def static_text(name: str) -> str:
    """A file of the package's static/ directory (in a wheel as in a checkout)."""
    return resources.files(PACKAGE).joinpath("static", name).read_text(encoding="utf-8")


def _score(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}"


def _split_scores(
    scores: Mapping[str, float | None], key_columns: Sequence[str]
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """A card's scores: the key ones (in `key_columns` order) and the rest (in column order)."""
    key = {k: scores[k] for k in key_columns if k in scores}
    return key, {k: v for k, v in scores.items() if k not in key}


@functools.cache
def environment() -> jinja2.Environment:
    """The jinja2 environment of the report's templates (autoescaped, strict about undefined names)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, "templates"),
        autoescape=True,  # every value is escaped unless a template marks it safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,  # each partial renders whole lines
    )
    env.filters.update(
        score=_score,
        float_repr=lambda value: repr(float(value)),
        data_uri=data_uri,
    )
    env.globals.update(NOT_RUN=NOT_RUN, CAMERA_STRIP=CAMERA_STRIP, split_scores=_split_scores)
    return env


def render(data: ReportData) -> str:
    """The page of `data`."""
    return (
        environment()
        .get_template(TEMPLATE)
        .render(data=data, css=static_text("report.css"), js=static_text("report.js"))
    )

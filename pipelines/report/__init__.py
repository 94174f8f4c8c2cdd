"""The HTML report of a dataset version: one self-contained file a person can judge the data by.

Sections: counts per stage (files, failed files with reasons, clips, kept clips, hours), a histogram
of every score with the recorded filter's thresholds drawn on it, a grid of a random sample of clips
with animated previews that sorts by any score, the highest and lowest clips of every score, clips per
camera motion label, a random sample of captions beside their clips, the first duplicate groups, the
training and evaluation curves when asked for, and the configs and model versions each stage recorded
in the dataset metadata.

Each section has its module, whose collector returns plain data (`collect` gathers them in one
streamed pass, see data.py); page.py turns that data into the page with the package's jinja2
templates. `reelforge report --scores` is the text summary of scores_text.py.

A stage that has not run says so; a column produced by a random-weight model (its stage record marks
it `placeholder`) carries a visible "placeholder" badge wherever it is shown.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.report.data import ReportData, collect
from pipelines.report.overview import NOT_RUN
from pipelines.report.page import render
from pipelines.report.training import evals_section, training_section
from store import Store

__all__ = ["NOT_RUN", "ReportData", "build_report", "collect", "render"]


def build_report(
    store: Store,
    thumbnails: int,
    configured_filter: str = "",
    *,
    train_dir: Path | None = None,
    evals_root: Path | None = None,
    **samples: int,
) -> str:
    """The report of the store's latest versions as one HTML string (`samples`: see `collect`), with the
    training run in `train_dir` and the evaluation runs recorded under `evals_root` when given."""
    data = collect(store, thumbnails, configured_filter, **samples)
    if train_dir is not None:
        data.training = training_section(train_dir)
    if evals_root is not None:
        data.evals = evals_section(evals_root)
    return render(data)

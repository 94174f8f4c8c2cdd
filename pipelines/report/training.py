"""The report's training and evaluation sections.

- Training: the loss and validation-loss curves per step (train.out_dir's log.csv and val.csv), each
  VBench dimension per step (eval.csv, written when train.eval_every is set), and the grid of the fixed
  prompts' samples at each evaluated step (train.out_dir/eval/step_*/*.gif, the last `grid_steps`),
  and which of the latest checkpoint's inputs were placeholders (captions of a random-weight VLM, ...).
- Generated vs curated: the latest aggregate of each source in the evals table (samples, checkpoint,
  training, store, files) side by side, with the Frechet distance between generated videos and curated
  clips on image-tower features where a run measured it; placeholder values are marked.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.vbench import DIMENSIONS
from pipelines.jobs.eval import eval_runs
from pipelines.report.media import data_uri, plt, svg_of
from train.checkpoint import latest_checkpoint, read_state


@dataclass
class Chart:
    """One chart of the training section."""

    title: str
    svg: bytes


@dataclass
class StepSamples:
    """The samples generated at one checkpoint step."""

    step: str  # the step's directory name
    samples: list[tuple[str, str]]  # (the prompt's file stem, GIF data URI)


@dataclass
class Training:
    """The report's training section."""

    charts: list[Chart]  # loss, then the VBench dimensions and quality score when evaluated
    evaluated: bool  # train.eval_every was set: eval.csv has rows
    steps: list[StepSamples]
    # The latest checkpoint's inputs that came from random-weight models ({column: "stage/model"}):
    # a DiT trained on placeholder captions, and its samples, must say so where they are shown.
    checkpoint: str | None = None
    placeholder_inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class EvalRow:
    """One source's VBench results in one eval run."""

    source: str
    run: str
    videos: int
    dimensions: list[float]  # in curate.vbench.DIMENSIONS order
    quality_score: float


@dataclass
class Evals:
    """The report's evaluation section."""

    dimensions: list[tuple[str, bool]]  # (dimension, a placeholder in some run)
    rows: list[EvalRow]  # by source
    frechet: tuple[str, float] | None  # (run, distance) of the latest run that measured it
    frechet_placeholder: bool


def _csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _chart(title: str, series: Mapping[str, Sequence[tuple[int, float]]]) -> Chart:
    figure, axis = plt.subplots(figsize=(6.4, 2.8))
    for name, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, marker="." if len(points) < 30 else None, label=name)
    axis.set_xlabel("step")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return Chart(title, svg_of(figure))


def _points(rows: Sequence[Mapping[str, str]], column: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "", "nan")]


def training_section(train_dir: Path, grid_steps: int = 6) -> Training | None:
    """Loss and eval curves per step and the sample grid per evaluated step; None before training."""
    log, val, evals = (_csv(train_dir / name) for name in ("log.csv", "val.csv", "eval.csv"))
    if not log:
        return None
    charts = [
        _chart("loss", {"train loss": _points(log, "loss"), "validation loss": _points(val, "val_loss")})
    ]
    if evals:
        charts.append(
            _chart(
                "VBench dimensions of the fixed prompts' samples", {d: _points(evals, d) for d in DIMENSIONS}
            )
        )
        charts.append(_chart("VBench quality score", {"quality score": _points(evals, "quality_score")}))
    steps = [
        StepSamples(
            step.name, [(g.stem, data_uri(g.read_bytes(), "image/gif")) for g in sorted(step.glob("*.gif"))]
        )
        for step in sorted((train_dir / "eval").glob("step_*"))[-grid_steps:]
    ]
    latest = latest_checkpoint(train_dir)
    placeholders = read_state(latest).get("placeholder_inputs") or {} if latest is not None else {}
    return Training(charts, bool(evals), steps, latest.name if latest else None, dict(placeholders))


def evals_section(store_root: Path) -> Evals | None:
    """The latest aggregate per source side by side, with the Frechet distance; None without evals."""
    runs = eval_runs(store_root)
    if not runs:
        return None
    latest: dict[str, tuple[str, dict[str, Any]]] = {}
    frechet: tuple[str, float] | None = None
    marks: set[str] = set()
    for run_id, run in runs.items():  # oldest first: later runs replace earlier ones
        for source, agg in run["aggregates"].items():
            if agg.get("videos"):
                latest[source] = (run_id, agg)
        if run.get("frechet_image_tower") is not None:
            frechet = (run_id, run["frechet_image_tower"])
        marks |= set(run.get("placeholders") or {})
    return Evals(
        dimensions=[(d, d in marks) for d in DIMENSIONS],
        rows=[
            EvalRow(source, run_id, agg["videos"], [agg[d] for d in DIMENSIONS], agg["quality_score"])
            for source, (run_id, agg) in sorted(latest.items())
        ],
        frechet=frechet,
        frechet_placeholder="tower_embedding" in marks,
    )

"""The report's training and evaluation sections (pipelines/jobs/report.py adds them to the page).

- Training: the loss and validation-loss curves per step (train.out_dir's log.csv and val.csv), each
  VBench dimension per step (eval.csv, written when train.eval_every is set), and the grid of the fixed
  prompts' samples at each evaluated step (train.out_dir/eval/step_*/*.gif, the last `grid_steps`).
- Generated vs curated: the latest aggregate of each source in the evals table (samples, checkpoint,
  training, store, files) side by side, with the Frechet distance between generated videos and curated
  clips on image-tower features where a run measured it; placeholder values are marked.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curate.vbench import DIMENSIONS
from pipelines.jobs.eval import eval_runs
from pipelines.report_media import data_uri, plt, svg_of

_PLACEHOLDER = "<span class='badge placeholder'>placeholder</span>"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _curves_svg(title: str, series: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    figure, axis = plt.subplots(figsize=(6.4, 2.8))
    for name, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, marker="." if len(points) < 30 else None, label=name)
    axis.set_xlabel("step")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return f"<img class='chart' alt='{_e(title)}' src='{data_uri(svg_of(figure), 'image/svg+xml')}'>"


def _points(rows: Sequence[Mapping[str, str]], column: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "", "nan")]


def training_section(train_dir: Path, grid_steps: int = 6) -> str:
    """Loss and eval curves per step and the sample grid per evaluated step; empty before training."""
    log, val, evals = (_csv(train_dir / name) for name in ("log.csv", "val.csv", "eval.csv"))
    if not log:
        return ""
    parts = ["<h2 id='training'>Training</h2>"]
    parts.append(
        _curves_svg("loss", {"train loss": _points(log, "loss"), "validation loss": _points(val, "val_loss")})
    )
    if evals:
        parts.append(
            _curves_svg(
                "VBench dimensions of the fixed prompts' samples", {d: _points(evals, d) for d in DIMENSIONS}
            )
        )
        parts.append(_curves_svg("VBench quality score", {"quality score": _points(evals, "quality_score")}))
    else:
        parts.append("<p class='meta'>No evaluation during training: set train.eval_every.</p>")
    steps = sorted((train_dir / "eval").glob("step_*"))[-grid_steps:]
    if steps:
        parts.append("<h3>Samples of the fixed prompts per step</h3><table>")
        for step in steps:
            gifs = sorted(step.glob("*.gif"))
            cells = "".join(
                f"<td><img alt='{_e(g.stem)}' title='{_e(g.stem)}' src='{data_uri(g.read_bytes(), 'image/gif')}'></td>"
                for g in gifs
            )
            parts.append(f"<tr><th>{_e(step.name)}</th>{cells}</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def evals_section(store_root: Path) -> str:
    """The latest aggregate per source side by side, with the Frechet distance; empty without evals."""
    runs = eval_runs(store_root)
    if not runs:
        return ""
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
    head = "".join(f"<th>{_e(d)}{_PLACEHOLDER if d in marks else ''}</th>" for d in DIMENSIONS)
    parts = [
        "<h2 id='evals'>Generated videos and curated clips (VBench dimensions)</h2>",
        "<p class='meta'>Latest `reelforge eval` run per source; higher is better; definitions in "
        "curate/vbench.py.</p>",
        f"<table><tr><th>source</th><th>run</th><th>videos</th>{head}<th>quality score</th></tr>",
    ]
    for source, (run_id, agg) in sorted(latest.items()):
        cells = "".join(f"<td>{agg[d]:.4f}</td>" for d in DIMENSIONS)
        parts.append(
            f"<tr><td>{_e(source)}</td><td>{_e(run_id)}</td><td>{agg['videos']}</td>{cells}"
            f"<td>{agg['quality_score']:.4f}</td></tr>"
        )
    parts.append("</table>")
    if frechet is not None:
        badge = _PLACEHOLDER if "tower_embedding" in marks else ""
        parts.append(
            f"<p>Frechet distance between generated videos and curated clips on image-tower features "
            f"(the open_clip tower's per-video mean, not an I3D FVD){badge}: <b>{frechet[1]:.4f}</b> "
            f"(run {_e(frechet[0])})</p>"
        )
    return "\n".join(parts)


def with_sections(page: str, sections: Sequence[str]) -> str:
    """`page` with the non-empty `sections` inserted before its configs section (or at its end)."""
    body = "\n".join(s for s in sections if s)
    if not body:
        return page
    anchor = "<h2 id='configs'>"
    at = page.find(anchor)
    if at < 0:
        at = page.rfind("<script>")
    return page[:at] + body + "\n" + page[at:]

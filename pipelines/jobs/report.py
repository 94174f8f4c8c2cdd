"""`reelforge report`: write the self-contained HTML report of the store's latest dataset version.

The page comes from pipelines/report/ (one collector per section, jinja2 templates), with the training
curves and sample grids of train.out_dir and the eval aggregates of the store.
No Ray: the report streams the score columns once or twice, reads the thumbnails of the clips it
samples (`report.thumbnails`, `report.extremes`, `report.captions`, `report.duplicate_groups`) by row
id, and the bytes of the `report.thumbnails` grid clips for their animated previews.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.report import build_report
from store import Store


def report_path(cfg: PipelineConfig, out: Path | None = None) -> Path:
    """`out` as given, else `report.out` (a relative one lives under store.root)."""
    if out is not None:
        return out
    return cfg.report.out if cfg.report.out.is_absolute() else cfg.store.root / cfg.report.out


def run(cfg: PipelineConfig, out: Path | None = None) -> Path:
    """Build the report and write it; returns the file written."""
    report = cfg.report
    page = build_report(
        Store(cfg.store.root),
        report.thumbnails,
        configured_filter=cfg.filter.expression,
        train_dir=Path(cfg.train.out_dir),
        evals_root=Path(cfg.store.root),
        extremes=report.extremes,
        captions=report.captions,
        duplicate_groups=report.duplicate_groups,
    )
    path = report_path(cfg, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path

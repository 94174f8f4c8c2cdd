"""The overview sections: counts per stage, failed files with their reasons, and the configs and model
versions each stage recorded in the dataset metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np

from pipelines.report.captions import Captions
from pipelines.report.duplicates import Duplicates
from pipelines.report.scan import ScanBatch
from pipelines.report.scores import FilterFacts, Scores
from store import CLIPS, VIDEOS

NOT_RUN = "not run yet"
FAILED_FILES = 50  # failed and partial files listed (each kind); all are counted
# Ordering of the per-stage rows; stages recorded under other names follow in name order.
STAGE_ORDER = ("split", "score", "dedup", "filter", "caption", "encode")

Records = Mapping[str, Mapping[str, Any]]


@dataclass
class StageRow:
    """One stage's row in the report's overview."""

    stage: str
    ran: bool
    summary: str
    at: str = ""
    placeholder: bool = False


@dataclass
class Files:
    """The input files (one row each in the videos table: small enough to read whole)."""

    ran: bool  # the split stage wrote the videos table
    total: int
    failed: list[dict[str, str]]  # uri, reason, detail
    partial: list[dict[str, str]]  # files that produced clips and still recorded an error
    footage_s: float  # duration of the files that decoded

    @classmethod
    def read(cls, videos_ds: lance.LanceDataset | None) -> Files:
        """The input files' counts, failures and hours of footage from the videos table."""
        if videos_ds is None:
            return cls(False, 0, [], [], 0.0)
        failed: list[dict[str, str]] = []
        partial: list[dict[str, str]] = []
        footage_s = 0.0
        videos = videos_ds.to_table(columns=["uri", "status", "error", "duration_s"]).to_pylist()
        for v in videos:
            entry = {
                "uri": v["uri"] or "",
                "reason": (v["error"] or "").split(":", 1)[0],
                "detail": v["error"] or "",
            }
            if v["status"] != "ok":
                failed.append(entry)
            else:
                footage_s += v["duration_s"] or 0.0
                if v["error"]:
                    partial.append(entry)
        return cls(True, len(videos), failed, partial, footage_s)

    def listed(self) -> Files:
        """The same counts with the first FAILED_FILES failed and partial files only."""
        return Files(
            self.ran, self.total, self.failed[:FAILED_FILES], self.partial[:FAILED_FILES], self.footage_s
        )


class TotalsPass:
    """Clip durations over the streamed pass, in all and in the clips the filter kept."""

    def __init__(self) -> None:
        self.seconds = self.kept_seconds = 0.0
        self.kept = 0

    def add(self, batch: ScanBatch) -> None:
        """Add one scanned batch's seconds of footage, all and selected."""
        self.seconds += float(batch.seconds.sum())
        if batch.selected is not None:
            self.kept += int(np.count_nonzero(batch.selected))
            self.kept_seconds += float(batch.seconds[batch.selected].sum())


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f} h ({seconds:.1f} s)"


def _at(records: Records, stage: str) -> str:
    return str(records.get(stage, {}).get("at", ""))


def _columns_row(stage: str, record: Mapping[str, Any]) -> StageRow:
    summary = f"{record.get('rows', '?')} rows; columns {', '.join(record.get('columns', []))}"
    return StageRow(stage, True, summary, at=str(record.get("at", "")))


def stage_rows(
    files: Files,
    clips: int,
    totals: TotalsPass,
    scores: Scores | None,
    duplicates: Duplicates,
    filter_facts: FilterFacts,
    captions: Captions,
    records: Mapping[str, Records],
    placeholders: Mapping[str, str],
) -> list[StageRow]:
    """One row per stage in STAGE_ORDER (other recorded stages before encode); `scores` is None before
    the score stage ran."""
    clip_records, rows = records[CLIPS], []
    if not files.ran:
        rows.append(StageRow("split", False, NOT_RUN))
    else:
        failed = len(files.failed)
        rows.append(
            StageRow(
                "split",
                True,
                f"{files.total} files: {files.total - failed} ok ({len(files.partial)} partial), {failed} failed; "
                f"{clips} clips; footage {_hours(files.footage_s)}, in clips {_hours(totals.seconds)}",
                at=_at(records[VIDEOS], "split"),
            )
        )
    if scores is not None:
        ph = sorted({placeholders[c] for c in scores.columns if c in placeholders})
        rows.append(
            StageRow(
                "score",
                True,
                f"{clips - scores.failed} of {clips} clips scored, {scores.failed} failed; "
                f"{len(scores.columns)} score columns"
                + (f"; placeholder models: {', '.join(ph)}" if ph else ""),
                at=_at(clip_records, "score"),
                placeholder=bool(ph),
            )
        )
    else:
        rows.append(StageRow("score", False, NOT_RUN))
    if duplicates.ran:
        rows.append(
            StageRow(
                "dedup",
                True,
                f"{duplicates.count} duplicates of {duplicates.group_count} clips (duplicate groups below)",
                at=_at(clip_records, "dedup"),
                placeholder="duplicate_of" in placeholders,
            )
        )
    else:
        rows.append(StageRow("dedup", False, NOT_RUN))
    if filter_facts.applied:
        rows.append(
            StageRow(
                "filter",
                True,
                f"kept {totals.kept} of {clips} clips ({_hours(totals.kept_seconds)}) with: "
                f"{filter_facts.expression or '(everything)'}",
                at=filter_facts.at,
            )
        )
    else:
        rows.append(StageRow("filter", False, NOT_RUN))
    if captions.ran:
        rows.append(
            StageRow(
                "caption",
                True,
                captions.info,
                at=_at(clip_records, "caption"),
                placeholder="caption" in placeholders,
            )
        )
    else:
        rows.append(StageRow("caption", False, NOT_RUN))
    rows += [_columns_row(s, clip_records[s]) for s in sorted(clip_records) if s not in STAGE_ORDER]
    if "encode" in clip_records:
        rows.append(_columns_row("encode", clip_records["encode"]))
    else:
        rows.append(StageRow("encode", False, NOT_RUN))
    return rows


@dataclass
class StageConfig:
    """What one stage recorded, as the configs section shows it."""

    table: str
    stage: str
    at: str
    columns: str  # the columns it wrote, comma-separated
    models: str  # its model versions as indented JSON, empty when it records none
    config: str  # indented JSON
    placeholder: bool  # one of its models has random weights


@dataclass
class Configs:
    """The configs each stage ran with, and the clips table's versions."""

    records: dict[str, dict[str, dict[str, Any]]]  # table -> stage -> the stage's record
    stages: list[StageConfig]
    versions: list[tuple[int, str]]  # clips versions: (version, committed at)


def configs(
    records: dict[str, dict[str, dict[str, Any]]],
    versions: list[tuple[int, str]],
    placeholders: Mapping[str, str],
) -> Configs:
    """The configs section from the stages' records and the clips table's versions."""
    stages = []
    for table in (VIDEOS, CLIPS):
        for stage, rec in sorted(records[table].items()):
            models = rec.get("models") or {}
            config = rec.get(
                "config", {k: v for k, v in rec.items() if k not in ("models", "columns", "at", "rows")}
            )
            stages.append(
                StageConfig(
                    table=table,
                    stage=stage,
                    at=str(rec.get("at", "?")),
                    columns=", ".join(rec.get("columns") or []),
                    models=json.dumps(models, indent=1, sort_keys=True) if models else "",
                    config=json.dumps(config, indent=1, sort_keys=True, default=str),
                    placeholder=any(v == stage or v.startswith(stage + "/") for v in placeholders.values()),
                )
            )
    return Configs(records, stages, versions)

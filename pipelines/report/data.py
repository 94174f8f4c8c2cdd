"""Everything the report shows, read from one version of the store in memory bounded by the samples.

Two streamed passes over small columns: the range of every score (fixed histogram edges), then one pass
that feeds every section's accumulator (counts, durations, histograms and the samples, which carry only
row ids). The sampled clips are then read whole, once, by row id, and each section turns its
accumulator into plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pyarrow.compute as pc

from pipelines.report.camera import CameraLabel, CameraPass
from pipelines.report.captions import SAMPLE_CAPTIONS, Captions, CaptionsPass
from pipelines.report.cards import Card, read_cards
from pipelines.report.duplicates import DUPLICATE_GROUPS, Duplicates, DuplicatesPass
from pipelines.report.overview import Configs, Files, StageRow, TotalsPass, configs, stage_rows
from pipelines.report.scan import Lowest, ScanBatch, batches, floats, sample_keys, streaming
from pipelines.report.scores import Extremes, FilterFacts, Scores, ScoresPass, flag_columns, score_columns
from pipelines.report.training import Evals, Training
from store import CLIPS, CLIPS_SCHEMA, ROW_ID, VIDEOS, Store, StoreError, utc_now
from store.placeholders import placeholder_columns

EXTREMES = 4  # highest and lowest clips shown per score (the default of report.extremes)


@dataclass
class Grid:
    """The report's sortable grid of sampled clips."""

    cards: list[Card]  # a random sample of the clips: the sortable grid
    total_clips: int


@dataclass
class ReportData:
    """Everything the HTML report shows, collected in one pass over the store."""

    root: str
    generated_at: str
    version: str  # of reelforge
    clips_version: int | None
    videos_version: int | None
    placeholders: dict[str, str]  # column -> "stage/model" of a random-weight model
    stages: list[StageRow]
    files: Files  # the first failed and partial files
    scores: Scores
    grid: Grid
    extremes: list[Extremes]
    camera: list[CameraLabel]  # labels with clips, in curate.camera.LABELS order
    captions: Captions
    duplicates: Duplicates
    configs: Configs
    training: Training | None = None  # added by build_report when asked for
    evals: Evals | None = None


def collect(
    store: Store,
    thumbnails: int,
    configured_filter: str = "",
    *,
    extremes: int = EXTREMES,
    duplicate_groups: int = DUPLICATE_GROUPS,
    captions: int = SAMPLE_CAPTIONS,
) -> ReportData:
    """The report's data, without the training and evaluation sections.

    Samples: `thumbnails` clips at random for the grid, the `extremes` highest and lowest per score,
    `captions` captioned clips at random and the first `duplicate_groups` duplicate groups."""
    videos_ds, clips_ds = store.dataset(VIDEOS), store.dataset(CLIPS)
    if videos_ds is None and clips_ds is None:
        raise StoreError(f"no dataset in {store.root}: run `reelforge split` first")
    clips_ds = streaming(clips_ds) if clips_ds is not None else None
    records = {VIDEOS: store.stage_records(VIDEOS), CLIPS: store.stage_records(CLIPS)}
    clip_records = records[CLIPS]
    placeholders = placeholder_columns(clip_records)
    files = Files.read(videos_ds)

    schema = clips_ds.schema if clips_ds is not None else CLIPS_SCHEMA
    names = set(schema.names)
    scored_columns = score_columns(schema, clip_records) if clips_ds is not None else []
    total = clips_ds.count_rows() if clips_ds is not None else 0
    filter_facts = FilterFacts.of(clip_records, names, configured_filter)

    scores = ScoresPass(
        clips_ds,
        scored_columns,
        flag_columns(schema) if clips_ds is not None else [],
        filter_facts,
        extremes,
    )
    totals, grid = TotalsPass(), Lowest(thumbnails)
    duplicates = DuplicatesPass(duplicate_groups, "duplicate_of" in names)
    caption_pass, camera = CaptionsPass(captions, names), CameraPass(names)
    wanted = {c: c for c in ["start_s", "end_s", *(["selected"] if filter_facts.applied else [])]}
    for section in (scores, duplicates, caption_pass, camera):
        wanted |= section.projection()
    for batch in batches(clips_ds, wanted) if clips_ds is not None else ():
        ids = batch[ROW_ID].to_numpy()
        grid.add(sample_keys(ids), ids)
        selected = None
        if filter_facts.applied:
            selected = np.asarray(pc.fill_null(batch["selected"], False).to_numpy(zero_copy_only=False), bool)
        seconds = np.nan_to_num(floats(batch["end_s"]) - floats(batch["start_s"]))
        scan = ScanBatch(batch, ids, seconds, selected)
        for accumulator in (totals, scores, duplicates, caption_pass, camera):
            accumulator.add(scan)

    sampled = [grid.ids, caption_pass.sample.ids, duplicates.sampled(clips_ds), *scores.sampled()]
    sampled += camera.sampled()
    cards: dict[int, Card] = {}
    if clips_ds is not None:
        cards = read_cards(clips_ds, np.unique(np.concatenate(sampled)), scored_columns, grid.ids)

    scored = "score" in clip_records and clips_ds is not None
    score_section = scores.scores(clips_ds, placeholders, scored, total)
    duplicate_section = duplicates.section(cards)
    caption_section = caption_pass.section(cards, total)
    return ReportData(
        root=str(store.root),
        generated_at=utc_now(),
        version=_package_version(),
        clips_version=clips_ds.version if clips_ds is not None else None,
        videos_version=videos_ds.version if videos_ds is not None else None,
        placeholders=placeholders,
        stages=stage_rows(
            files,
            total,
            totals,
            score_section if scored else None,
            duplicate_section,
            filter_facts,
            caption_section,
            records,
            placeholders,
        ),
        files=files.listed(),
        scores=score_section,
        grid=Grid([cards[int(rid)] for rid in grid.ids], total),
        extremes=scores.extremes(cards, score_section.key_columns),
        camera=camera.section(cards),
        captions=caption_section,
        duplicates=duplicate_section,
        configs=configs(
            records, [(int(v["version"]), str(v["timestamp"])) for v in store.versions(CLIPS)], placeholders
        ),
    )


def _package_version() -> str:
    try:
        return metadata.version("reelforge")
    except metadata.PackageNotFoundError:
        return "0+unknown"

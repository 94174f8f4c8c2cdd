"""The HTML report of a dataset version: one self-contained file a person can judge the data by.

Sections: counts per stage (files, failed files with reasons, clips, kept clips, hours), a histogram
of every score with the recorded filter's thresholds drawn on it, a grid of a random sample of clips
with animated previews that sorts by any score, the highest and lowest clips of every score, a random
sample of captions beside their clips, the first duplicate groups, and the configs and model versions
each stage recorded in the dataset metadata.

Memory stays flat in the number of clips: counts and histograms (fixed bin edges) are summed batch by
batch over streamed columns, the samples are running top-n selections that carry only row ids, and
only the few sampled clips are read whole, by row id. Nothing looks clips up with `IN (...)` lists.

Images are inline `data:` URIs and the CSS/JS is inline, so the file opens offline. A stage that has
not run says so; a column produced by a random-weight model (its stage record marks it
`placeholder`) carries a visible "placeholder" badge wherever it is shown.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.camera import LABELS
from pipelines.report_media import (
    PreviewError,
    animated_preview,
    data_uri,
    histogram_counts_svg,
    histogram_edges,
)
from store import CLIPS, CLIPS_SCHEMA, ROW_ID, VIDEOS, ClipReader, Store, StoreError, utc_now
from store.filters import Threshold, parse_filter
from store.placeholders import placeholder_columns

NOT_RUN = "not run yet"
# Frames and width of the animated previews: small enough that 48 previews stay a few MB.
PREVIEW_FRAMES, PREVIEW_WIDTH = 8, 160
# How much of a large dataset is shown (the defaults of report.* in pipelines/config.py): the
# highest and lowest clips per score, captions sampled, duplicate groups listed.
EXTREMES = 4
SAMPLE_CAPTIONS = 8
DUPLICATE_GROUPS = 12
# Clips shown per camera_motion label; clips whose camera could not be measured are counted under UNMEASURED.
CAMERA_STRIP = 6
UNMEASURED = "(not measured)"
DUPLICATE_MEMBERS = 12  # members shown per group; the group's size is always given
# Scores always visible on a card (the filter's columns, else the first few); the rest fold away.
KEY_SCORES = 4
FAILED_FILES = 50
SCAN_ROWS = 65_536  # rows per streamed batch: a few MB of score columns at a time
# Lance's file-metadata cache while streaming. By default it keeps every fragment's metadata: ~40 KB
# a fragment, +390 MB RSS over 10^4 fragments (pylance 14.0.2); 16 MB streamed as fast.
SCAN_METADATA_CACHE_BYTES = 16 << 20
# Ordering of the per-stage rows; stages recorded under other names follow in name order.
STAGE_ORDER = ("split", "score", "dedup", "filter", "caption", "encode")


# ---- facts from the store ---------------------------------------------------------------------------


def thresholds(expression: str) -> list[Threshold]:
    """Every `column <op> number` comparison of a recorded filter expression, column first."""
    return parse_filter(expression, "filter.expression").thresholds


@dataclass
class StageRow:
    stage: str
    ran: bool
    summary: str
    at: str = ""
    placeholder: bool = False


@dataclass
class Card:
    clip_id: str
    video_name: str
    start_s: float
    end_s: float
    thumbnail_uri: str | None
    preview_uri: str | None
    preview_error: str | None
    scores: dict[str, float | None]
    selected: bool | None
    duplicate_of: str | None
    caption: str | None


@dataclass
class ReportData:
    root: str
    generated_at: str
    version: str
    clips_version: int | None
    videos_version: int | None
    stages: list[StageRow]
    failed_files: list[dict[str, str]]
    partial_files: list[dict[str, str]]
    score_errors: list[tuple[str, str]]
    filter_expression: str
    filter_applied: bool
    histograms: list[tuple[str, bytes, list[Threshold]]]
    flags: list[tuple[str, int, int, int]]
    score_columns: list[str]
    placeholders: dict[str, str]
    cards: list[Card]  # the random sample of the sortable grid
    total_clips: int
    extremes: list[tuple[str, list[Card], list[Card]]]  # (score column, highest, lowest)
    captions: list[Card]
    caption_info: str
    duplicate_groups: list[tuple[str, list[str], int]]  # (kept clip, members shown, group size)
    duplicate_count: int
    duplicate_group_count: int
    thumbnails: dict[str, str]
    records: dict[str, dict[str, dict[str, Any]]]
    versions: list[tuple[int, str]]
    unscored_sections: dict[str, str] = field(default_factory=dict)
    # (camera_motion label, clips, a strip of sampled clips), labels in curate.camera.LABELS order.
    camera_labels: list[tuple[str, int, list[Card]]] = field(default_factory=list)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f} h ({seconds:.1f} s)"


def _score_columns(table_schema: pa.Schema, records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Floating-point scalar columns added by stages: the scores (counts and ids are not scores)."""
    added: list[str] = []
    for record in records.values():
        added += [c for c in record.get("columns", []) if c not in added]
    names = [c for c in table_schema.names if c not in CLIPS_SCHEMA.names]
    ordered = [c for c in added if c in names] + [c for c in names if c not in added]
    return [c for c in ordered if pa.types.is_floating(table_schema.field(c).type)]


def _flag_columns(table_schema: pa.Schema) -> list[str]:
    return [
        c
        for c in table_schema.names
        if c not in CLIPS_SCHEMA.names and c != "selected" and pa.types.is_boolean(table_schema.field(c).type)
    ]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# Names of the computed columns of the report's streamed pass (no clips column starts with "__").
_FAILED, _CAPTIONED = "__score_failed", "__captioned"


def streaming(ds: lance.LanceDataset) -> lance.LanceDataset:
    """The same version of `ds`, opened with a small metadata cache for streamed passes."""
    return lance.dataset(ds.uri, version=ds.version, metadata_cache_size_bytes=SCAN_METADATA_CACHE_BYTES)


def _batches(ds: lance.LanceDataset, columns: Sequence[str] | dict[str, str]) -> Iterator[pa.RecordBatch]:
    """Stream `columns` (names, or {name: SQL expression}) + `_rowid` of one pinned dataset version in
    batches of SCAN_ROWS rows (strict: a table of tiny fragments would otherwise come in batches of a
    few rows)."""
    return ds.to_batches(
        columns=columns if isinstance(columns, dict) else list(columns),
        with_row_id=True,
        batch_size=SCAN_ROWS,
        strict_batch_size=True,
    )


def floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def finite_ranges(ds: lance.LanceDataset, columns: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(min, max) of the finite values of each column, in one streamed pass; columns without any left out."""
    lo = dict.fromkeys(columns, math.inf)
    hi = dict.fromkeys(columns, -math.inf)
    for batch in _batches(ds, columns) if columns else ():
        for column in columns:
            values = floats(batch[column])
            values = values[np.isfinite(values)]
            if values.size:
                lo[column], hi[column] = min(lo[column], values.min()), max(hi[column], values.max())
    return {c: (float(lo[c]), float(hi[c])) for c in columns if lo[c] <= hi[c]}


def sample_keys(row_ids: np.ndarray, salt: int = 0) -> np.ndarray:
    """A fixed pseudo-random uint64 per row id (splitmix64): the clips with the smallest keys are a
    uniform random sample that is the same on every run, whatever the batch boundaries."""
    z = row_ids.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Lowest:
    """The `n` rows with the smallest keys seen so far, ties to the smaller row id; holds only those
    n keys and ids between batches (a running top-n: argpartition of each batch, then a merge)."""

    def __init__(self, n: int):
        self.n = n
        self.keys: np.ndarray | None = None
        self.ids = np.zeros(0, np.uint64)

    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        if self.n == 0 or len(keys) == 0:
            return
        if len(keys) > self.n:
            kth = keys[np.argpartition(keys, self.n - 1)[self.n - 1]]
            near = keys <= kth  # every row that ties with the n-th stays a candidate
            keys, ids = keys[near], ids[near]
        if self.keys is not None:
            keys, ids = np.concatenate([self.keys, keys]), np.concatenate([self.ids, ids])
        order = np.lexsort((ids, keys))[: self.n]
        self.keys, self.ids = keys[order], ids[order]


@dataclass
class _ScoreStats:
    """One score column over a streamed pass: histogram counts (all and kept) on fixed edges, and the
    row ids of its highest and lowest values."""

    edges: np.ndarray
    marks: list[Threshold]
    highest: Lowest
    lowest: Lowest
    counts: np.ndarray = field(init=False)
    kept: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.edges) - 1, np.int64)
        self.kept = np.zeros(len(self.edges) - 1, np.int64)

    def add(self, values: np.ndarray, ids: np.ndarray, selected: np.ndarray | None) -> None:
        finite = np.isfinite(values)
        self.counts += np.histogram(values[finite], self.edges)[0]
        if selected is not None:
            self.kept += np.histogram(values[finite & selected], self.edges)[0]
        self.highest.add(-values[finite], ids[finite])
        self.lowest.add(values[finite], ids[finite])


def _stage_at(records: Mapping[str, Mapping[str, Any]], stage: str) -> str:
    return str(records.get(stage, {}).get("at", ""))


def collect(
    store: Store,
    thumbnails: int,
    configured_filter: str = "",
    *,
    extremes: int = EXTREMES,
    duplicate_groups: int = DUPLICATE_GROUPS,
    captions: int = SAMPLE_CAPTIONS,
) -> ReportData:
    """Read what the report shows from one version of the store, in memory bounded by the samples.

    Two streamed passes over small columns: the range of every score (fixed histogram edges), then
    counts, durations, histograms and the samples, which carry only row ids: `thumbnails` clips at
    random, the `extremes` highest and lowest per score, `captions` captioned clips at random and the
    first `duplicate_groups` duplicate groups. Only those clips are then read whole, by row id."""
    videos_ds, clips_ds = store.dataset(VIDEOS), store.dataset(CLIPS)
    if videos_ds is None and clips_ds is None:
        raise StoreError(f"no dataset in {store.root}: run `reelforge split` first")
    clips_ds = streaming(clips_ds) if clips_ds is not None else None
    clip_records = store.stage_records(CLIPS)
    video_records = store.stage_records(VIDEOS)
    placeholders = placeholder_columns(clip_records)
    stages: list[StageRow] = []

    # files (one row per input file: small)
    failed: list[dict[str, str]] = []
    partial: list[dict[str, str]] = []
    footage_s = 0.0
    files = 0
    if videos_ds is not None:
        videos = videos_ds.to_table(columns=["uri", "status", "error", "duration_s"]).to_pylist()
        files = len(videos)
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
    clip_schema = clips_ds.schema if clips_ds is not None else CLIPS_SCHEMA
    names = set(clip_schema.names)
    score_columns = _score_columns(clip_schema, clip_records) if clips_ds is not None else []
    flag_columns = _flag_columns(clip_schema) if clips_ds is not None else []
    n = clips_ds.count_rows() if clips_ds is not None else 0

    record = clip_records.get("filter")
    filter_applied = record is not None and "selected" in names
    expression = str(record["config"].get("expression", "")) if record is not None else configured_filter
    marks = thresholds(expression) if expression else []

    # one streamed pass for the ranges (fixed histogram edges), one for everything else
    ranges = finite_ranges(clips_ds, score_columns) if clips_ds is not None else {}
    stats = {
        column: _ScoreStats(
            histogram_edges(lo, hi, [(t.op, t.value, t.is_rule) for t in marks if t.column == column]),
            [t for t in marks if t.column == column],
            Lowest(extremes),
            Lowest(extremes),
        )
        for column, (lo, hi) in ranges.items()
    }
    random_grid, caption_sample = Lowest(thumbnails), Lowest(captions)
    duplicates = _DuplicateGroups(duplicate_groups)
    clip_s = kept_s = 0.0
    kept = errors = captioned = 0
    models: set[str] = set()
    flag_counts = {c: [0, 0] for c in flag_columns}  # true, null
    has = {
        c: c in names for c in ("score_error", "duplicate_of", "caption", "caption_model", "camera_motion")
    }
    camera_counts: Counter[str] = Counter()
    camera_strips: dict[str, Lowest] = {}
    wanted = {
        c: c for c in ["start_s", "end_s", *(["selected"] if filter_applied else []), *stats, *flag_columns]
    }
    if has["score_error"]:
        wanted[_FAILED] = "score_error IS NOT NULL"
    if has["duplicate_of"]:
        wanted |= {"clip_id": "clip_id", "duplicate_of": "duplicate_of"}
    if has["caption"]:
        wanted[_CAPTIONED] = "caption IS NOT NULL"
    if has["caption_model"]:
        wanted["caption_model"] = "caption_model"
    if has["camera_motion"]:
        wanted["camera_motion"] = "camera_motion"
    for batch in _batches(clips_ds, wanted) if clips_ds is not None else ():
        ids = batch[ROW_ID].to_numpy()
        random_grid.add(sample_keys(ids), ids)
        seconds = np.nan_to_num(floats(batch["end_s"]) - floats(batch["start_s"]))
        clip_s += float(seconds.sum())
        selected = None
        if filter_applied:
            selected = np.asarray(pc.fill_null(batch["selected"], False).to_numpy(zero_copy_only=False), bool)
            kept += int(np.count_nonzero(selected))
            kept_s += float(seconds[selected].sum())
        for column, stat in stats.items():
            stat.add(floats(batch[column]), ids, selected)
        for column in flag_columns:
            flag_counts[column][0] += int(
                pc.sum(pc.cast(pc.fill_null(batch[column], False), pa.int64())).as_py() or 0
            )
            flag_counts[column][1] += batch[column].null_count
        if has["score_error"]:
            errors += int(pc.sum(pc.cast(batch[_FAILED], pa.int64())).as_py() or 0)
        if has["duplicate_of"]:
            duplicates.add(batch)
        if has["camera_motion"]:
            labels = pc.fill_null(batch["camera_motion"], UNMEASURED)
            for entry in pc.value_counts(labels).to_pylist():
                label = str(entry["values"])
                camera_counts[label] += int(entry["counts"])
                mask = pc.equal(labels, label).to_numpy(zero_copy_only=False)
                strip = camera_strips.setdefault(label, Lowest(CAMERA_STRIP))
                strip.add(sample_keys(ids[mask], salt=2), ids[mask])
        if has["caption"]:
            mask = batch[_CAPTIONED].to_numpy(zero_copy_only=False)
            captioned += int(np.count_nonzero(mask))
            caption_sample.add(sample_keys(ids[mask], salt=1), ids[mask])
            if has["caption_model"]:
                chosen = batch["caption_model"].filter(batch[_CAPTIONED])
                models.update(str(m) for m in pc.unique(chosen.drop_null()).to_pylist())

    if videos_ds is None:
        stages.append(StageRow("split", False, NOT_RUN))
    else:
        stages.append(
            StageRow(
                "split",
                True,
                f"{files} files: {files - len(failed)} ok ({len(partial)} partial), {len(failed)} failed; "
                f"{n} clips; footage {_hours(footage_s)}, in clips {_hours(clip_s)}",
                at=_stage_at(video_records, "split"),
            )
        )

    # scores
    score_errors: list[tuple[str, str]] = []
    if "score" in clip_records and clips_ds is not None:
        if errors:
            head = clips_ds.to_table(
                columns=["clip_id", "score_error"], filter="score_error IS NOT NULL", limit=FAILED_FILES
            )
            score_errors = list(
                zip(head["clip_id"].to_pylist(), head["score_error"].to_pylist(), strict=True)
            )
        ph = sorted({placeholders[c] for c in score_columns if c in placeholders})
        stages.append(
            StageRow(
                "score",
                True,
                f"{n - errors} of {n} clips scored, {errors} failed; {len(score_columns)} score columns"
                + (f"; placeholder models: {', '.join(ph)}" if ph else ""),
                at=_stage_at(clip_records, "score"),
                placeholder=bool(ph),
            )
        )
    else:
        stages.append(StageRow("score", False, NOT_RUN))

    # duplicates: counted in full, the first `duplicate_groups` groups found listed
    if has["duplicate_of"]:
        stages.append(
            StageRow(
                "dedup",
                True,
                f"{duplicates.count} duplicates of {len(duplicates.roots)} clips (duplicate groups below)",
                at=_stage_at(clip_records, "dedup"),
                placeholder="duplicate_of" in placeholders,
            )
        )
    else:
        stages.append(StageRow("dedup", False, NOT_RUN))

    # filter
    if record is not None and filter_applied:
        stages.append(
            StageRow(
                "filter",
                True,
                f"kept {kept} of {n} clips ({_hours(kept_s)}) with: {expression or '(everything)'}",
                at=str(record.get("at", "")),
            )
        )
    else:
        stages.append(StageRow("filter", False, NOT_RUN))

    # captions: counted in full, `captions` of them sampled at random
    caption_info = NOT_RUN
    if has["caption"]:
        caption_info = f"{captioned} of {n} clips captioned" + (
            f" by {', '.join(sorted(models))}" if models else ""
        )
        stages.append(
            StageRow(
                "caption",
                True,
                caption_info,
                at=_stage_at(clip_records, "caption"),
                placeholder="caption" in placeholders,
            )
        )
    else:
        stages.append(StageRow("caption", False, NOT_RUN))

    known = set(STAGE_ORDER)
    for stage in sorted(clip_records):
        if stage not in known:
            rec = clip_records[stage]
            stages.append(
                StageRow(
                    stage,
                    True,
                    f"{rec.get('rows', '?')} rows; columns {', '.join(rec.get('columns', []))}",
                    at=str(rec.get("at", "")),
                )
            )
    if "encode" not in clip_records:
        stages.append(StageRow("encode", False, NOT_RUN))
    else:
        rec = clip_records["encode"]
        stages.append(
            StageRow(
                "encode",
                True,
                f"{rec.get('rows', '?')} rows; columns {', '.join(rec.get('columns', []))}",
                at=str(rec.get("at", "")),
            )
        )

    # histograms and flags, from the streamed counts
    histograms: list[tuple[str, bytes, list[Threshold]]] = []
    for column, stat in stats.items():
        title = column + ("  [placeholder]" if column in placeholders else "")
        svg = histogram_counts_svg(
            stat.counts,
            stat.edges,
            title,
            [(t.op, t.value, t.is_rule) for t in stat.marks],
            stat.kept if filter_applied else None,
        )
        histograms.append((column, svg, stat.marks))
    flags = [(c, true, n - true - nulls, nulls) for c, (true, nulls) in flag_counts.items()]

    # the sampled clips, read whole by row id: grid, extremes, captions, duplicate groups
    groups = duplicates.groups
    roots = _root_row_ids(clips_ds, list(groups)) if clips_ds is not None else {}
    dup_ids = [*roots.values(), *(rid for members in groups.values() for _, rid in members)]
    extreme_ids = {c: (s.highest.ids, s.lowest.ids) for c, s in stats.items()}
    every = [random_grid.ids, caption_sample.ids, np.asarray(dup_ids, np.uint64)]
    every += [ids for pair in extreme_ids.values() for ids in pair]
    every += [strip.ids for strip in camera_strips.values()]
    needed = np.unique(np.concatenate(every)) if clips_ds is not None else np.zeros(0, np.uint64)
    card_columns = ["clip_id", "uri", "start_s", "end_s", "thumbnail", *score_columns]
    card_columns += [c for c in ("selected", "duplicate_of", "caption") if c in names]
    rows: dict[int, dict[str, Any]] = {}
    if len(needed):
        assert clips_ds is not None
        table = ClipReader(clips_ds).columns(needed.tolist(), card_columns)
        rows = dict(zip(needed.tolist(), table.to_pylist(), strict=True))
    previews = _previews(clips_ds, random_grid.ids) if clips_ds is not None else {}

    def card(rid: int) -> Card:
        r = rows[rid]
        preview, error = previews.get(rid, (None, None))
        return Card(
            clip_id=r["clip_id"],
            video_name=(r.get("uri") or "").rsplit("/", 1)[-1],
            start_s=r["start_s"] or 0.0,
            end_s=r["end_s"] or 0.0,
            thumbnail_uri=data_uri(r["thumbnail"], "image/jpeg") if r.get("thumbnail") else None,
            preview_uri=preview,
            preview_error=error,
            scores={c: r.get(c) for c in score_columns},
            selected=r.get("selected"),
            duplicate_of=r.get("duplicate_of"),
            caption=r.get("caption"),
        )

    thumbs = {
        rows[r]["clip_id"]: data_uri(rows[r]["thumbnail"], "image/jpeg")
        for r in map(int, dup_ids)
        if rows[r]["thumbnail"]
    }
    clip_versions = store.versions(CLIPS)
    return ReportData(
        root=str(store.root),
        generated_at=utc_now(),
        version=_package_version(),
        clips_version=clips_ds.version if clips_ds is not None else None,
        videos_version=videos_ds.version if videos_ds is not None else None,
        stages=stages,
        failed_files=failed[:FAILED_FILES],
        partial_files=partial[:FAILED_FILES],
        score_errors=score_errors,
        filter_expression=expression,
        filter_applied=filter_applied,
        histograms=histograms,
        flags=flags,
        score_columns=score_columns,
        placeholders=placeholders,
        cards=[card(int(rid)) for rid in random_grid.ids],
        total_clips=n,
        extremes=[
            (c, [card(int(r)) for r in high], [card(int(r)) for r in low])
            for c, (high, low) in extreme_ids.items()
        ],
        captions=[card(int(rid)) for rid in caption_sample.ids],
        caption_info=caption_info,
        duplicate_groups=[
            (root, [cid for cid, _ in members], duplicates.sizes[root]) for root, members in groups.items()
        ],
        duplicate_count=duplicates.count,
        duplicate_group_count=len(duplicates.roots),
        thumbnails=thumbs,
        records={VIDEOS: video_records, CLIPS: clip_records},
        versions=[(int(v["version"]), str(v["timestamp"])) for v in clip_versions],
        camera_labels=[
            (label, camera_counts[label], [card(int(r)) for r in camera_strips[label].ids])
            for label in (*LABELS, UNMEASURED)
            if camera_counts[label]
        ],
    )


class _DuplicateGroups:
    """Duplicates counted in full, grouped by the clip they duplicate; the first `limit` groups found
    are kept with at most DUPLICATE_MEMBERS members each (clip_id, row id) and their full sizes. The
    distinct roots are held as one Arrow string array (O(groups), not O(clips))."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.roots = pa.array([], pa.string())
        self.groups: dict[str, list[tuple[str, int]]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        batch = batch.filter(pc.is_valid(batch["duplicate_of"]))
        if batch.num_rows == 0:
            return
        self.count += batch.num_rows
        of = batch["duplicate_of"]
        found = pc.unique(of)  # in order of first appearance
        self.roots = pc.unique(pa.concat_arrays([self.roots, found]))
        # a batch's first `limit` distinct roots hold every new one the listing still has room for
        for root in found.slice(0, self.limit).to_pylist() if len(self.groups) < self.limit else ():
            if len(self.groups) < self.limit:
                self.groups.setdefault(root, [])
        if not self.groups:
            return
        hit = pc.is_in(of, value_set=pa.array(list(self.groups), pa.string()))
        members = pa.table({"of": of, "clip_id": batch["clip_id"], "rid": batch[ROW_ID]}).filter(hit)
        for root, size in zip(*pc.value_counts(members["of"]).flatten(), strict=True):
            self.sizes[root.as_py()] = self.sizes.get(root.as_py(), 0) + size.as_py()
            room = DUPLICATE_MEMBERS - len(self.groups[root.as_py()])
            if room > 0:
                mine = members.filter(pc.equal(members["of"], root)).slice(0, room)
                self.groups[root.as_py()] += zip(
                    mine["clip_id"].to_pylist(), mine["rid"].to_pylist(), strict=True
                )


def _root_row_ids(ds: lance.LanceDataset, clip_ids: Sequence[str]) -> dict[str, int]:
    """Row ids of a few clips named by clip_id: one equality lookup each (the clip_id index answers it)."""
    out: dict[str, int] = {}
    for clip_id in clip_ids:
        found = ds.to_table(
            columns=["clip_id"], filter=f"clip_id = {_quote(clip_id)}", with_row_id=True, limit=1
        )
        if found.num_rows:
            out[clip_id] = int(found[ROW_ID][0].as_py())
    return out


def _package_version() -> str:
    try:
        return metadata.version("reelforge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _previews(ds: lance.LanceDataset, row_ids: np.ndarray) -> dict[int, tuple[str | None, str | None]]:
    """Animated previews by row id: (data URI, None) or (None, why there is none)."""
    if not len(row_ids):
        return {}
    ids = [int(r) for r in row_ids]
    out: dict[int, tuple[str | None, str | None]] = {}
    for rid, data in zip(ids, ClipReader(ds).blobs(ids), strict=True):
        if not data:
            out[rid] = (None, "no clip bytes in the store")
            continue
        try:
            out[rid] = (data_uri(animated_preview(data, PREVIEW_FRAMES, PREVIEW_WIDTH), "image/webp"), None)
        except PreviewError as err:
            out[rid] = (None, str(err))
    return out


# ---- HTML ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 2rem 3rem;color:#1d232b;background:#fafbfc}
h1{margin:1.2rem 0 .2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d7dde5;padding-bottom:.2rem}
.meta{color:#5b6573;font-size:.9rem}
table{border-collapse:collapse;font-size:.88rem;margin:.4rem 0}td,th{border:1px solid #d7dde5;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#eef2f6}
.notrun{color:#8a6d00;font-style:italic}
.badge{display:inline-block;font-size:.72rem;font-weight:600;padding:.05rem .4rem;border-radius:.6rem;margin-left:.3rem;
vertical-align:middle}.placeholder{background:#ffe08a;color:#5c4400;border:1px solid #d4a800}
.kept{background:#d4f0dc;color:#1d5c2e}.removed{background:#f6d5d2;color:#7a1f17}.dup{background:#e4dcf5;color:#43307a}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plot{background:#fff;border:1px solid #d7dde5;padding:.4rem;margin:0}
.plot img{display:block;width:380px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.8rem}
.strip{display:flex;gap:.5rem;overflow-x:auto}.strip-item{margin:0;width:160px;flex:none;font-size:.75rem}.strip-item img{width:160px}
.card{background:#fff;border:1px solid #d7dde5;border-radius:6px;padding:.4rem;font-size:.78rem}
.card img{width:100%;display:block;border-radius:4px;background:#222;min-height:60px}
.card .id{font-family:ui-monospace,monospace;font-size:.7rem;word-break:break-all;color:#5b6573}
.card .scores{margin:.2rem 0;display:grid;grid-template-columns:auto auto;gap:0 .5rem}
.card details summary{cursor:pointer;color:#5b6573}
.card .caption{font-style:italic;margin-top:.2rem}
.noimg{display:flex;align-items:center;justify-content:center;height:110px;background:#eee;color:#777}
.captions td img{width:200px}.dupgroup{display:flex;gap:.4rem;flex-wrap:wrap;align-items:flex-start;margin:.5rem 0}
.dupgroup figure{margin:0;width:150px;font-size:.7rem}.dupgroup img{width:150px;display:block}
.dupgroup .id{font-family:ui-monospace,monospace;word-break:break-all;color:#5b6573}
pre{background:#f1f3f6;padding:.5rem;overflow:auto;max-height:28rem;font-size:.78rem}
.controls{margin:.5rem 0}.controls select,.controls button{font-size:.9rem}
details.extremes{margin:.6rem 0}details.extremes>summary{cursor:pointer;font-weight:600;font-size:1.05rem}
"""

# Sorting the grid: each card carries data-<column> values; missing scores always sort last.
# Hovering a card swaps its still thumbnail for the animated preview.
_JS = """
(function(){
  const grid=document.getElementById('grid'); if(!grid) return;
  const key=document.getElementById('sort-key'), dir=document.getElementById('sort-dir');
  function sort(){
    const k=key.value, desc=dir.value==='desc';
    const cards=Array.from(grid.querySelectorAll('.card'));
    cards.sort(function(a,b){
      if(k==='order') return (+a.dataset.order)-(+b.dataset.order);
      const attr='data-s-'+k.toLowerCase();
      const va=parseFloat(a.getAttribute(attr)), vb=parseFloat(b.getAttribute(attr));
      const na=isNaN(va), nb=isNaN(vb);
      if(na||nb) return na-nb;
      return desc? vb-va : va-vb;
    });
    cards.forEach(function(c){grid.appendChild(c);});
  }
  key.addEventListener('change',sort); dir.addEventListener('change',sort);
  grid.querySelectorAll('.card img.thumb').forEach(function(img){
    const still=img.getAttribute('src'), anim=img.dataset.preview;
    if(!anim) return;
    img.parentElement.addEventListener('mouseenter',function(){img.src=anim;});
    img.parentElement.addEventListener('mouseleave',function(){img.src=still||anim;});
  });
  window.reelforgeSort=function(k,d){key.value=k;dir.value=d;sort();};
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _sort_attr(column: str) -> str:
    """The card attribute holding a score (HTML lowercases attribute names; the JS reads the same)."""
    return "data-s-" + column.lower()


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}"


def render(data: ReportData) -> str:
    ph = data.placeholders
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        # No network at all: the policy blocks any fetch the page might attempt.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>reelforge report: {_e(data.root)}</title><style>{_CSS}</style></head><body>",
        "<h1>reelforge dataset report</h1>",
        f"<p class='meta'>store <code>{_e(data.root)}</code> · clips version {_e(data.clips_version or NOT_RUN)} · "
        f"videos version {_e(data.videos_version or NOT_RUN)} · reelforge {_e(data.version)} · "
        f"generated {_e(data.generated_at)}</p>",
    ]
    if ph:
        parts.append(
            "<p>" + _badge("placeholder", "placeholder") + " marks values from models with random weights "
            f"(not real scores): {_e(', '.join(sorted(ph)))}.</p>"
        )

    # counts per stage
    parts.append(
        "<h2 id='stages'>Counts per stage</h2><table><tr><th>stage</th><th>result</th><th>run at</th></tr>"
    )
    for s in data.stages:
        summary = _e(s.summary) if s.ran else f"<span class='notrun'>{_e(s.summary)}</span>"
        if s.placeholder:
            summary += _badge("placeholder", "placeholder")
        parts.append(f"<tr><td>{_e(s.stage)}</td><td>{summary}</td><td>{_e(s.at)}</td></tr>")
    parts.append("</table>")
    parts.append("<h3>Failed files</h3>")
    if not data.stages[0].ran:
        parts.append(f"<p class='notrun'>{NOT_RUN}</p>")
    elif data.failed_files or data.partial_files:
        parts.append(
            "<table id='failed-files'><tr><th>file</th><th>status</th><th>reason</th><th>detail</th></tr>"
        )
        for status, rows in (("failed", data.failed_files), ("partial", data.partial_files)):
            for f in rows:
                parts.append(
                    f"<tr><td>{_e(f['uri'])}</td><td>{status}</td><td>{_e(f['reason'])}</td>"
                    f"<td>{_e(f['detail'])}</td></tr>"
                )
        parts.append("</table>")
    else:
        parts.append("<p>none: every file produced clips</p>")
    if data.score_errors:
        parts.append("<h3>Clips whose scoring failed</h3><table><tr><th>clip</th><th>error</th></tr>")
        parts += [f"<tr><td>{_e(c)}</td><td>{_e(e)}</td></tr>" for c, e in data.score_errors]
        parts.append("</table>")

    # scores
    parts.append("<h2 id='scores'>Score distributions</h2>")
    if data.filter_expression:
        state = "recorded with the dataset" if data.filter_applied else "configured, not applied yet"
        parts.append(
            f"<p>filter ({state}): <code>{_e(data.filter_expression)}</code>. Red lines are its "
            "thresholds; shading marks what a rule removes.</p>"
        )
    if not data.histograms:
        parts.append(f"<p class='notrun'>score: {NOT_RUN}</p>")
    else:
        parts.append("<div class='plots'>")
        for column, svg, marks in data.histograms:
            badge = _badge("placeholder", "placeholder") if column in ph else ""
            rules = "; ".join(t.text for t in marks) or "no threshold"
            parts.append(
                f"<figure class='plot' data-column='{_e(column)}'><img alt='histogram of {_e(column)}' "
                f"src='{data_uri(svg, 'image/svg+xml')}'><figcaption>{_e(column)}{badge} · {_e(rules)}"
                "</figcaption></figure>"
            )
        parts.append("</div>")
    if data.flags:
        parts.append("<table><tr><th>flag</th><th>true</th><th>false</th><th>missing</th></tr>")
        for column, true, false, nulls in data.flags:
            badge = _badge("placeholder", "placeholder") if column in ph else ""
            parts.append(
                f"<tr><td>{_e(column)}{badge}</td><td>{true}</td><td>{false}</td><td>{nulls}</td></tr>"
            )
        parts.append("</table>")

    # grid
    in_filter = {t.column for t in thresholds(data.filter_expression)} if data.filter_expression else set()
    key_scores = [c for c in data.score_columns if c in in_filter] or data.score_columns[:KEY_SCORES]
    parts.append("<h2 id='clips'>Clips</h2>")
    if not data.cards:
        parts.append(f"<p class='notrun'>split: {NOT_RUN}</p>" if data.total_clips == 0 else "")
    else:
        parts.append(
            f"<p>{len(data.cards)} of {data.total_clips} clips, a random sample (the same clips on every "
            "run: picked by a hash of their row id); hover a clip to play its preview.</p>"
        )
        options = ["<option value='order'>sample order</option>"] + [
            f"<option value='{_e(c)}'>{_e(c)}{' (placeholder)' if c in ph else ''}</option>"
            for c in data.score_columns
        ]
        parts.append(
            "<div class='controls'>sort by <select id='sort-key'>" + "".join(options) + "</select> "
            "<select id='sort-dir'><option value='desc'>high to low</option><option value='asc'>low to high"
            "</option></select></div><div class='grid' id='grid'>"
        )
        for i, c in enumerate(data.cards):
            parts.append(_card_html(c, i, ph, key_scores))
        parts.append("</div>")

    # highest and lowest per score
    if data.extremes:
        parts.append(
            "<h2 id='extremes'>Highest and lowest per score</h2><p>Over every clip with a value; stills only "
            "(previews are in the grid above). The filter's scores are open, the others fold away.</p>"
        )
        for column, highest, lowest in data.extremes:
            badge = _badge("placeholder", "placeholder") if column in ph else ""
            state = " open" if column in key_scores else ""
            parts.append(f"<details class='extremes'{state}><summary>{_e(column)}{badge}</summary>")
            for label, cards in (("highest", highest), ("lowest", lowest)):
                parts.append(
                    f"<p class='meta'>{label} {len(cards)}</p>"
                    f"<div class='grid extremes' data-column='{_e(column)}' data-side='{label}'>"
                )
                parts += [_card_html(c, i, ph, [column, *key_scores]) for i, c in enumerate(cards)]
                parts.append("</div>")
            parts.append("</details>")

    # camera motion: counts per label and a strip of sampled clips each
    if data.camera_labels:
        parts.append(
            "<h2 id='camera'>Camera motion</h2><p>camera_motion per clip (pan_left: the camera turns left, "
            "the content moves right; tilt_up: the content moves down; zoom_in: the content grows); "
            f"up to {CAMERA_STRIP} clips sampled at random per label.</p><table><tr><th>label</th><th>clips</th></tr>"
        )
        parts += [f"<tr><td>{_e(label)}</td><td>{count}</td></tr>" for label, count, _ in data.camera_labels]
        parts.append("</table>")
        for label, _, cards in data.camera_labels:
            parts.append(f"<p class='meta'>{_e(label)}</p><div class='strip' data-camera='{_e(label)}'>")
            parts += [_strip_html(c) for c in cards]
            parts.append("</div>")

    # captions
    parts.append("<h2 id='captions'>Captions</h2>")
    if not data.captions:
        parts.append(f"<p class='notrun'>caption: {_e(data.caption_info)}</p>")
    else:
        badge = _badge("placeholder", "placeholder") if "caption" in ph else ""
        parts.append(
            f"<p>{_e(data.caption_info)}{badge}; {len(data.captions)} of them, sampled at random:</p>"
            "<table class='captions'>"
        )
        for c in data.captions:
            img = f"<img alt='' src='{c.thumbnail_uri}'>" if c.thumbnail_uri else ""
            parts.append(
                f"<tr><td>{img}<div class='id'>{_e(c.clip_id)}</div></td><td>{_e(c.caption)}</td></tr>"
            )
        parts.append("</table>")

    # duplicates
    parts.append("<h2 id='duplicates'>Duplicate groups</h2>")
    if not any(s.stage == "dedup" and s.ran for s in data.stages):
        parts.append(f"<p class='notrun'>dedup: {NOT_RUN}</p>")
    elif not data.duplicate_groups:
        parts.append("<p>no duplicates found</p>")
    else:
        badge = _badge("placeholder", "placeholder") if "duplicate_of" in ph else ""
        parts.append(
            f"<p>{data.duplicate_count} duplicates in {data.duplicate_group_count} groups"
            + (
                f", the first {len(data.duplicate_groups)} found shown"
                if len(data.duplicate_groups) < data.duplicate_group_count
                else ""
            )
            + f" (the first clip of a group is the one kept){badge}</p>"
        )
        for root, members, size in data.duplicate_groups:
            parts.append("<div class='dupgroup'>")
            for cid in [root, *members]:
                src = data.thumbnails.get(cid)
                img = f"<img alt='' src='{src}'>" if src else "<div class='noimg'>no thumbnail</div>"
                parts.append(f"<figure>{img}<figcaption class='id'>{_e(cid)}</figcaption></figure>")
            if size > len(members):
                parts.append(f"<figure><div class='noimg'>+{size - len(members)} more</div></figure>")
            parts.append("</div>")

    # configs and models
    parts.append("<h2 id='configs'>Configs and model versions</h2>")
    any_record = False
    for table in (VIDEOS, CLIPS):
        for stage, rec in sorted(data.records[table].items()):
            any_record = True
            models = rec.get("models") or {}
            badge = (
                _badge("placeholder", "placeholder")
                if any(v == stage or v.startswith(stage + "/") for v in ph.values())
                else ""
            )
            parts.append(
                f"<h3>{_e(table)} · {_e(stage)}{badge}</h3><p class='meta'>at {_e(rec.get('at', '?'))}"
                f"{' · columns ' + _e(', '.join(rec.get('columns', []))) if rec.get('columns') else ''}</p>"
            )
            if models:
                parts.append(
                    "<p>models:</p><pre>" + _e(json.dumps(models, indent=1, sort_keys=True)) + "</pre>"
                )
            config = rec.get(
                "config", {k: v for k, v in rec.items() if k not in ("models", "columns", "at", "rows")}
            )
            parts.append(
                "<details><summary>config</summary><pre>"
                + _e(json.dumps(config, indent=1, sort_keys=True, default=str))
                + "</pre></details>"
            )
    if not any_record:
        parts.append(f"<p class='notrun'>{NOT_RUN}</p>")
    if data.versions:
        parts.append("<h3>clips versions</h3><table><tr><th>version</th><th>committed</th></tr>")
        parts += [f"<tr><td>{v}</td><td>{_e(t)}</td></tr>" for v, t in data.versions]
        parts.append("</table>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def _score_rows(scores: Mapping[str, float | None], placeholders: Mapping[str, str]) -> str:
    return "".join(
        f"<span>{_e(k)}{_badge('placeholder', 'placeholder') if k in placeholders else ''}</span>"
        f"<span>{_fmt(v)}</span>"
        for k, v in scores.items()
    )


def _strip_html(c: Card) -> str:
    """A thumbnail with its clip id, camera speed and object motion: one item of a label's strip."""
    media = (
        f"<img alt='{_e(c.clip_id)}' src='{c.thumbnail_uri}'>"
        if c.thumbnail_uri
        else "<div class='noimg'></div>"
    )
    speeds = " · ".join(f"{k} {_fmt(c.scores.get(k))}" for k in ("camera_speed", "object_motion"))
    return (
        f"<figure class='strip-item'>{media}<figcaption>{_e(c.clip_id)}<br>{_e(speeds)}</figcaption></figure>"
    )


def _card_html(c: Card, index: int, placeholders: Mapping[str, str], key_scores: Sequence[str]) -> str:
    attrs = " ".join(
        f"{_sort_attr(k)}='{'' if v is None else _e(repr(float(v)))}'" for k, v in c.scores.items()
    )
    if c.thumbnail_uri or c.preview_uri:
        preview = f" data-preview='{c.preview_uri}'" if c.preview_uri else ""
        media = f"<img class='thumb' alt='{_e(c.clip_id)}' src='{c.thumbnail_uri or c.preview_uri}'{preview}>"
    else:
        media = "<div class='noimg'>no thumbnail</div>"
    badges = ""
    if c.selected is not None:
        badges += _badge("kept", "kept") if c.selected else _badge("removed", "removed")
    if c.duplicate_of:
        badges += _badge("duplicate", "dup")
    key = {k: c.scores[k] for k in key_scores if k in c.scores}
    rest = {k: v for k, v in c.scores.items() if k not in key}
    scores = f"<div class='scores'>{_score_rows(key, placeholders)}</div>"
    if rest:
        scores += (
            f"<details><summary>all scores</summary><div class='scores'>{_score_rows(rest, placeholders)}"
            "</div></details>"
        )
    note = f"<div class='meta'>preview: {_e(c.preview_error)}</div>" if c.preview_error else ""
    caption = f"<div class='caption'>{_e(c.caption)}</div>" if c.caption else ""
    return (
        f"<div class='card' data-order='{index}' {attrs}>{media}"
        f"<div>{_e(c.video_name)} {c.start_s:.2f}-{c.end_s:.2f} s{badges}</div>"
        f"<div class='id'>{_e(c.clip_id)}</div>{note}{scores}{caption}</div>"
    )


def build_report(store: Store, thumbnails: int, configured_filter: str = "", **samples: int) -> str:
    """The report of the store's latest versions as one HTML string (`samples`: see `collect`)."""
    return render(collect(store, thumbnails, configured_filter, **samples))

"""The HTML report of a dataset version: one self-contained file a person can judge the data by.

Sections: counts per stage (files, failed files with reasons, clips, kept clips, hours), a histogram
of every score with the recorded filter's thresholds drawn on it, a grid of clip thumbnails with
animated previews that sorts by any score, sample captions beside their clips, duplicate groups, and
the configs and model versions each stage recorded in the dataset metadata.

Images are inline `data:` URIs and the CSS/JS is inline, so the file opens offline. A stage that has
not run says so; a column produced by a random-weight model (its stage record marks it
`placeholder`) carries a visible "placeholder" badge wherever it is shown.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import filtering
from pipelines.report_media import PreviewError, animated_preview, data_uri, histogram_svg
from pipelines.store import CLIPS, CLIPS_SCHEMA, VIDEOS, Store, StoreError, utc_now

NOT_RUN = "not run yet"
# Frames and width of the animated previews: small enough that 48 previews stay a few MB.
PREVIEW_FRAMES, PREVIEW_WIDTH = 8, 160
SAMPLE_CAPTIONS = 8
# Scores always visible on a card (the filter's columns, else the first few); the rest fold away.
KEY_SCORES = 4
DUPLICATE_GROUPS = 12
FAILED_FILES = 50
# Ordering of the per-stage rows; stages recorded under other names follow in name order.
STAGE_ORDER = ("split", "score", "dedup", "filter", "caption", "encode")


# ---- facts from the store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """One comparison of a score column with a number in the filter expression, column on the left."""

    column: str
    op: str
    value: float
    is_rule: bool  # a top-level `and` term: it removes clips on its own

    @property
    def text(self) -> str:
        return f"{self.column} {self.op} {self.value:g}"


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "=": "==", "!=": "!="}


def thresholds(expression: str) -> list[Threshold]:
    """Every `column <op> number` comparison of a filter expression (any nesting), column first."""
    node = filtering.parse(expression)
    rules = set(map(id, filtering.rules(node)))
    found: list[Threshold] = []

    def walk(n: filtering.Node, is_rule: bool) -> None:
        if isinstance(n, filtering.Compare):
            left, right, op = n.left, n.right, n.op
            if isinstance(left, filtering.Literal) and isinstance(right, filtering.Column):
                left, right, op = right, left, _FLIPPED[op]
            if (
                isinstance(left, filtering.Column)
                and isinstance(right, filtering.Literal)
                and isinstance(right.value, float)
            ):
                found.append(Threshold(left.name, "==" if op == "=" else op, right.value, is_rule))
        elif isinstance(n, filtering.Not):
            walk(n.inner, False)
        elif isinstance(n, filtering.BoolOp):
            for term in n.terms:
                walk(term, False)

    if node is not None:
        for top in filtering.rules(node):
            walk(top, id(top) in rules and not isinstance(top, filtering.BoolOp))
    return found


def placeholder_columns(records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Columns produced by random-weight models, from the stage records: {column: "stage/model"}.

    A model entry marked `placeholder: true` taints the columns it lists, or, without a `columns` key,
    every column of its stage (the safe reading: an unlisted column might come from it).
    """
    out: dict[str, str] = {}
    for stage, record in records.items():
        stage_columns = list(record.get("columns", []))
        models = record.get("models") or {}
        entries: list[tuple[str, Any]] = [(stage, models)] + [(f"{stage}/{k}", v) for k, v in models.items()]
        for name, entry in entries:
            if isinstance(entry, Mapping) and entry.get("placeholder") is True:
                # an explicit list (even empty) is authoritative; no list means the whole stage
                for column in entry.get("columns", stage_columns):
                    out.setdefault(column, name)
    return out


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
    cards: list[Card]
    total_clips: int
    captions: list[Card]
    caption_info: str
    duplicate_groups: list[tuple[str, list[str]]]
    duplicate_count: int
    thumbnails: dict[str, str]
    records: dict[str, dict[str, dict[str, Any]]]
    versions: list[tuple[int, str]]
    unscored_sections: dict[str, str] = field(default_factory=dict)


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


def collect(store: Store, thumbnails: int, configured_filter: str = "") -> ReportData:
    """Read everything the report shows from the store (one pass per table, blobs only for previews)."""
    videos_ds, clips_ds = store.dataset(VIDEOS), store.dataset(CLIPS)
    if videos_ds is None and clips_ds is None:
        raise StoreError(f"no dataset in {store.root}: run `reelforge split` first")
    clip_records = store.stage_records(CLIPS)
    video_records = store.stage_records(VIDEOS)
    placeholders = placeholder_columns(clip_records)
    stages: list[StageRow] = []

    # files and clips (split)
    failed: list[dict[str, str]] = []
    partial: list[dict[str, str]] = []
    footage_s = 0.0
    if videos_ds is not None:
        videos = videos_ds.to_table(columns=["uri", "status", "error", "duration_s", "num_clips"]).to_pylist()
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
    wanted = (
        ["clip_id", "video_id", "uri", "start_s", "end_s"]
        + score_columns
        + flag_columns
        + [c for c in ("selected", "duplicate_of", "caption", "caption_model", "score_error") if c in names]
    )
    clips = clips_ds.to_table(columns=wanted) if clips_ds is not None else CLIPS_SCHEMA.empty_table()
    n = clips.num_rows
    clip_s = float(pc.sum(pc.subtract(clips["end_s"], clips["start_s"])).as_py() or 0.0) if n else 0.0
    if videos_ds is None:
        stages.append(StageRow("split", False, NOT_RUN))
    else:
        ok = len(videos) - len(failed)
        stages.append(
            StageRow(
                "split",
                True,
                f"{len(videos)} files: {ok} ok ({len(partial)} partial), {len(failed)} failed; {n} clips; "
                f"footage {_hours(footage_s)}, in clips {_hours(clip_s)}",
                at=str(video_records.get("split", {}).get("at", "")),
            )
        )

    # scores
    score_errors: list[tuple[str, str]] = []
    if "score" in clip_records:
        errors = (
            clips.filter(pc.is_valid(clips["score_error"])) if "score_error" in names else clips.slice(0, 0)
        )
        score_errors = list(
            zip(errors["clip_id"].to_pylist(), errors["score_error"].to_pylist(), strict=True)
        )
        ph = sorted({placeholders[c] for c in score_columns if c in placeholders})
        stages.append(
            StageRow(
                "score",
                True,
                f"{n - len(score_errors)} of {n} clips scored, {len(score_errors)} failed; "
                f"{len(score_columns)} score columns"
                + (f"; placeholder models: {', '.join(ph)}" if ph else ""),
                at=str(clip_records["score"].get("at", "")),
                placeholder=bool(ph),
            )
        )
    else:
        stages.append(StageRow("score", False, NOT_RUN))

    # duplicates
    groups: dict[str, list[str]] = {}
    dup_count = 0
    if "duplicate_of" in names:
        for cid, dup in zip(clips["clip_id"].to_pylist(), clips["duplicate_of"].to_pylist(), strict=True):
            if dup is not None:
                groups.setdefault(dup, []).append(cid)
                dup_count += 1
        stages.append(
            StageRow(
                "dedup",
                True,
                f"{dup_count} duplicates of {len(groups)} clips (duplicate groups below)",
                at=str(clip_records.get("dedup", {}).get("at", "")),
                placeholder="duplicate_of" in placeholders,
            )
        )
    else:
        stages.append(StageRow("dedup", False, NOT_RUN))

    # filter
    record = clip_records.get("filter")
    filter_applied = record is not None and "selected" in names
    expression = str(record["config"].get("expression", "")) if record is not None else configured_filter
    kept_mask: np.ndarray | None = None
    if record is not None and filter_applied:
        kept_mask = np.asarray(
            pc.fill_null(clips["selected"], False).to_numpy(zero_copy_only=False), dtype=bool
        )
        kept = clips.filter(pa.array(kept_mask))
        kept_s = (
            float(pc.sum(pc.subtract(kept["end_s"], kept["start_s"])).as_py() or 0.0)
            if kept.num_rows
            else 0.0
        )
        stages.append(
            StageRow(
                "filter",
                True,
                f"kept {kept.num_rows} of {n} clips ({_hours(kept_s)}) with: {expression or '(everything)'}",
                at=str(record.get("at", "")),
            )
        )
    else:
        stages.append(StageRow("filter", False, NOT_RUN))

    # captions
    caption_cards_ids: list[str] = []
    caption_info = NOT_RUN
    if "caption" in names:
        captioned = clips.filter(pc.is_valid(clips["caption"]))
        models = sorted(set(captioned["caption_model"].to_pylist())) if "caption_model" in names else []
        caption_info = f"{captioned.num_rows} of {n} clips captioned" + (
            f" by {', '.join(str(m) for m in models)}" if models else ""
        )
        caption_cards_ids = captioned["clip_id"].to_pylist()[:SAMPLE_CAPTIONS]
        stages.append(
            StageRow(
                "caption",
                True,
                caption_info,
                at=str(clip_records.get("caption", {}).get("at", "")),
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

    # histograms and flags
    marks = thresholds(expression) if expression else []
    histograms: list[tuple[str, bytes, list[Threshold]]] = []
    for column in score_columns:
        values = clips[column].drop_null().to_numpy()
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        own = [t for t in marks if t.column == column]
        kept_values = None
        if kept_mask is not None:
            col = np.asarray(clips[column].to_numpy(zero_copy_only=False), dtype=np.float64)
            kept_values = col[kept_mask & np.isfinite(col)]
        title = column + ("  [placeholder]" if column in placeholders else "")
        svg = histogram_svg(values, title, [(t.op, t.value, t.is_rule) for t in own], kept_values)
        histograms.append((column, svg, own))
    flags = []
    for column in flag_columns:
        col = clips[column]
        true = int(pc.sum(pc.cast(pc.fill_null(col, False), pa.int64())).as_py() or 0)
        nulls = col.null_count
        flags.append((column, true, n - true - nulls, nulls))

    # thumbnail grid: an even spread over clip order, so kept and removed clips both appear
    order = (
        np.argsort(np.asarray(clips["clip_id"].to_pylist(), dtype=object), kind="stable")
        if n
        else np.zeros(0, int)
    )
    shown = (
        order[np.linspace(0, n - 1, num=min(thumbnails, n)).round().astype(int)] if n and thumbnails else []
    )
    shown_ids = [clips["clip_id"][int(i)].as_py() for i in shown]
    dup_ids = [cid for root in list(groups)[:DUPLICATE_GROUPS] for cid in [root, *groups[root]]]
    thumbs = _thumbnails(store, sorted(set(shown_ids) | set(caption_cards_ids) | set(dup_ids)))
    previews = _previews(store, shown_ids)
    needed = set(shown_ids) | set(caption_cards_ids)
    card_columns = {
        "clip_id",
        "uri",
        "start_s",
        "end_s",
        "selected",
        "duplicate_of",
        "caption",
        *score_columns,
    }
    rows = {
        r["clip_id"]: r
        for r in clips.select([c for c in clips.column_names if c in card_columns]).to_pylist()
        if r["clip_id"] in needed
    }

    def card(cid: str) -> Card:
        r = rows[cid]
        preview, error = previews.get(cid, (None, None))
        return Card(
            clip_id=cid,
            video_name=(r.get("uri") or "").rsplit("/", 1)[-1],
            start_s=r["start_s"] or 0.0,
            end_s=r["end_s"] or 0.0,
            thumbnail_uri=thumbs.get(cid),
            preview_uri=preview,
            preview_error=error,
            scores={c: r.get(c) for c in score_columns},
            selected=r.get("selected"),
            duplicate_of=r.get("duplicate_of"),
            caption=r.get("caption"),
        )

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
        score_errors=score_errors[:FAILED_FILES],
        filter_expression=expression,
        filter_applied=filter_applied,
        histograms=histograms,
        flags=flags,
        score_columns=score_columns,
        placeholders=placeholders,
        cards=[card(c) for c in shown_ids],
        total_clips=n,
        captions=[card(c) for c in caption_cards_ids],
        caption_info=caption_info,
        duplicate_groups=[(root, groups[root]) for root in list(groups)[:DUPLICATE_GROUPS]],
        duplicate_count=dup_count,
        thumbnails=thumbs,
        records={VIDEOS: video_records, CLIPS: clip_records},
        versions=[(int(v["version"]), str(v["timestamp"])) for v in clip_versions],
    )


def _package_version() -> str:
    try:
        return metadata.version("reelforge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _thumbnails(store: Store, clip_ids: Sequence[str]) -> dict[str, str]:
    if not clip_ids:
        return {}
    table = store.read_clips(["clip_id", "thumbnail"], filter=_in_list(clip_ids))
    return {
        cid: data_uri(jpeg, "image/jpeg")
        for cid, jpeg in zip(table["clip_id"].to_pylist(), table["thumbnail"].to_pylist(), strict=True)
        if jpeg
    }


def _previews(store: Store, clip_ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
    """Animated previews by clip_id: (data URI, None) or (None, why there is none)."""
    if not clip_ids:
        return {}
    blobs = store.read_clip_bytes(list(clip_ids))
    out: dict[str, tuple[str | None, str | None]] = {}
    for cid in clip_ids:
        data = blobs.get(cid)
        if not data:
            out[cid] = (None, "no clip bytes in the store")
            continue
        try:
            out[cid] = (data_uri(animated_preview(data, PREVIEW_FRAMES, PREVIEW_WIDTH), "image/webp"), None)
        except PreviewError as err:
            out[cid] = (None, str(err))
    return out


def _in_list(clip_ids: Sequence[str]) -> str:
    quoted = ", ".join("'" + c.replace("'", "''") + "'" for c in clip_ids)
    return f"clip_id IN ({quoted})"


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
    parts.append("<h2 id='clips'>Clips</h2>")
    if not data.cards:
        parts.append(f"<p class='notrun'>split: {NOT_RUN}</p>" if data.total_clips == 0 else "")
    else:
        parts.append(
            f"<p>{len(data.cards)} of {data.total_clips} clips, spread over the clip order; "
            "hover a clip to play its preview.</p>"
        )
        options = ["<option value='order'>clip order</option>"] + [
            f"<option value='{_e(c)}'>{_e(c)}{' (placeholder)' if c in ph else ''}</option>"
            for c in data.score_columns
        ]
        parts.append(
            "<div class='controls'>sort by <select id='sort-key'>" + "".join(options) + "</select> "
            "<select id='sort-dir'><option value='desc'>high to low</option><option value='asc'>low to high"
            "</option></select></div><div class='grid' id='grid'>"
        )
        in_filter = (
            {t.column for t in thresholds(data.filter_expression)} if data.filter_expression else set()
        )
        key_scores = [c for c in data.score_columns if c in in_filter] or data.score_columns[:KEY_SCORES]
        for i, c in enumerate(data.cards):
            parts.append(_card_html(c, i, ph, key_scores))
        parts.append("</div>")

    # captions
    parts.append("<h2 id='captions'>Captions</h2>")
    if not data.captions:
        parts.append(f"<p class='notrun'>caption: {_e(data.caption_info)}</p>")
    else:
        badge = _badge("placeholder", "placeholder") if "caption" in ph else ""
        parts.append(f"<p>{_e(data.caption_info)}{badge}</p><table class='captions'>")
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
            f"<p>{data.duplicate_count} duplicates in {len(data.duplicate_groups)} groups "
            f"(the first clip of a group is the one kept){badge}</p>"
        )
        for root, members in data.duplicate_groups:
            parts.append("<div class='dupgroup'>")
            for cid in [root, *members]:
                src = data.thumbnails.get(cid)
                img = f"<img alt='' src='{src}'>" if src else "<div class='noimg'>no thumbnail</div>"
                parts.append(f"<figure>{img}<figcaption class='id'>{_e(cid)}</figcaption></figure>")
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


def build_report(store: Store, thumbnails: int, configured_filter: str = "") -> str:
    """The report of the store's latest versions as one HTML string."""
    return render(collect(store, thumbnails, configured_filter))

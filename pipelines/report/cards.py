"""The sampled clips every section shows, read whole by row id once: a `Card` per clip.

Only the few sampled clips are read (their thumbnails and scores by row id, and the clip bytes of the
random grid for its animated previews). Nothing looks clips up with `IN (...)` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np

from pipelines.report.media import PreviewError, animated_preview, data_uri
from store import ClipReader

# Frames and width of the animated previews: small enough that 48 previews stay a few MB.
PREVIEW_FRAMES, PREVIEW_WIDTH = 8, 160


@dataclass
class Card:
    """One clip as the report shows it: thumbnail, preview, times and scores."""

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


def read_cards(
    ds: lance.LanceDataset,
    row_ids: np.ndarray,
    score_columns: Sequence[str],
    previewed: np.ndarray,
) -> dict[int, Card]:
    """A card per row id in `row_ids`, with an animated preview for those also in `previewed`."""
    if not len(row_ids):
        return {}
    names = set(ds.schema.names)
    columns = ["clip_id", "uri", "start_s", "end_s", "thumbnail", *score_columns]
    columns += [c for c in ("selected", "duplicate_of", "caption") if c in names]
    table = ClipReader(ds).columns(row_ids.tolist(), columns)
    previews = _previews(ds, previewed)
    cards: dict[int, Card] = {}
    for rid, r in zip(row_ids.tolist(), table.to_pylist(), strict=True):
        preview, error = previews.get(rid, (None, None))
        cards[rid] = _card(r, score_columns, preview, error)
    return cards


def _card(r: dict[str, Any], score_columns: Sequence[str], preview: str | None, error: str | None) -> Card:
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

"""Letterbox, pillarbox and windowbox detection: constant flat borders around the picture.

A border line (a row from the top or bottom, a column from the left or right) is one whose pixels
are, in every sampled frame, within `tolerance` of the border colour: the colour of the outermost
line (near-black bars, or any flat colour). Lines are peeled off each side while that holds, the
rows first, then the columns between the remaining rows (so a windowbox's bars do not hide each
other). A dark scene whose edges are merely dark is not a border: its edge lines vary over the
frames beyond the tolerance, and a border must end at a sharp edge, where the first picture line
stands out from the border colour in some frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.config import BorderConfig
from media.slots import frames_across


@dataclass(frozen=True)
class ContentBox:
    """The picture's box inside the frame, in pixels, and the frame's size."""

    x: int
    y: int
    w: int
    h: int
    frame_w: int
    frame_h: int

    @property
    def border_fraction(self) -> float:
        """Share of the frame's area outside the picture."""
        return 1.0 - (self.w * self.h) / float(self.frame_w * self.frame_h)

    def as_dict(self) -> dict[str, int]:
        """The box as the x, y, w, h columns of the store."""
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


def content_box(frames: np.ndarray, cfg: BorderConfig) -> ContentBox:
    """The picture's box in (n, H, W, 3) uint8 frames; the whole frame when there is no border."""
    height, width = frames.shape[1:3]
    pixels = frames.astype(np.int16)
    top, bottom = _peel(pixels, cfg, axis=1)
    if bottom - top < 2:  # nothing but border colour: a blank clip, not a letterbox
        return ContentBox(0, 0, width, height, width, height)
    rows = pixels[:, top:bottom]
    left, right = _peel(rows, cfg, axis=2)
    if right - left < 2:
        return ContentBox(0, 0, width, height, width, height)
    return ContentBox(left, top, right - left, bottom - top, width, height)


def file_content_box(
    path: str | Path, cfg: BorderConfig, frames: int = 8, *, threads: int = 1
) -> ContentBox | None:
    """The picture's box over a whole file, from one frame in each of `frames` equal slots of it
    (`media.slots.frames_across`: the cheapest frame of each slot; pixels before rotation); None
    when there is no border or nothing decodes. `threads` decoder threads (0 = libavcodec's count).

    The split crops every clip of the file to it (split.extract.crop_borders)."""
    picked = [f.to_ndarray(format="rgb24") for f in frames_across(path, frames, threads=threads)]
    if not picked or len({p.shape for p in picked}) != 1:
        return None
    box = content_box(np.stack(picked), cfg)
    return box if box.border_fraction > 0 else None


def _peel(pixels: np.ndarray, cfg: BorderConfig, axis: int) -> tuple[int, int]:
    """First and end (exclusive) index of the picture along `axis` (1 = rows, 2 = columns)."""
    size = pixels.shape[axis]
    limit = int(cfg.max_side_fraction * size)
    lines = np.moveaxis(pixels, axis, 0)  # (size, n, other, 3)
    start = _border_depth(lines, cfg, limit)
    end = size - _border_depth(lines[::-1], cfg, limit)
    return start, end


def _border_depth(lines: np.ndarray, cfg: BorderConfig, limit: int) -> int:
    """How many lines from the start of `lines` (size, n, other, 3) are border."""
    if limit < 1:
        return 0
    colour = np.median(lines[0].reshape(-1, 3), axis=0)

    def deviation(i: int, j: int) -> np.ndarray:  # (j - i, n, other): distance from the colour
        distance: np.ndarray = np.abs(lines[i:j] - colour).max(axis=-1)
        return distance

    def off(i: int, j: int) -> np.ndarray:  # share of each line's pixels off the border colour
        share: np.ndarray = (deviation(i, j) > cfg.tolerance).mean(axis=(1, 2))
        return share

    depth = 0
    # Most clips have no border: look at a few lines at a time instead of the whole allowed depth.
    while depth < limit:
        chunk = off(depth, min(depth + _CHUNK, limit))
        picture = np.flatnonzero(chunk > cfg.outliers)
        if picture.size:
            depth += int(picture[0])
            break
        depth += chunk.shape[0]
    if depth < cfg.min_border_px:
        return 0
    # Codec ringing (an 8x8 block, 16x16 in chroma, holding both bar and picture) blurs the border's
    # last lines: the picture starts at the first line within ringing_px that is mostly off the
    # border colour. A fade into the picture (a vignette, a dark scene) never gets there.
    ringing = off(depth, min(depth + cfg.ringing_px, limit))
    mostly_picture = np.flatnonzero(ringing >= 0.5)
    if not mostly_picture.size:
        return 0
    depth += int(mostly_picture[0])
    # A sharp edge: the picture's first lines stand out from the border colour over a good share of
    # their pixels in at least one frame.
    band = deviation(depth, min(depth + 3, lines.shape[0]))  # (lines, n, other)
    standing_out = (band > cfg.edge_contrast).mean(axis=2)
    return depth if float(standing_out.max()) >= cfg.edge_share else 0


_CHUNK = 8

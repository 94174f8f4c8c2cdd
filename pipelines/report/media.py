"""Small inline media for the HTML report: animated clip previews, data: URIs, plots.

Everything here returns bytes or `data:` URIs so that the report is one self-contained file that
opens offline and never loads anything from the network.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib
import numpy as np

from media import MediaError, clip_preview

matplotlib.use("Agg")  # headless: the report is rendered in jobs and tests without a display

import matplotlib.pyplot as plt  # after use(): the backend must be chosen first


class PreviewError(ValueError):
    """A clip whose bytes could not be turned into a preview (the report shows the reason instead)."""


def data_uri(data: bytes, mime: str) -> str:
    """The bytes as a base64 data URI of type `mime`."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def animated_preview(mp4: bytes, frames: int = 8, width: int = 160, frame_ms: int = 250) -> bytes:
    """An animated WebP of `frames` frames sampled over the clip (media.clip_preview)."""
    try:
        return clip_preview(mp4, frames, width, frame_ms)
    except MediaError as err:
        raise PreviewError(f"clip bytes do not decode: {err}") from err


def svg_of(figure: plt.Figure) -> bytes:
    """The figure as SVG bytes; the same figure always gives the same bytes (no date stamp)."""
    out = io.BytesIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    plt.close(figure)
    return out.getvalue()


def histogram_edges(
    lo: float, hi: float, thresholds: Sequence[tuple[str, float, bool]] = (), bins: int = 30
) -> np.ndarray:
    """Bin edges for values in [lo, hi]: widened to show a threshold near the data.

    A threshold more than half the data's span off would squash the bars into a sliver, so it is
    left out here and drawn pinned to the edge instead. Fixed edges let a histogram be counted batch
    by batch (`np.histogram` with these edges, summed) and drawn from its counts."""
    if hi <= lo:  # a constant score still gets a visible bar
        lo, hi = lo - 0.5, hi + 0.5
    reach = (hi - lo) * 0.5
    for _, value, _ in thresholds:
        if lo - reach <= value <= hi + reach:
            lo, hi = min(lo, value), max(hi, value)
    return np.linspace(lo, hi, bins + 1)


def histogram_svg(
    values: np.ndarray,
    title: str,
    thresholds: Sequence[tuple[str, float, bool]] = (),
    kept: np.ndarray | None = None,
    bins: int = 30,
) -> bytes:
    """Histogram of one score's values (see `histogram_counts_svg`)."""
    edges = histogram_edges(float(np.min(values)), float(np.max(values)), thresholds, bins)
    kept_counts = None if kept is None else np.histogram(kept, edges)[0]
    return histogram_counts_svg(np.histogram(values, edges)[0], edges, title, thresholds, kept_counts)


def histogram_counts_svg(
    counts: np.ndarray,
    edges: np.ndarray,
    title: str,
    thresholds: Sequence[tuple[str, float, bool]] = (),
    kept: np.ndarray | None = None,
) -> bytes:
    """Histogram of one score from its bin counts; `thresholds` are (op, value, is_rule) drawn as lines.

    A top-level filter rule (`is_rule`) also shades the side it removes; a comparison nested in an
    `or`/`not` is drawn dashed without shading, since it does not remove clips on its own.
    `kept` (the counts of the selected clips in the same bins) is overlaid when the filter has run.
    """
    # a fixed hash salt gives the SVG's element ids from its content, not from a random number
    with plt.rc_context({"svg.fonttype": "none", "font.size": 8, "svg.hashsalt": "reelforge"}):
        # Fixed margins instead of a tight bounding box: one draw per figure instead of two.
        figure, ax = plt.subplots(figsize=(4.2, 2.4))
        figure.subplots_adjust(left=0.14, right=0.97, top=0.88, bottom=0.14)
        lo, hi = float(edges[0]), float(edges[-1])
        pad = (hi - lo) * 0.03
        # One filled outline per series instead of one rectangle per bin: much faster to draw.
        left, bins = edges[:-1], edges.tolist()
        ax.hist(
            left,
            bins=bins,
            weights=counts,
            histtype="stepfilled",
            color="#9db4d6",
            label=f"all ({int(counts.sum())})",
        )
        if kept is not None:
            ax.hist(
                left,
                bins=bins,
                weights=kept,
                histtype="stepfilled",
                color="#2d6cc0",
                label=f"kept ({int(kept.sum())})",
            )
        for op, value, is_rule in thresholds:
            shown = min(max(value, lo - pad), hi + pad)
            off_scale = shown != value
            ax.axvline(
                shown, color="#c0392b", linewidth=1.5, linestyle="--" if off_scale or not is_rule else "-"
            )
            if is_rule and op in ("<", "<=", ">", ">="):
                # the side a clip must NOT be on: shaded as removed
                left_end, right_end = (
                    (lo - (hi - lo), shown) if op in (">", ">=") else (shown, hi + (hi - lo))
                )
                ax.axvspan(left_end, right_end, color="#c0392b", alpha=0.08)
            label = f"{op} {value:g}" + (" (off scale)" if off_scale else "")
            ax.annotate(
                label,
                xy=(shown, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -10),
                textcoords="offset points",
                color="#c0392b",
            )
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_title(title)
        ax.set_ylabel("clips")
        ax.legend(loc="upper right", frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return svg_of(figure)

"""Which moments of a clip to look at: the one frame-sampling rule every stage shares.

Times are seconds from the clip's first frame. "count" mode takes `count` frames at the centres
of `count` equal segments of the clip. "rate" mode takes one frame every 1/rate seconds (at the
centre of each period); when the clip is longer than `max_frames` periods, the cap does not cut
the clip short: `max_frames` frames are spread over the whole clip instead, as in count mode.
A target takes the first frame presented at or after it (`TargetCursor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# Slack for times that went through float conversions (container time bases, rates).
_EPS = 1e-6


@dataclass(frozen=True)
class Sampling:
    """`count` frames spread evenly, or one every 1/`rate_fps` seconds capped at `max_frames`."""

    mode: Literal["count", "rate"] = "count"
    count: int = 8
    rate_fps: float = 1.0
    max_frames: int = 16

    def __post_init__(self) -> None:
        if self.mode not in ("count", "rate"):
            raise ValueError(f"sampling mode must be 'count' or 'rate', got {self.mode!r}")
        if self.count < 1 or self.max_frames < 1 or self.rate_fps <= 0:
            raise ValueError(f"sampling needs count >= 1, max_frames >= 1 and rate_fps > 0, got {self}")

    def times(self, duration_s: float) -> np.ndarray:
        """Target times (seconds from the first frame) for a clip lasting `duration_s`."""
        return sample_times(duration_s, self)


def sample_times(duration_s: float, sampling: Sampling) -> np.ndarray:
    """Target timestamps (seconds from the first frame) of the frames to sample; see the module doc."""
    duration_s = max(float(duration_s), 0.0)
    if sampling.mode == "count":
        n = sampling.count
        return (np.arange(n, dtype=np.float64) + 0.5) * duration_s / n
    periods = math.floor(duration_s * sampling.rate_fps + 1e-9)
    if periods > sampling.max_frames:
        n = sampling.max_frames
        return (np.arange(n, dtype=np.float64) + 0.5) * duration_s / n
    n = max(1, periods)
    return (np.arange(n, dtype=np.float64) + 0.5) / sampling.rate_fps


class TargetCursor:
    """Matches decoded frames, in presentation order, to ascending target times.

    A target takes the first frame presented at or after it; several targets can fall on one
    frame (a short clip, many targets); targets past the last frame take no frame.
    """

    def __init__(self, targets: np.ndarray) -> None:
        self.targets = np.asarray(targets, dtype=np.float64)
        self.next = 0

    @property
    def done(self) -> bool:
        """Have all targets been taken?"""
        return self.next >= len(self.targets)

    def take(self, seconds: float) -> list[int]:
        """Indices of the targets this frame (at `seconds` from the first frame) satisfies."""
        taken: list[int] = []
        while self.next < len(self.targets) and seconds + _EPS >= self.targets[self.next]:
            taken.append(self.next)
            self.next += 1
        return taken


def spread_indices(n: int, k: int) -> np.ndarray:
    """k of the indices 0..n-1 spread evenly: the (floored) centres of k equal groups; all when k >= n."""
    if k >= n:
        return np.arange(n)
    j = np.arange(k)
    return (2 * j * n + n - k) // (2 * k)

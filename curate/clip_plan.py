"""Clip rules: the shots between boundaries become planned clips.

A plan is a half-open range of source frames [start_frame, end_frame) in decoding order with the
container times of its first frame and of the frame after it. Shots are trimmed at their
boundaries, short ones dropped and long ones windowed (`ClipRules`); the stride mode plans
fixed-length windows over a whole file instead. The extraction cuts exactly these frames
(curate.extract, two passes; curate.single_pass, one).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from curate.scenes import Boundary, Scan
from curate.split_config import ClipRules

# Seconds of slack when comparing times that went through float conversions.
_EPS = 1e-6


@dataclass(frozen=True)
class ClipPlan:
    """One clip to cut: its frame range and times in the source."""

    index: int
    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float  # time of the frame after the clip (or the end of the last frame)

    @property
    def num_frames(self) -> int:
        """Frames in the clip."""
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        """Seconds from the clip's first frame to the frame after its last."""
        return self.end_s - self.start_s


def clip_id(video_id: str, start_s: float) -> str:
    """Deterministic id: the source's content hash and the clip's start in microseconds."""
    return f"{video_id}_{round(start_s * 1_000_000):013d}"


def plan_clips(scan: Scan, rules: ClipRules, boundaries: Sequence[Boundary] | None = None) -> list[ClipPlan]:
    """Shots between boundaries -> clips: trim at boundaries, drop short shots, window long ones."""
    n = scan.num_frames
    if n == 0:
        return []
    times = [scan.seconds_of(i) for i in range(n + 1)]  # times[n] = end of the last frame
    bounds = sorted(boundaries if boundaries is not None else scan.boundaries, key=lambda b: b.frame)
    edges = [(0, None), *[(b.frame, b) for b in bounds if 0 < b.frame < n], (n, None)]
    plans: list[ClipPlan] = []
    for (a, left), (b, right) in pairwise(edges):
        start_t = times[a] + _trim(left, rules)
        end_t = times[b] - _trim(right, rules)
        first = bisect.bisect_left(times, start_t - _EPS, lo=a, hi=b)
        # The clip ends before the first frame that starts later than end_t.
        stop = bisect.bisect_right(times, end_t + _EPS, lo=first, hi=b + 1) - 1
        stop = min(stop, b)
        for lo, hi in _windows(times, first, stop, rules):
            plans.append(ClipPlan(len(plans), lo, hi, times[lo], times[hi]))
    return plans


def stride_plans(scan: Scan, rules: ClipRules, stride_s: float) -> list[ClipPlan]:
    """Fixed-length windows over the whole file (no detection), then the same length rules."""
    n = scan.num_frames
    if n == 0:
        return []
    duration = scan.seconds_of(n)
    count = max(1, math.ceil(duration / stride_s - _EPS))
    marks = [
        Boundary(frame=_frame_at(scan, k * stride_s), seconds=k * stride_s, kind="cut")
        for k in range(1, count)
    ]
    no_trim = rules.model_copy(update={"trim_s": 0.0})
    return plan_clips(scan, no_trim, [m for m in marks if 0 < m.frame < n])


def _frame_at(scan: Scan, seconds: float) -> int:
    lo, hi = 0, scan.num_frames
    while lo < hi:
        mid = (lo + hi) // 2
        if scan.seconds_of(mid) < seconds - _EPS:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _trim(boundary: Boundary | None, rules: ClipRules) -> float:
    if boundary is None:
        return 0.0
    if boundary.kind == "gradual" and rules.drop_transitions:
        return max(rules.transition_s, rules.trim_s)
    return rules.trim_s


def _windows(times: Sequence[float], first: int, stop: int, rules: ClipRules) -> Iterator[tuple[int, int]]:
    if stop <= first or times[stop] - times[first] < rules.min_length_s - _EPS:
        return
    if times[stop] - times[first] <= rules.max_length_s + _EPS:
        yield first, stop
        return
    if rules.long_scenes == "drop":
        return
    lo = first
    while lo < stop:
        hi = bisect.bisect_right(times, times[lo] + rules.max_length_s + _EPS, lo=lo + 1, hi=stop + 1) - 1
        hi = max(hi, lo + 1)
        if times[hi] - times[lo] >= rules.min_length_s - _EPS:
            yield lo, hi
        if rules.long_scenes == "first":
            return
        lo = hi

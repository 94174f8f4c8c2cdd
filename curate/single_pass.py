"""Detection and extraction on one decode pass of the source.

Every decoded frame goes to the shot detectors and, scaled to the output geometry, into a short
delay line. A frame leaves the line once its fate is settled: every boundary that could change
it is final (`BoundaryDetector.settled_before`) and the frames up to `min_length_s` plus the
longest trim after it are decoded, which is all the clip rules (`plan_clips`) look at to decide
whether a clip starts, continues or ends there. So the clips, their frames and their bytes are
those of the two-pass split; the plan is checked against `plan_clips` on the whole scan at the
end (a difference fails the file instead of keeping a wrong clip).

Three configurations keep the two-pass split (`single_pass_supported`): stride mode (its windows
depend on the file's length), `long_scenes: drop` (it needs `max_length_s` of look-ahead), and
stream copy of an eligible source (whether a clip's end falls on a keyframe is known only at the
end). A delay line over `_MAX_DELAY_BYTES` (a long fade to black holds boundaries open) switches
the rest of the file to a second, extraction-only pass.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from av.video.reformatter import VideoReformatter

from curate.borders import file_content_box
from curate.clip_output import Clip, ClipFailure, OutputGeometry, encoder_frame, output_geometry
from curate.clip_plan import ClipPlan, plan_clips
from curate.config import BorderConfig
from curate.extract import extract_clips
from curate.scenes import Boundary, BoundaryDetector, BoundaryKind, Scan, stream_end_pts
from curate.split_config import SplitConfig
from curate.stream_writer import StreamWriter
from media.decode import (
    Deadline,
    DecodedFrame,
    detection_bgr,
    display_rotation,
    iter_frames,
    nominal_rate,
    open_input,
    stream_info,
)

_EPS = 1e-6
# Converted frames the delay line may hold before the rest of the file goes to a second pass.
_MAX_DELAY_BYTES = 192 << 20


class PlanMismatch(RuntimeError):
    """The streamed clips differ from `plan_clips` on the whole scan (a detector reported late)."""


def single_pass_supported(
    cfg: SplitConfig, codec: str, container: str, geometry: OutputGeometry, width: int, height: int
) -> bool:
    """Can this file be split in one decode pass (scene detection and cutting together)?"""
    if cfg.detect.mode != "scenes" or cfg.clips.long_scenes == "drop":
        return False
    copy_eligible = (
        cfg.extract.allow_stream_copy
        and cfg.extract.fps <= 0
        and codec == "h264"
        and "mp4" in container
        and (geometry.width, geometry.height, geometry.rotation) == (width, height, 0)
    )
    return not copy_eligible


@dataclass
class _Window:
    """The clip window being cut: [lo, hi) in source frames, its writer when it is kept."""

    lo: int
    writer: StreamWriter | None


@dataclass
class _Shot:
    start: int
    left: BoundaryKind | None
    first: int | None = None  # first frame after the trim, once reached
    window: _Window | None = None
    windows_done: bool = False


@dataclass
class SinglePass:
    """Runs one file; `run()` yields clips and failures, then `scan`, `plans`, `rotation` are set."""

    path: Path
    cfg: SplitConfig
    width: int
    height: int
    deadline: Deadline
    scan: Scan = field(default_factory=lambda: Scan(boundaries=[]))
    plans: list[ClipPlan] = field(default_factory=list)
    rotation: int = 0
    second_pass: bool = False

    def run(self) -> Iterator[Clip | ClipFailure]:  # noqa: PLR0915 — the one decode loop every clip of the pass shares
        """Detect, plan and cut the file's clips in one decode, yielding each clip or failure."""
        cfg = self.cfg
        rules = cfg.clips
        self._max_trim = max(rules.trim_s, rules.transition_s if rules.drop_transitions else 0.0)
        self._lookahead = rules.min_length_s + self._max_trim
        # Frames waiting for their fate, each holding its encoder frame (`encoder_frame`) in place of
        # the decoded one, which goes back to the decoder at once: a 4K source would otherwise hold
        # a 12 MB frame per delayed frame beside the encoder frames the delay's budget counts.
        self._delay: deque[DecodedFrame] = deque()
        # Final boundaries so far: frames ascending, and their kinds.
        self._bound_frames: list[int] = []
        self._bound_kind: dict[int, BoundaryKind] = {}
        # Frame times in seconds (floats: bisect and compare them without Fraction arithmetic).
        self._t = array("d")
        self._shot = _Shot(0, None)
        self._final = False
        self._settled = 0
        with open_input(self.path) as container:
            stream = container.streams.video[0]
            info = stream_info(stream)
            scan = self.scan = Scan(boundaries=[], time_base=info.time_base, start_pts=info.start_pts)
            detector = BoundaryDetector(cfg.detect, nominal_rate(stream) or Fraction(25))
            small = VideoReformatter()
            scaler = VideoReformatter()
            geometry: OutputGeometry | None = None
            for item in iter_frames(
                container, scan.stats, self.deadline, threads=cfg.decode_threads(), where="split"
            ):
                assert isinstance(item, DecodedFrame)
                if geometry is None:
                    self.rotation = scan.rotation = display_rotation(item.frame)
                    # the picture inside constant borders: a few keyframe seeks, before any clip is written
                    box = (
                        file_content_box(self.path, BorderConfig(), threads=cfg.decode_threads())
                        if cfg.extract.crop_borders
                        else None
                    )
                    geometry = self._geometry = output_geometry(
                        self.width, self.height, self.rotation, cfg.extract, box
                    )
                    self._frame_bytes = geometry.width * geometry.height * 3 // 2  # 4:2:0
                scan.frame_pts.append(item.pts)
                self._t.append(item.seconds)
                detector.add(item.index, detection_bgr(item.frame, cfg.detect.downscale_width, small))
                if self.second_pass:
                    continue
                image = encoder_frame(item.frame, geometry, scaler)
                self._delay.append(DecodedFrame(item.index, item.pts, item.seconds, image))
                settled = detector.settled_before()
                if settled > self._settled:
                    self._add_bounds(detector.settled_boundaries(self._settled, settled))
                    self._settled = settled
                yield from self._drain()
                if len(self._delay) * self._frame_bytes > _MAX_DELAY_BYTES:
                    self._abandon_stream()
            scan.end_pts = stream_end_pts(stream, info.start_pts)
            found = detector.finish()
        scan.boundaries = [
            Boundary(frame, scan.seconds_of(frame), detector.kind_of(frame))
            for frame in found
            if frame < scan.num_frames
        ]
        self._final = True
        self._bound_frames, self._bound_kind = [], {}
        self._add_bounds([(b.frame, b.kind) for b in scan.boundaries])
        self._t.append(scan.seconds_of(scan.num_frames))  # index n: the end of the last frame
        yield from self._drain()
        yield from self._close(scan.num_frames)  # the window open at the end of the file
        expected = plan_clips(scan, rules)
        produced = {(p.index, p.start_frame, p.end_frame) for p in self.plans}
        if not produced <= {(p.index, p.start_frame, p.end_frame) for p in expected}:
            raise PlanMismatch(f"streamed clips {sorted(produced)} are not all in the plan {expected}")
        rest = [p for p in expected if (p.index, p.start_frame, p.end_frame) not in produced]
        if rest and not self.second_pass:
            raise PlanMismatch(f"planned clips {rest} were not streamed")
        self.plans = expected
        if rest:
            assert geometry is not None
            yield from extract_clips(
                self.path,
                rest,
                scan,
                self.width,
                self.height,
                self.rotation,
                cfg.extract,
                self.deadline,
                threads=cfg.decode_threads(),
            )

    # ---- the delay line ---------------------------------------------------------------------------

    def _add_bounds(self, bounds: list[tuple[int, BoundaryKind]]) -> None:
        for frame, kind in bounds:
            self._bound_frames.append(frame)
            self._bound_kind[frame] = kind

    def _time(self, index: int) -> float:
        return self._t[index]

    def _decided(self, j: int) -> bool:
        """Can frame j's place in the clips be settled now (see the module docstring)?"""
        if self._final:
            return True
        n, settled = self.scan.num_frames, self._settled
        need = self._time(j) + self._lookahead
        # k: the first frame at or past j's look-ahead; it and every boundary before it must be known.
        k = max(j + 1, bisect.bisect_left(self._t, need - _EPS, lo=j + 1, hi=n))
        if k >= n or k >= settled:
            return False
        if self._time(settled) - self._max_trim - _EPS >= self._time(k):
            return True
        return self._next_boundary(j) is not None

    def _drain(self) -> Iterator[Clip | ClipFailure]:
        while self._delay and self._decided(self._delay[0].index):
            yield from self._place(self._delay.popleft())

    def _abandon_stream(self) -> None:
        """Too many frames held: finish the open clip's fate in a second pass instead."""
        shot = self._shot
        if shot.window is not None and shot.window.writer is not None:
            shot.window.writer.abort()
            # The open window is extracted again by the second pass (its plan is not produced).
        shot.window = None
        self._delay.clear()
        self.second_pass = True

    # ---- clip rules, one frame at a time ---------------------------------------------------------

    def _next_boundary(self, j: int) -> tuple[int, BoundaryKind] | None:
        i = bisect.bisect_right(self._bound_frames, j)
        if i == len(self._bound_frames):
            return None
        frame = self._bound_frames[i]
        return frame, self._bound_kind[frame]

    def _trim(self, kind: BoundaryKind | None) -> float:
        rules = self.cfg.clips
        if kind is None:
            return 0.0
        if kind == "gradual" and rules.drop_transitions:
            return max(rules.transition_s, rules.trim_s)
        return rules.trim_s

    def _stop(self, j: int) -> int | None:
        """The current shot's clip end (exclusive frame), when its boundary is known."""
        nxt = self._next_boundary(j)
        if nxt is None:
            if not self._final:
                return None
            end, kind = self.scan.num_frames, None
        else:
            end, kind = nxt
        end_t = self._time(end) - self._trim(kind)
        first = self._shot.first if self._shot.first is not None else j
        return min(bisect.bisect_right(self._t, end_t + _EPS, lo=first, hi=end + 1) - 1, end)

    def _place(self, item: DecodedFrame) -> Iterator[Clip | ClipFailure]:
        """Settle frame `item` (holding its encoder frame) into the clip rules."""
        j = item.index
        shot = self._shot
        kind = self._bound_kind.get(j)
        if kind is not None:
            yield from self._close(j)
            shot = self._shot = _Shot(j, kind)
        if shot.first is None and self._time(j) >= self._time(shot.start) + self._trim(shot.left) - _EPS:
            shot.first = j
        stop = self._stop(j)
        in_range = shot.first is not None and (stop is None or j < stop)
        if not in_range:
            yield from self._close(j)
            return
        rules = self.cfg.clips
        window = shot.window
        if window is not None:
            limit = self._time(window.lo) + rules.max_length_s + _EPS
            if (j == window.lo + 1 and self._time(j) > limit) or (
                self._time(j) <= limit and self._time(j + 1) > limit
            ):
                yield from self._close(j)
                if rules.long_scenes == "first":
                    shot.windows_done = True
        if shot.window is None and not shot.windows_done:
            shot.window = _Window(j, self._open_writer(j, stop) if self._kept(j, stop) else None)
        if shot.window is not None and shot.window.writer is not None:
            shot.window.writer.add(item, self._time(j + 1))

    def _kept(self, lo: int, stop: int | None) -> bool:
        """Will the window starting at lo reach min_length_s (the rule `_windows` applies)?"""
        rules = self.cfg.clips
        n = self.scan.num_frames
        # Index n (the end of the last frame) is in self._t once the pass is final.
        k = bisect.bisect_left(self._t, self._time(lo) + rules.min_length_s - _EPS, lo=lo)
        if k > n or (stop is not None and k > stop):
            return False
        return self._time(k) <= self._time(lo) + rules.max_length_s + _EPS or k == lo + 1

    def _close(self, hi: int) -> Iterator[Clip | ClipFailure]:
        window = self._shot.window
        if window is None:
            return
        self._shot.window = None
        if window.writer is None:
            return
        self._shot.windows_done |= self.cfg.clips.long_scenes == "first"
        plan = ClipPlan(len(self.plans), window.lo, hi, self._time(window.lo), self._time(hi))
        self.plans.append(plan)
        yield window.writer.close(plan, self._tolerance(plan))

    def _tolerance(self, plan: ClipPlan) -> float:
        longest = max(
            (self._time(i + 1) - self._time(i) for i in range(plan.start_frame, plan.end_frame)), default=0.0
        )
        return longest + 1e-3

    def _open_writer(self, lo: int, stop: int | None) -> StreamWriter:
        rules = self.cfg.clips
        cfg = self.cfg.extract
        if cfg.fps > 0:
            rate = Fraction(cfg.fps).limit_denominator(1001)
            return StreamWriter(
                self._geometry,
                cfg,
                rate,
                1 / rate,
                self._time(lo),
                self.scan.frame_pts[lo],
                self.scan.time_base,
            )
        # The clip's own average rate, as `curate.extract._ClipWriter` sets it: exact when its end is
        # already known, else from its frames decoded so far (the same integer on constant-rate footage).
        end = (
            stop
            if stop is not None and self._time(stop) - self._time(lo) <= rules.max_length_s + _EPS
            else None
        )
        last = end if end is not None else self.scan.num_frames - 1
        frames, seconds = last - lo, self._time(last) - self._time(lo)
        rate = Fraction(max(1, round(frames / max(seconds, _EPS)))).limit_denominator(1001)
        return StreamWriter(
            self._geometry,
            cfg,
            rate,
            self.scan.time_base,
            self._time(lo),
            self.scan.frame_pts[lo],
            self.scan.time_base,
        )

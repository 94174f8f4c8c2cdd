"""Shot-boundary detection: PySceneDetect's detectors fed from one downscaled PyAV decode pass.

Each frame is decoded once (threaded), subsampled to about `downscale_width` straight from the
decoder's planes and converted to BGR (`media.decode.detection_bgr`), and handed to the
configured detector (and, with `detect_fades`, to a fade detector in the same loop). Detectors
see frame numbers in decoding order; every boundary is then given the exact container time of
that frame, so seconds stay exact on VFR footage.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect.common import FrameTimecode
from scenedetect.detector import SceneDetector
from scenedetect.detectors import (
    AdaptiveDetector,
    ContentDetector,
    HashDetector,
    HistogramDetector,
    ThresholdDetector,
)

from curate.split_config import DetectConfig, DetectorName
from media.decode import (
    Deadline,
    DecodedFrame,
    DecodeStats,
    detection_bgr,
    display_rotation,
    iter_frames,
    nominal_rate,
    open_input,
    stream_info,
)

BoundaryKind = Literal["cut", "gradual"]


@dataclass(frozen=True)
class Boundary:
    """The first frame of a new shot: its decoding-order index and container time."""

    frame: int
    seconds: float
    kind: BoundaryKind

    def as_dict(self) -> dict[str, object]:
        """The boundary as recorded in the scan: frame, seconds and kind."""
        return {"frame": self.frame, "seconds": self.seconds, "kind": self.kind}


@dataclass
class Scan:
    """Everything one decode pass learned about a file."""

    boundaries: list[Boundary]
    # Presentation timestamp of every decoded frame, in decoding order (int64, 8 bytes a frame).
    frame_pts: array[int] = field(default_factory=lambda: array("q"))
    time_base: Fraction = Fraction(1, 90000)
    start_pts: int = 0
    # Timestamp just after the last frame (its pts + its duration), when the container says so.
    end_pts: int | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    # Clockwise degrees a player turns the picture by (the first frame's display matrix).
    rotation: int = 0

    @property
    def num_frames(self) -> int:
        """Frames decoded."""
        return len(self.frame_pts)

    def seconds_of(self, index: int) -> float:
        """Container time of frame `index`; index == num_frames means the end of the last frame."""
        if index < len(self.frame_pts):
            return float((self.frame_pts[index] - self.start_pts) * self.time_base)
        return float((self.end_stop_pts() - self.start_pts) * self.time_base)

    def end_stop_pts(self) -> int:
        """End of the last decoded frame: the container's end when it agrees, else one frame step."""
        if not self.frame_pts:
            return self.start_pts
        last = self.frame_pts[-1]
        step = last - self.frame_pts[-2] if len(self.frame_pts) > 1 else 1
        if self.end_pts is not None and last < self.end_pts <= last + 2 * step:
            return self.end_pts
        return last + step


class _ContentDetector(ContentDetector):  # type: ignore[misc]  # scenedetect ships no types
    """PySceneDetect's ContentDetector with the same frame score in fewer, cheaper operations.

    Upstream splits the HSV frame into planes and, per plane, widens both frames to int32,
    subtracts, takes the absolute value and sums: about as much CPU as the BGR to HSV conversion
    itself. Here one `cv2.absdiff` of the two uint8 HSV frames and one `cv2.sumElems` give the
    same per-channel sums (integers, exact in float64), divided and weighted in upstream's order,
    so every score is bit for bit upstream's (tests/curate/test_scenes.py compares them), and the
    min_scene_len filter runs on frame numbers (`_FramesFlashFilter`). Edges (a nonzero
    `delta_edges` weight) and statistics go to upstream's own code.
    """

    def __init__(self, *, threshold: float, min_scene_len: int, luma_only: bool) -> None:
        super().__init__(threshold=threshold, min_scene_len=min_scene_len, luma_only=luma_only)
        self._last_hsv: np.ndarray | None = None
        self._weight_sum = sum(abs(w) for w in self._weights)  # upstream's divisor, summed once
        self._frames_filter = _FramesFlashFilter(min_scene_len)

    def _fast(self) -> bool:
        return self._weights.delta_edges <= 0.0 and self.stats_manager is None

    def process_frame(self, timecode: FrameTimecode, frame_img: np.ndarray) -> list[FrameTimecode]:
        if not self._fast():
            return list(super().process_frame(timecode, frame_img))
        self._frame_score = self._calculate_frame_score(timecode, frame_img)
        above = self._frame_score >= self._threshold
        return [FrameTimecode(f, fps=timecode) for f in self._frames_filter.filter(timecode.frame_num, above)]

    def _calculate_frame_score(self, timecode: FrameTimecode, frame_img: np.ndarray) -> float:
        if not self._fast():
            return float(super()._calculate_frame_score(timecode, frame_img))
        hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
        last, self._last_hsv = self._last_hsv, hsv
        if last is None:
            return 0.0
        pixels = float(hsv.shape[0] * hsv.shape[1])
        hue, sat, lum, _ = cv2.sumElems(cv2.absdiff(hsv, last))
        w = self._weights
        # upstream's sum() over the four products, in its order (0 + x is x exactly)
        score: float = (
            hue / pixels * w[0] + sat / pixels * w[1] + lum / pixels * w[2] + 0.0 * w[3]
        ) / self._weight_sum
        return score


class _FramesFlashFilter:
    """PySceneDetect's FlashFilter in MERGE mode (ContentDetector's default) on frame numbers.

    Upstream's keeps FrameTimecodes and measures each gap by FrameTimecode subtraction (a copy and a
    frame-rate comparison of Fractions, every frame); with `min_scene_len` in frames the gap is a
    difference of frame numbers, so the same state machine runs on ints. Its cuts are upstream's
    (tests/curate/test_scenes.py runs both on the same sequences).
    """

    def __init__(self, length: int) -> None:
        self._length = length
        self._last_above: int | None = None
        self._merge_enabled = False
        self._merge_triggered = False
        self._merge_start = 0

    def filter(self, frame: int, above: bool) -> list[int]:
        """The cuts (frame numbers) to report after frame `frame`, above the threshold or not."""
        if self._length <= 0:
            return [frame] if above else []
        if self._last_above is None:
            self._last_above = frame
        long_enough = frame - self._last_above >= self._length
        if above:
            self._last_above = frame
        if self._merge_triggered:
            if long_enough and not above and self._last_above - self._merge_start >= self._length:
                self._merge_triggered = False
                return [self._last_above]
            return []
        if not above:
            return []
        if long_enough:
            self._merge_enabled = True
            return [frame]
        if self._merge_enabled:
            self._merge_triggered = True
            self._merge_start = frame
        return []


class _KnownFrameMean:
    """The frame average for PySceneDetect's ThresholdDetector, taken once.

    Upstream takes `numpy.mean` over every byte of the frame (float64, about 6% of detection's time
    at 640x360) unless its stats manager already holds the frame's average. BoundaryDetector has it
    already (`frame_mean`, bit for bit `numpy.mean`), so it stands in as that stats manager, holding
    the average of the frame being processed; the fade decisions are upstream's unchanged
    (tests/curate/test_scenes.py compares them).
    """

    def __init__(self) -> None:
        self.mean = 0.0

    def metrics_exist(self, timecode: FrameTimecode, metric_keys: list[str]) -> bool:
        return True

    def get_metrics(self, timecode: FrameTimecode, metric_keys: list[str]) -> list[float]:
        return [self.mean]


def make_detector(cfg: DetectConfig, name: DetectorName | None = None) -> SceneDetector:
    """The PySceneDetect detector for `name` (default: cfg.detector) with its config parameters."""
    name = name or cfg.detector
    min_len = cfg.min_scene_frames
    if name == "content":
        p = cfg.content
        return _ContentDetector(threshold=p.threshold, min_scene_len=min_len, luma_only=p.luma_only)
    if name == "adaptive":
        a = cfg.adaptive
        return AdaptiveDetector(
            adaptive_threshold=a.adaptive_threshold,
            min_scene_len=min_len,
            window_width=a.window_width,
            min_content_val=a.min_content_val,
            luma_only=a.luma_only,
        )
    if name == "threshold":
        t = cfg.threshold
        method = ThresholdDetector.Method.FLOOR if t.method == "floor" else ThresholdDetector.Method.CEILING
        return ThresholdDetector(
            threshold=t.threshold, min_scene_len=min_len, fade_bias=t.fade_bias, method=method
        )
    if name == "hash":
        h = cfg.hash
        return HashDetector(threshold=h.threshold, size=h.size, lowpass=h.lowpass, min_scene_len=min_len)
    if name == "histogram":
        g = cfg.histogram
        return HistogramDetector(threshold=g.threshold, bins=g.bins, min_scene_len=min_len)
    raise ValueError(f"unknown detector {name!r}")


class BoundaryDetector:
    """Feeds frames to the configured detector (+ fade detector) and collects boundaries."""

    def __init__(self, cfg: DetectConfig, rate: Fraction) -> None:
        self._rate = rate
        self._rate_timecode = FrameTimecode(0, fps=rate)
        main_kind: BoundaryKind = "gradual" if cfg.detector == "threshold" else "cut"
        self._detectors: list[tuple[SceneDetector, BoundaryKind]] = [(make_detector(cfg), main_kind)]
        if cfg.detect_fades and cfg.detector != "threshold":
            self._detectors.append((make_detector(cfg, "threshold"), "gradual"))
        self._found: dict[int, BoundaryKind] = {}
        self._last_index = -1
        # Mean intensity of every frame (4 bytes a frame), to tell a fade from a dark shot.
        self._fade = cfg.threshold
        self._means = array("f")
        # Frames a hard-cut detector may report a cut behind the newest frame: the flash filter
        # merges cuts over min_scene_frames, the adaptive detector judges window_width frames back.
        self._latency = (
            cfg.min_scene_frames + (cfg.adaptive.window_width if cfg.detector == "adaptive" else 0) + 2
        )
        self._fades = [d for d, _ in self._detectors if isinstance(d, ThresholdDetector)]
        self._known_mean = _KnownFrameMean()
        for detector in self._fades:
            detector.stats_manager = self._known_mean
        # Faded runs (first frame, first frame after) whose dark-shot test still waits for a cut.
        self._open_runs: list[tuple[int, int]] = []

    def add(self, index: int, image: np.ndarray) -> None:
        """Feed frame `index` to every detector and record the boundaries they report."""
        # The rate from a FrameTimecode: a Fraction rate is validated again on every construction.
        timecode = FrameTimecode(index, fps=self._rate_timecode)
        self._last_index = index
        self._known_mean.mean = frame_mean(image)
        self._means.append(self._known_mean.mean)
        faded_from = [self._faded_since(d) for d in self._fades]
        for detector, kind in self._detectors:
            for cut in detector.process_frame(timecode, image):
                self._record(cut.frame_num, kind)
        for detector, start in zip(self._fades, faded_from, strict=True):
            if start is not None and self._faded_since(detector) is None:
                self._open_runs.append((start, index))

    @staticmethod
    def _faded_since(detector: ThresholdDetector) -> int | None:
        """First frame of the faded run the fade detector is in, None when not faded out."""
        last = detector.last_fade
        if last["type"] != "out" or last["frame"] is None:
            return None
        return int(last["frame"].frame_num)

    def settled_before(self) -> int:
        """Every frame before this index has its final boundary status: no detector can still
        report a boundary there, and no fade there can still turn out to be a dark shot.

        A fade boundary lands inside its faded run, reported only when the run ends, and a dark
        shot needs the cuts within 2 frames of both ends of its run: so the horizon stays before
        an open run, and before a closed one until its closing cut can no longer arrive.
        """
        horizon = self._last_index + 1 - self._latency - 3
        for detector in self._fades:
            start = self._faded_since(detector)
            if start is not None:
                horizon = min(horizon, start - 3)
        self._open_runs = [r for r in self._open_runs if self._last_index < r[1] + 3 + self._latency]
        for start, _ in self._open_runs:
            horizon = min(horizon, start - 3)
        return max(0, horizon)

    def settled_boundaries(self, since: int, before: int) -> list[tuple[int, BoundaryKind]]:
        """(frame, kind) of the final boundaries in [since, before) (`before` from `settled_before()`)."""
        return [
            (frame, kind)
            for frame, kind in sorted(self._found.items())
            if since <= frame < before and not (kind == "gradual" and self._is_dark_shot(frame))
        ]

    def finish(self) -> list[int]:
        """Flush the detectors at the last frame; returns the boundary frames in order."""
        if self._last_index >= 0:
            end = FrameTimecode(self._last_index, fps=self._rate)
            for detector, kind in self._detectors:
                for cut in detector.post_process(end):
                    self._record(cut.frame_num, kind)
        for frame in [f for f, kind in self._found.items() if kind == "gradual"]:
            if self._is_dark_shot(frame):
                del self._found[frame]
        return sorted(self._found)

    def _is_dark_shot(self, frame: int) -> bool:
        """A faded-out run that starts and ends with hard cuts is a dark (or white) shot, not a fade."""
        faded: Callable[[float], bool] = (
            (lambda m: m < self._fade.threshold)
            if self._fade.method == "floor"
            else (lambda m: m >= self._fade.threshold)
        )
        start = frame
        while start > 0 and faded(self._means[start - 1]):
            start -= 1
        stop = frame
        while stop < len(self._means) and faded(self._means[stop]):
            stop += 1
        cuts = [f for f, kind in self._found.items() if kind == "cut"]
        return any(abs(c - start) <= 2 for c in cuts) and any(abs(c - stop) <= 2 for c in cuts)

    def kind_of(self, frame: int) -> BoundaryKind:
        """The kind of the boundary found at `frame`."""
        return self._found[frame]

    def _record(self, frame: int, kind: BoundaryKind) -> None:
        # A boundary at frame 0 is not between two shots; a hard cut wins over a fade at one frame.
        if frame <= 0:
            return
        if self._found.get(frame) != "cut":
            self._found[frame] = kind


def frame_mean(image: np.ndarray) -> float:
    """`image.mean()` of a uint8 image, bit for bit, at a fraction of its cost: numpy sums uint8 in
    float64, where every partial sum is an exact integer, so both are the exact sum over the count."""
    return float(sum(cv2.sumElems(image)) / image.size)


def scan_file(
    path: str | Path,
    cfg: DetectConfig,
    deadline: Deadline | None = None,
    *,
    detect: bool = True,
    threads: int = 1,
) -> Scan:
    """Decode every frame once (with `threads` decoder threads; 0 = libavcodec's count); return the
    boundaries and the timestamp of every frame.

    With `detect=False` (stride mode) frames are decoded for their timestamps only, without
    pixel conversion.
    """
    deadline = deadline or Deadline(None)
    with open_input(path) as container:
        stream = container.streams.video[0]
        info = stream_info(stream)
        rate = nominal_rate(stream) or Fraction(25)
        detector = BoundaryDetector(cfg, rate) if detect else None
        converter = VideoReformatter()  # frames that are not 8-bit 4:2:0 are scaled by it
        scan = Scan(boundaries=[], time_base=info.time_base, start_pts=info.start_pts)
        for item in iter_frames(container, scan.stats, deadline, threads=threads, where="scene detection"):
            assert isinstance(item, DecodedFrame)
            if not scan.frame_pts:
                scan.rotation = display_rotation(item.frame)
            scan.frame_pts.append(item.pts)
            if detector is not None:
                detector.add(item.index, detection_bgr(item.frame, cfg.downscale_width, converter))
        scan.end_pts = stream_end_pts(stream, info.start_pts)
        if detector is not None:
            scan.boundaries = [
                Boundary(frame, scan.seconds_of(frame), detector.kind_of(frame))
                for frame in detector.finish()
                if frame < scan.num_frames
            ]
    return scan


def stream_end_pts(stream: av.video.stream.VideoStream, start_pts: int) -> int | None:
    """The container time after the stream's last frame, or None when the stream has no duration."""
    if stream.duration:
        return start_pts + int(stream.duration)
    return None

"""Clip rules (shots -> planned clips) and exact clip extraction with verification.

A plan is a half-open range of source frames [start_frame, end_frame) in decoding order with
the container times of its first frame and of the frame after it. `extract_clips` is the
extraction pass of the two-pass split (stride mode, stream copy; curate.single_pass cuts on the
detection pass otherwise): it decodes the file once more, streams the frames of each planned clip into its own H.264 encoder (size, frame
rate and display rotation from the config) and closes the clip as soon as its last frame has
passed, so memory holds one clip's encoded bytes, never the video. Each clip's container is then
read back (packets, no decoding: `verify_clip` says what that proves) and its frame count and
duration compared with the plan; a mismatch is a failure with the numbers in its message, never a
silently wrong clip.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from curate.borders import ContentBox, file_content_box
from curate.config import BorderConfig, ClipRules, ExtractConfig
from curate.probe import Reason
from curate.scenes import Boundary, Scan
from media import Mp4Writer, jpeg
from media.decode import (
    Deadline,
    DecodedFrame,
    DecodeStats,
    iter_frames,
    open_input,
    rotate,
)

# Seconds of slack when comparing times that went through float conversions.
_EPS = 1e-6


@dataclass(frozen=True)
class ClipPlan:
    index: int
    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float  # time of the frame after the clip (or the end of the last frame)

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Clip:
    plan: ClipPlan
    data: bytes  # the MP4 file
    thumbnail: bytes  # JPEG
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    stream_copied: bool
    crop_box: ContentBox | None  # the source's picture the clip shows (split.extract.crop_borders)


@dataclass(frozen=True)
class ClipFailure:
    plan: ClipPlan
    reason: Reason
    detail: str

    @property
    def message(self) -> str:
        return f"clip {self.plan.index} [{self.plan.start_s:.3f}-{self.plan.end_s:.3f}s]: {self.detail}"


def clip_id(video_id: str, start_s: float) -> str:
    """Deterministic id: the source's content hash and the clip's start in microseconds."""
    return f"{video_id}_{round(start_s * 1_000_000):013d}"


# ---- clip rules -----------------------------------------------------------------------------------


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


# ---- extraction -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputGeometry:
    """Encoder input size before rotation, and the displayed (encoded) size after it.

    With a crop (split.extract.crop_borders), the whole frame is scaled to scale_width x
    scale_height and the picture is the window of the encoder's input size at (crop_x, crop_y)."""

    scale_width: int
    scale_height: int
    width: int
    height: int
    rotation: int
    crop_x: int = 0
    crop_y: int = 0
    crop: ContentBox | None = None  # the source's picture cut out, in source pixels before rotation


def output_geometry(
    width: int, height: int, rotation: int, cfg: ExtractConfig, box: ContentBox | None = None
) -> OutputGeometry:
    """Output size of a source frame, or of its picture `box` (pixels before rotation) when cropping."""
    rotation = rotation if cfg.apply_rotation else 0
    x, y, w, h = (box.x, box.y, box.w, box.h) if box is not None else (0, 0, width, height)
    shown_w, shown_h = (h, w) if rotation in (90, 270) else (w, h)
    short = min(shown_w, shown_h)
    scale = cfg.short_side / short if 0 < cfg.short_side < short else 1.0
    out_w = max(2, round(shown_w * scale) // 2 * 2)
    out_h = max(2, round(shown_h * scale) // 2 * 2)
    pre_w, pre_h = (out_h, out_w) if rotation in (90, 270) else (out_w, out_h)
    if box is None:
        return OutputGeometry(pre_w, pre_h, out_w, out_h, rotation)
    full_w, full_h = max(pre_w, round(width * scale)), max(pre_h, round(height * scale))
    crop_x = min(round(x * scale), full_w - pre_w)
    crop_y = min(round(y * scale), full_h - pre_h)
    return OutputGeometry(full_w, full_h, out_w, out_h, rotation, crop_x, crop_y, box)


def picture(image: np.ndarray, g: OutputGeometry) -> np.ndarray:
    """The encoder's input from a frame scaled to (scale_width, scale_height): the crop window when
    cropping to the content box, else the frame itself."""
    pre_w, pre_h = (g.height, g.width) if g.rotation in (90, 270) else (g.width, g.height)
    if (pre_w, pre_h) == (g.scale_width, g.scale_height):
        return image
    return np.ascontiguousarray(image[g.crop_y : g.crop_y + pre_h, g.crop_x : g.crop_x + pre_w])


class _ClipWriter:
    """One clip being encoded: frames in, MP4 bytes out."""

    def __init__(
        self,
        plan: ClipPlan,
        geometry: OutputGeometry,
        cfg: ExtractConfig,
        time_base: Fraction,
        start_pts: int,
    ) -> None:
        self.plan = plan
        self.geometry = geometry
        self.cfg = cfg
        self.frames_in = 0
        self.frames_out = 0
        self.pts_mismatch = ""
        self.thumbnail: bytes = b""
        # One single-threaded converter for the whole clip: frame.to_ndarray(width=..., format=...)
        # built a swscale context with a thread per core on every frame (two thread starts per frame
        # here), which borrowed the idle core of a 1-worker run and fought the other worker's.
        self._to_rgb = VideoReformatter()
        self._src_time_base = time_base
        self._start_pts = start_pts
        if cfg.fps > 0:
            rate = Fraction(cfg.fps).limit_denominator(1001)
            out_time_base = 1 / rate
        else:
            rate = Fraction(max(1, round(plan.num_frames / max(plan.duration_s, _EPS)))).limit_denominator(
                1001
            )
            out_time_base = time_base
        self._rate = rate
        # One thread per encoder: the per-file task owns one CPU and decoding already uses threads.
        self._writer = Mp4Writer(
            geometry.width,
            geometry.height,
            rate,
            crf=cfg.crf,
            preset=cfg.preset,
            time_base=out_time_base,
            threads=1,
        )
        self._thumb_at = plan.num_frames // 2

    def add(self, item: DecodedFrame, next_seconds: float) -> None:
        image = self._convert(item.frame)
        if self.frames_in == self._thumb_at:
            self.thumbnail = jpeg(image, self.cfg.thumbnail_quality, self.cfg.thumbnail_width)
        if self.cfg.fps > 0:
            # Constant output rate: emit this frame for every output tick inside its display time.
            rel_end = next_seconds - self.plan.start_s
            while self.frames_out / float(self._rate) < rel_end - _EPS:
                self._encode(image, self.frames_out, 1)
        else:
            duration = (
                max(1, round((next_seconds - item.seconds) / self._src_time_base))
                if next_seconds > item.seconds
                else 1
            )
            self._encode(image, item.pts - self._start_pts, duration)
        self.frames_in += 1

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        g = self.geometry
        image: np.ndarray = self._to_rgb.reformat(
            frame, width=g.scale_width, height=g.scale_height, format="rgb24", interpolation="AREA", threads=1
        ).to_ndarray()
        return rotate(picture(image, g), g.rotation)

    def _encode(self, image: np.ndarray, pts: int, duration: int) -> None:
        self._writer.add(image, pts, duration)
        self.frames_out += 1

    def finish(self) -> bytes:
        return self._writer.finish()

    def abort(self) -> None:
        self._writer.abort()

    def expected_frames(self) -> int:
        if self.cfg.fps > 0:
            return max(1, math.ceil(self.plan.duration_s * float(self._rate) - _EPS))
        return self.plan.num_frames


class _CopyWriter:
    """One clip cut without re-encoding: the source's packets from a keyframe to the next cut keyframe."""

    def __init__(
        self,
        plan: ClipPlan,
        source: av.video.stream.VideoStream,
        start_pts: int,
        end_pts: int | None,
        geometry: OutputGeometry,
        cfg: ExtractConfig,
    ) -> None:
        self.plan = plan
        self.geometry = geometry
        self.cfg = cfg
        self.start_pts = start_pts
        self.end_pts = end_pts
        self.frames_in = 0
        self.pts_mismatch = ""
        self.thumbnail: bytes = b""
        self._buffer = io.BytesIO()
        self._out = av.open(self._buffer, mode="w", format="mp4")
        self._stream = self._out.add_stream_from_template(source)
        self._rate = Fraction(source.average_rate or source.guessed_rate or 25)

    @property
    def frames_out(self) -> int:
        return self.frames_in

    def wants(self, packet: av.Packet) -> bool:
        return (
            packet.pts is not None
            and self.start_pts <= packet.pts
            and (self.end_pts is None or packet.pts < self.end_pts)
        )

    def add_packet(self, packet: av.Packet) -> None:
        assert packet.pts is not None  # only packets accepted by the pts range get here
        packet.pts -= self.start_pts
        if packet.dts is not None:
            packet.dts -= self.start_pts
        packet.stream = self._stream
        self._out.mux(packet)

    def add(self, item: DecodedFrame, next_seconds: float) -> None:
        if self.frames_in == self.plan.num_frames // 2:
            g = self.geometry
            image = item.frame.reformat(
                width=g.scale_width, height=g.scale_height, format="rgb24", threads=1
            ).to_ndarray()
            self.thumbnail = jpeg(image, self.cfg.thumbnail_quality, self.cfg.thumbnail_width)
        self.frames_in += 1

    def finish(self) -> bytes:
        self._out.close()
        return self._buffer.getvalue()

    def abort(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self._out.close()

    def expected_frames(self) -> int:
        return self.plan.num_frames


def _copyable(
    plans: Sequence[ClipPlan],
    scan: Scan,
    geometry: OutputGeometry,
    width: int,
    height: int,
    codec: str,
    container_name: str,
    cfg: ExtractConfig,
) -> dict[int, tuple[int, int | None]]:
    """{plan index: (start pts, end pts or None)} of the clips that can be cut without re-encoding."""
    if not cfg.allow_stream_copy or cfg.fps > 0 or codec != "h264" or "mp4" not in container_name:
        return {}
    if (geometry.width, geometry.height, geometry.rotation) != (width, height, 0):
        return {}
    keyframes = set(scan.stats.keyframe_pts)
    out: dict[int, tuple[int, int | None]] = {}
    for plan in plans:
        start = scan.frame_pts[plan.start_frame]
        end = scan.frame_pts[plan.end_frame] if plan.end_frame < scan.num_frames else None
        if start in keyframes and (end is None or end in keyframes):
            out[plan.index] = (start, end)
    return out


def extract_clips(
    path: str | Path,
    plans: Sequence[ClipPlan],
    scan: Scan,
    width: int,
    height: int,
    rotation: int,
    cfg: ExtractConfig,
    deadline: Deadline | None = None,
    threads: int = 0,
) -> Iterator[Clip | ClipFailure]:
    """Decode the file once and yield each planned clip, encoded and verified, as soon as it is done."""
    deadline = deadline or Deadline(None)
    if not plans:
        return
    box = file_content_box(path, BorderConfig()) if cfg.crop_borders else None
    geometry = output_geometry(width, height, rotation, cfg, box)
    stats = DecodeStats()
    pending = list(plans)
    writer: _ClipWriter | _CopyWriter | None = None
    with open_input(path) as container:
        source = container.streams.video[0]
        copyable = _copyable(
            plans, scan, geometry, width, height, source.codec_context.name, container.format.name, cfg
        )
        # Packets of a stream-copied clip come before its frames (decoder delay): their writer starts early.
        copying: dict[int, _CopyWriter] = {}
        by_index = {plan.index: plan for plan in plans}
        try:
            for item in iter_frames(
                container,
                stats,
                deadline,
                threads=threads,
                where="clip extraction",
                with_packets=bool(copyable),
            ):
                if isinstance(item, av.Packet):
                    for index, (start, end) in copyable.items():
                        if item.pts is not None and start <= item.pts and (end is None or item.pts < end):
                            if index not in copying:
                                copying[index] = _CopyWriter(
                                    by_index[index], source, start, end, geometry, cfg
                                )
                            copying[index].add_packet(item)
                    continue
                while writer is not None and item.index >= writer.plan.end_frame:
                    copying.pop(writer.plan.index, None)
                    copyable.pop(writer.plan.index, None)
                    yield _close(writer, scan)
                    writer = None
                if writer is None:
                    while pending and pending[0].end_frame <= item.index:
                        yield ClipFailure(
                            pending.pop(0), Reason.CLIP_VERIFY, "its frames were not decoded again"
                        )
                    if not pending:
                        break
                    if item.index < pending[0].start_frame:
                        continue
                    plan = pending.pop(0)
                    writer = copying.get(plan.index) or _ClipWriter(
                        plan, geometry, cfg, scan.time_base, item.pts
                    )
                if (
                    item.index < scan.num_frames
                    and item.pts != scan.frame_pts[item.index]
                    and not writer.pts_mismatch
                ):
                    writer.pts_mismatch = (
                        f"frame {item.index} has pts {item.pts} on extraction but {scan.frame_pts[item.index]} "
                        "on detection"
                    )
                writer.add(item, scan.seconds_of(item.index + 1))
        except BaseException:
            for open_writer in [writer, *copying.values()]:
                if open_writer is not None:
                    open_writer.abort()
            raise
        for leftover in copying.values():
            if leftover is not writer:
                leftover.abort()
    if writer is not None:
        yield _close(writer, scan)
    for plan in pending:
        detail = "the decoder stopped before this clip"
        if stats.demux_error:
            detail += f" ({stats.demux_error})"
        yield ClipFailure(plan, Reason.TRUNCATED, detail)


def _close(writer: _ClipWriter | _CopyWriter, scan: Scan) -> Clip | ClipFailure:
    plan = writer.plan
    data = writer.finish()
    if writer.pts_mismatch:
        return ClipFailure(plan, Reason.CLIP_VERIFY, writer.pts_mismatch)
    if writer.frames_in != plan.num_frames:
        return ClipFailure(
            plan, Reason.CLIP_VERIFY, f"{writer.frames_in} source frames decoded, plan has {plan.num_frames}"
        )
    check = verify_clip(data, writer.expected_frames(), plan.duration_s, _frame_tolerance(scan, plan))
    if check:
        return ClipFailure(plan, Reason.CLIP_VERIFY, check)
    g = writer.geometry
    fps = writer.frames_out / plan.duration_s if plan.duration_s > 0 else float(writer._rate)
    copied = isinstance(writer, _CopyWriter)
    return Clip(
        plan, data, writer.thumbnail, writer.frames_out, fps, g.width, g.height, "h264", copied, g.crop
    )


def _frame_tolerance(scan: Scan, plan: ClipPlan) -> float:
    """One (longest) source frame duration inside the clip: how far the container's end may differ."""
    longest = max(
        (scan.seconds_of(i + 1) - scan.seconds_of(i) for i in range(plan.start_frame, plan.end_frame)),
        default=0.0,
    )
    return longest + 1e-3


def verify_clip(data: bytes, expected_frames: int, expected_duration: float, tolerance_s: float) -> str:
    """Check an encoded clip from its container index alone: '' if it holds, else what differs.

    What this proves: the bytes are an MP4 that opens, its video track holds exactly
    `expected_frames` samples (one per frame in MP4), the first is a keyframe (the clip starts
    decodable) and their timestamps span the planned duration within `tolerance_s`. It reads
    packets and decodes nothing, so it does not re-prove the bitstream: those packets came out of
    libx264 in this process from exactly the frames counted in (or, stream-copied, decoded
    without error in the same pass). The frame count and timing are what a wrong cut or a lost
    frame would change.
    """
    try:
        with open_input(data) as container:
            stream = container.streams.video[0]
            count = 0
            first: int | None = None
            end: int | None = None
            first_is_key = False
            for packet in container.demux(stream):
                if not packet.size or packet.pts is None:
                    continue
                if count == 0:
                    first_is_key = packet.is_keyframe
                count += 1
                stop = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                end = stop if end is None else max(end, stop)
            time_base = stream.time_base
    except (av.error.FFmpegError, IndexError) as err:
        return f"the encoded clip does not open: {err}"
    if count != expected_frames:
        return f"encoded clip has {count} frames, plan has {expected_frames}"
    if first is None or end is None or time_base is None:
        return "encoded clip has no timestamps"
    if not first_is_key:
        return "encoded clip does not start with a keyframe"
    duration = float((end - first) * time_base)
    if abs(duration - expected_duration) > tolerance_s:
        return f"encoded clip lasts {duration:.4f} s, plan {expected_duration:.4f} s"
    return ""

"""The one PyAV decode loop: threaded decoding, container timestamps, per-file deadline.

Every pass over a video or a clip (probe sample, scene detection, clip extraction, scoring,
captioning, encoding, previews) opens its input with `open_input` and decodes through
`iter_frames`, so frames are numbered identically in each pass: index = position in the
decoder's output order, time = the frame's presentation timestamp from the container. Bad
packets are skipped and counted instead of ending the pass, so a partly corrupt file still
yields the frames that decode; a container that breaks off mid-file ends the pass early and
the caller sees it in `DecodeStats`. `count_decodes` records every open and every decoded frame
per input, so tests can hold each stage to its decode budget.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter


class FileTimeout(Exception):
    """The per-file time limit ran out; the message says where."""


class Deadline:
    """A cooperative deadline checked between packets (0 or None = no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds or 0.0
        self._end = time.monotonic() + self.seconds if self.seconds > 0 else None

    def check(self, where: str) -> None:
        """Raise FileTimeout when the time limit has passed; `where` names the step."""
        if self._end is not None and time.monotonic() > self._end:
            raise FileTimeout(f"time limit of {self.seconds:g} s reached during {where}")


@dataclass
class DecodeStats:
    """What a pass saw besides the frames: the basis of 'partly corrupt' and 'truncated' reasons."""

    frames: int = 0
    bad_packets: int = 0
    first_bad_packet_error: str = ""
    # Set when demuxing stopped with an error before the end of the file (truncated or broken box).
    demux_error: str = ""
    packets: int = 0
    keyframe_pts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StreamInfo:
    """The time base and start timestamp of a video stream."""

    time_base: Fraction
    # Timestamp of the stream's start; frame times are reported relative to it.
    start_pts: int


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: index in decode order, timestamp, seconds from the start."""

    index: int
    pts: int
    seconds: float
    frame: av.VideoFrame


def use_cpus(cpus: float) -> None:
    """Size OpenCV's thread pool to the CPUs a task was given (at least one).

    OpenCV's pthreads pool runs a thread per core of the machine whatever OMP_NUM_THREADS says (Ray
    sets that one): a 1-CPU score task used 1.25 cores here, borrowing the idle core when it ran
    alone and taking it from the other worker's task when two ran side by side.
    """
    cv2.setNumThreads(max(1, int(cpus)))


Source = bytes | str | Path


@dataclass
class DecodeLog:
    """Per input (a path, or `bytes:<sha1 prefix>` for bytes): container opens, decoding passes
    (`iter_frames` runs, each one decoder) and decoded frames."""

    opens: Counter[str] = field(default_factory=Counter)
    passes: Counter[str] = field(default_factory=Counter)
    frames: Counter[str] = field(default_factory=Counter)


_logs: list[DecodeLog] = []


@contextmanager
def count_decodes() -> Iterator[DecodeLog]:
    """Record every `open_input`, every `iter_frames` pass and every frame it decodes in the block."""
    log = DecodeLog()
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)


def source_label(source: Source) -> str:
    """A short name for the source in messages: its path, or a hash of its bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        return "bytes:" + hashlib.sha1(source).hexdigest()[:12]
    return os.fspath(source)


def open_input(source: Source) -> av.container.InputContainer:
    """Open a file path or in-memory bytes for decoding (the only way media opens an input)."""
    if _logs:
        label = source_label(source)
        for log in _logs:
            log.opens[label] += 1
    if isinstance(source, bytes | bytearray | memoryview):
        container = av.open(io.BytesIO(source), mode="r")
    else:
        # A bounded probe keeps a malformed header from stalling the open; errors surface as av errors.
        container = av.open(os.fspath(source), mode="r", options={"probesize": str(32 << 20)})
    if _logs:
        _labels[id(container)] = label
    return container


# Container -> label while a DecodeLog is active (ids of closed containers are overwritten on reuse).
_labels: dict[int, str] = {}


def log_decoding(container: av.container.InputContainer, *, passes: int = 0, frames: int = 0) -> None:
    """Count decoding passes and decoded frames of an `open_input` container in the active
    `count_decodes` logs (for decode loops other than `iter_frames`, such as media.slots)."""
    if _logs:
        label = _labels.get(id(container), "unlabelled")
        for log in _logs:
            log.passes[label] += passes
            log.frames[label] += frames


def configure_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    """Frame+slice threading; `threads`=0 lets libavcodec use one thread per core."""
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads


def iter_frames(  # noqa: PLR0912 — the demux/decode loop with its timestamp repairs in one place
    container: av.container.InputContainer,
    stats: DecodeStats,
    deadline: Deadline,
    *,
    threads: int = 0,
    where: str = "decoding",
    with_packets: bool = False,
) -> Iterator[DecodedFrame | av.Packet]:
    """Decode the first video stream of an open container from its current position.

    Yields `DecodedFrame`s in output order; with `with_packets` it also yields each demuxed
    packet once it has been sent to the decoder, before the frames it produced (stream copy). Timestamps missing in the container are
    filled from the previous frame plus the nominal frame duration.
    """
    stream = container.streams.video[0]
    configure_threads(stream, threads)
    label = _labels.get(id(container), "unlabelled") if _logs else ""
    for log in _logs:
        log.passes[label] += 1
    info = stream_info(stream)
    nominal = _nominal_duration_pts(stream)
    last_pts: int | None = None
    demux = container.demux(stream)
    while True:
        deadline.check(where)
        try:
            packet = next(demux)
        except StopIteration:
            break
        except av.error.FFmpegError as err:
            stats.demux_error = f"{type(err).__name__}: {err}"
            packet = None
        if packet is not None and packet.size:
            stats.packets += 1
            if packet.is_keyframe and packet.pts is not None:
                stats.keyframe_pts.append(int(packet.pts))
        try:
            # A None packet (after a demux error) flushes the decoder so buffered frames come out.
            frames = packet.decode() if packet is not None else stream.codec_context.decode(None)
        except av.error.FFmpegError as err:
            stats.bad_packets += 1
            if not stats.first_bad_packet_error:
                stats.first_bad_packet_error = f"{type(err).__name__}: {err}"
            frames = []
        if with_packets and packet is not None and packet.size:
            # After decoding, so a consumer may re-time the packet for muxing without affecting the decoder.
            yield packet
        for frame in frames:
            pts = frame.pts
            if pts is None:
                pts = (last_pts + nominal) if last_pts is not None else info.start_pts
            elif last_pts is not None and pts <= last_pts:
                # Out-of-order or repeated timestamps (broken muxers): keep time strictly increasing.
                pts = last_pts + 1
            last_pts = pts
            seconds = float((pts - info.start_pts) * info.time_base)
            for log in _logs:
                log.frames[label] += 1
            index = stats.frames
            stats.frames += 1  # counted before the consumer takes it: one that stops early still counts it
            yield DecodedFrame(index, pts, seconds, frame)
        if packet is None:
            break


def stream_info(stream: av.video.stream.VideoStream) -> StreamInfo:
    """The stream's time base and start timestamp."""
    time_base = stream.time_base or Fraction(1, 90000)
    start = stream.start_time if stream.start_time is not None else 0
    return StreamInfo(Fraction(time_base), int(start))


def nominal_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's nominal frame rate, or None when no plausible one is recorded."""
    for rate in (stream.guessed_rate, stream.base_rate, stream.average_rate):
        if rate and 0 < float(rate) < 1000:
            return Fraction(rate)
    return None


def _nominal_duration_pts(stream: av.video.stream.VideoStream) -> int:
    rate = nominal_rate(stream) or Fraction(25)
    time_base = stream.time_base or Fraction(1, 90000)
    return max(1, round(1 / (rate * Fraction(time_base))))


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) with w = target_width (never upscaled; 0 = keep), aspect kept, both even and >= 2."""
    if 0 < target_width < width:
        height = round(height * target_width / width)
        width = target_width
    return max(2, width // 2 * 2), max(2, height // 2 * 2)


def to_bgr(frame: av.VideoFrame, width: int, height: int, converter: VideoReformatter) -> np.ndarray:
    """BGR24 pixels at (width, height), both even.

    Scaling happens in YUV (swscale) and the colour conversion in OpenCV: swscale's own scaled
    RGB output is dithered, and the dither noise in dark frames looks like large hue changes to
    the HSV-based detectors (a fade to black then scores as a hard cut). The caller's `converter`
    keeps one single-threaded swscale context for a whole file instead of one per frame.
    """
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        frame = converter.reformat(
            frame, width=width, height=height, format="yuv420p", interpolation="AREA", threads=1
        )
    return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)


_PLANAR_420 = ("yuv420p", "yuvj420p")


def detection_bgr(frame: av.VideoFrame, target_width: int, converter: VideoReformatter) -> np.ndarray:
    """A small BGR image for the detectors, as cheap as possible.

    8-bit 4:2:0 frames (nearly all H.264/HEVC/VP9/AV1) are subsampled by an integer step straight
    from the decoder's planes (no copy of the full frame, no swscale), which is what keeps
    detection close to the cost of decoding; other formats go through `to_bgr`.
    """
    step = max(1, frame.width // target_width) if target_width > 0 else 1
    if frame.format.name not in _PLANAR_420:
        width, height = scaled_size(frame.width, frame.height, frame.width // step)
        return to_bgr(frame, width, height, converter)
    y, u, v = (_subsampled(plane, step) for plane in frame.planes)  # frame.planes makes new objects
    h = min(u.shape[0], v.shape[0], y.shape[0] // 2)
    w = min(u.shape[1], v.shape[1], y.shape[1] // 2)
    if h < 1 or w < 1:
        width, height = scaled_size(frame.width, frame.height, frame.width // step)
        return to_bgr(frame, width, height, converter)
    i420 = np.empty((h * 3, w * 2), np.uint8)
    i420[: 2 * h] = y[: 2 * h, : 2 * w]
    chroma = i420[2 * h :].reshape(2, h, w)
    chroma[0] = u[:h, :w]
    chroma[1] = v[:h, :w]
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def _subsampled(plane: av.video.plane.VideoPlane, step: int) -> np.ndarray:
    """Every `step`th row and column of a plane, as a view of the decoder's buffer."""
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return rows[::step, : plane.width : step]


def display_rotation(frame: av.VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180, 270) a player turns this frame by, from the display matrix."""
    try:
        ccw = round(frame.rotation)
    except (AttributeError, ValueError, TypeError):
        return 0
    return (-ccw) % 360 // 90 * 90


def rotate(image: np.ndarray, clockwise_degrees: int) -> np.ndarray:
    """The image rotated clockwise by a multiple of 90 degrees."""
    if clockwise_degrees == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(clockwise_degrees // 90)))

"""A clip's frames: at sampled times or a frame range, at a given size and crop, as RGB or planes.

One open and one decode pass per call, through `media.decode.iter_frames`; decoding stops as soon
as the last frame asked for (and any observer) is served, and only the frames kept are converted,
each by one single-threaded swscale context per call (a fresh context per frame, as
`frame.to_ndarray(format=...)` builds, cost more than decoding the frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from media.decode import Deadline, DecodedFrame, DecodeStats, Source, iter_frames, open_input
from media.sampling import Sampling, TargetCursor, sample_times

PixelFormat = Literal["rgb24", "gray", "yuv420p"]
# (source width, source height) -> (output width, output height)
SizeRule = Callable[[int, int], tuple[int, int]]


class MediaError(ValueError):
    """Bytes or a file that give no frame; the message says why."""


class FrameObserver(Protocol):
    """Sees every decoded frame of a `read_clip` pass (motion runs, codec motion vectors)."""

    def start(self, targets: int) -> None:
        """Called once before the first frame with the number of sampling targets (0: none)."""
        ...

    def see(self, item: DecodedFrame, seconds: float, targets: list[int]) -> bool:
        """`seconds` from the first frame; `targets` the sampling targets this frame took.
        Returns whether it needs the frames after this one even when the pass itself does not."""
        ...


@dataclass(frozen=True)
class ClipFrames:
    """The frames kept from one pass, in presentation order, without repeats."""

    frames: np.ndarray  # (n, H, W, 3) rgb24, (n, H, W) gray, (n, H*3/2, W) yuv420p (I420 planes)
    times_s: np.ndarray  # (n,) seconds from the clip's first frame
    # For each sampling target, the index in `frames` of the frame it took (fixed-count views).
    target_frames: np.ndarray
    source_size: tuple[int, int]  # (width, height) as decoded
    frames_decoded: int
    nominal_fps: float = 0.0  # the stream's average (or guessed) rate

    def per_target(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames, times) with one entry per sampling target: repeats where targets share a frame."""
        return self.frames[self.target_frames], self.times_s[self.target_frames]


def fit_pixels(max_pixels: int) -> SizeRule:
    """The largest even size with the source's aspect ratio and at most `max_pixels`; never upscaled."""

    def rule(width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
        return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)

    return rule


def fit_width(target_width: int) -> SizeRule:
    """`target_width` wide (may upscale), aspect kept, even height."""

    def rule(width: int, height: int) -> tuple[int, int]:
        return target_width, max(2, round(height * target_width / max(1, width)) // 2 * 2)

    return rule


def fit_short_side(short_side: int) -> SizeRule:
    """The short side at most `short_side` (never upscaled), aspect kept, rounded (odd sizes allowed)."""

    def rule(width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, short_side / min(width, height))
        return max(2, round(width * scale)), max(2, round(height * scale))

    return rule


def cover_crop(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to cover (width, height) with the aspect kept, then crop the centre."""
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = cv2.resize(
        frame, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]


def read_clip(
    source: Source,
    sampling: Sampling | None = None,
    *,
    indices: range | None = None,
    first: int | None = None,
    middle: int | None = None,
    size: SizeRule | None = None,
    cover: tuple[int, int] | None = None,
    fmt: PixelFormat = "rgb24",
    threads: int = 1,
    export_mvs: bool = False,
    observer: FrameObserver | None = None,
) -> ClipFrames:
    """Decode a clip once and keep the frames asked for.

    Which frames: `sampling` (times, see media.sampling), or the frames at decoding-order
    `indices` (a step-1 range), or the `first` n frames (fewer when the clip is shorter), or the
    `middle` n frames, or every frame.
    Size: `size` scales in swscale; `cover=(width, height)` scales the RGB frame to cover that size
    and crops the centre (OpenCV, area/linear). Raises MediaError when nothing decodes, and when
    `middle` asks for more frames than the clip has.
    """
    with _open_video(source) as container:
        stream = container.streams.video[0]
        if export_mvs:
            stream.codec_context.options = {"flags2": "+export_mvs"}
        targets = sample_times(stream_duration(container, stream), sampling) if sampling else None
        if first is not None:
            indices = range(first)
        if middle is not None:
            total = frame_count(container, stream)
            if total < middle:
                raise MediaError(f"clip has {total} frames, {middle} are needed")
            indices = range((total - middle) // 2, (total - middle) // 2 + middle)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        try:
            clip = _decode(container, targets, indices, size, cover, fmt, threads, observer)
        except av.error.FFmpegError as err:
            raise MediaError(f"clip does not decode: {err}") from err
        if indices is not None and first is None and len(clip.frames) < len(indices):
            raise MediaError(
                f"clip decodes to {indices.start + len(clip.frames)} frames, {indices.stop} are needed"
            )
        return replace(clip, nominal_fps=rate)


def _decode(container, targets, indices, size, cover, fmt, threads, observer) -> ClipFrames:
    cursor = TargetCursor(targets) if targets is not None else None
    if observer is not None:
        observer.start(0 if targets is None else len(targets))
    convert = _Converter(fmt, size, cover)
    kept: list[np.ndarray] = []
    times: list[float] = []
    target_frames: list[int] = []
    stats = DecodeStats()
    t0: float | None = None
    last: DecodedFrame | None = None
    observing = False
    for item in iter_frames(container, stats, Deadline(None), threads=threads, where="clip decoding"):
        assert isinstance(item, DecodedFrame)
        t0 = item.seconds if t0 is None else t0
        rel = item.seconds - t0
        last = item
        if cursor is not None:
            taken = cursor.take(rel)
            keep = bool(taken)
        else:
            taken = []
            keep = indices is None or item.index in indices
        if keep:
            target_frames += [len(kept)] * len(taken)
            kept.append(convert(item.frame))
            times.append(rel)
        if observer is not None:
            observing = observer.see(item, rel, taken)
        more = not cursor.done if cursor is not None else indices is None or item.index + 1 < indices.stop
        if not more and not observing:
            break
    if last is None or not (kept or cursor is not None):
        if last is not None:
            raise MediaError(f"clip has {stats.frames} frames, none at the indices asked for")
        detail = f" ({stats.first_bad_packet_error or stats.demux_error})" if stats.packets else ""
        raise MediaError(f"no frame decodes from the clip{detail}")
    if cursor is not None:
        if not kept:  # every target lies past the last frame: the last frame stands for them
            kept.append(convert(last.frame))
            times.append(last.seconds - (t0 or 0.0))
        target_frames += [len(kept) - 1] * (len(cursor.targets) - len(target_frames))
    return ClipFrames(
        frames=np.stack(kept),
        times_s=np.asarray(times, dtype=np.float64),
        target_frames=np.asarray(target_frames, dtype=np.int64),
        source_size=(last.frame.width, last.frame.height),
        frames_decoded=last.index + 1,
    )


class _Converter:
    """Decoded frame -> numpy in the asked format and size, with one swscale context for the pass."""

    def __init__(self, fmt: PixelFormat, size: SizeRule | None, cover: tuple[int, int] | None) -> None:
        self.fmt, self.size, self.cover = fmt, size, cover
        self._scaler = VideoReformatter()
        self._out: tuple[int, int] | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is not None and self._out is None:
            self._out = self.size(frame.width, frame.height)
        width, height = self._out or (None, None)
        if self.fmt == "yuv420p" and frame.format.name == "yuv420p" and self._out is None:
            return frame.to_ndarray()
        # One scaling thread: the decode already holds the task's CPU slot.
        image = self._scaler.reformat(
            frame, width=width, height=height, format=self.fmt, threads=1
        ).to_ndarray()
        if self.cover is not None:
            image = cover_crop(image, *self.cover)
        return image


def stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    """Seconds the stream lasts: its header, else the container's, else its packets' timestamps."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    # No duration in the headers: the packets' timestamps tell it without decoding anything.
    ends = [
        float((p.pts + (p.duration or 0)) * p.time_base) for p in container.demux(stream) if p.pts is not None
    ]
    container.seek(0, stream=stream)
    return (max(ends) - min(ends)) if ends else 0.0


def frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Frames in the stream: the header's count, else its packets counted (a demux, no decoding)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    count = sum(1 for p in container.demux(stream) if p.size)
    container.seek(0, stream=stream)
    return count


def decode_check(source: Source, *, limit: int | None = None, threads: int = 1) -> DecodeStats:
    """Decode every frame of a clip (or its first `limit`) without converting a pixel, and return
    what the pass saw: frames decoded, packets that did not decode (and the first error), a demux
    error (a truncated file). Raises MediaError when the source is not a container with video."""
    stats = DecodeStats()
    with _open_video(source) as container:
        for _ in iter_frames(container, stats, Deadline(None), threads=threads, where="decode check"):
            if limit is not None and stats.frames >= limit:
                break
    return stats


def _open_video(source: Source) -> av.container.InputContainer:
    """`open_input` for a source that must hold video: MediaError with the reason when it does not."""
    if isinstance(source, bytes | bytearray | memoryview) and not source:
        raise MediaError("empty clip bytes")
    try:
        container = open_input(source)
    except av.error.FFmpegError as err:
        raise MediaError(f"not a readable video container: {err}") from err
    if not container.streams.video:
        container.close()
        raise MediaError("no video stream in clip")
    return container

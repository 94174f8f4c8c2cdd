"""Sample frames from a clip's encoded MP4 bytes for a vision-language model.

Frames are chosen by presentation time, from the packet timestamps (a demux pass, no decoding),
so variable-frame-rate clips are sampled evenly in time, not in frame index. Decoding stops at the
last frame needed. Each frame is scaled down by swscale inside PyAV to at most `max_pixels`,
keeping its aspect ratio; frames are never scaled up.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image


class FrameSamplingError(ValueError):
    """The clip bytes cannot give frames (not a video, no video stream, no decodable frame)."""


@dataclass(frozen=True)
class SampledFrames:
    frames: list[np.ndarray]  # RGB uint8, H x W x 3, all the same size
    timestamps_s: list[float]  # presentation time of each frame from the clip start
    source_size: tuple[int, int]  # (width, height) before scaling


def fit_max_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest even size with the same aspect ratio and at most `max_pixels` pixels."""
    if width <= 0 or height <= 0:
        raise FrameSamplingError(f"invalid frame size {width}x{height}")
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    new_w = max(2, int(width * scale) // 2 * 2)
    new_h = max(2, int(height * scale) // 2 * 2)
    return new_w, new_h


def choose_times(
    start_s: float, duration_s: float, num_frames: int, fps: float | None, max_frames: int
) -> list[float]:
    """Target presentation times: `num_frames` at segment centres, or every 1/fps, capped at max_frames."""
    if fps is not None:
        count = max(1, min(max_frames, math.floor(duration_s * fps + 1e-9)))
        if count == max_frames and duration_s * fps > max_frames:
            # The rate would exceed the cap: spread max_frames evenly instead.
            return [start_s + (i + 0.5) * duration_s / count for i in range(count)]
        return [start_s + (i + 0.5) / fps for i in range(count)]
    return [start_s + (i + 0.5) * duration_s / num_frames for i in range(num_frames)]


def _frame_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[float]:
    time_base = stream.time_base
    if time_base is None:
        raise FrameSamplingError("video stream has no time base")
    times = sorted(
        float(packet.pts * time_base) for packet in container.demux(stream) if packet.pts is not None
    )
    if not times:
        raise FrameSamplingError("video stream has no timestamped packets")
    return times


def sample_frames(
    data: bytes,
    num_frames: int = 8,
    fps: float | None = None,
    max_frames: int = 32,
    max_pixels: int = 448 * 448,
) -> SampledFrames:
    if not data:
        raise FrameSamplingError("empty clip bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as err:
        raise FrameSamplingError(f"not a readable video container: {err}") from err
    with container:
        if not container.streams.video:
            raise FrameSamplingError("no video stream in clip")
        stream = container.streams.video[0]
        try:
            times = _frame_times(container, stream)
        except av.FFmpegError as err:
            raise FrameSamplingError(f"demuxing failed: {err}") from err
        time_base = stream.time_base
        assert time_base is not None  # checked by _frame_times
        first = times[0]
        frame_step = (times[-1] - first) / (len(times) - 1) if len(times) > 1 else 0.0
        duration = times[-1] - first + frame_step if frame_step > 0 else 0.0
        targets = choose_times(first, duration, num_frames, fps, max_frames) if duration > 0 else [first]
        # Each target takes the frame displayed at that instant (the last one starting at or before it).
        wanted = sorted({times[max(0, _last_at_or_before(times, t))] for t in targets})
        container.seek(0)
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        out_w, out_h = fit_max_pixels(width, height, max_pixels)
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        next_wanted = 0
        to_rgb = VideoReformatter()  # one single-threaded swscale context per clip, not one per frame
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * time_base)
                if next_wanted < len(wanted) and t >= wanted[next_wanted] - 1e-6:
                    # Several targets can fall in one frame gap (short clips, high num_frames).
                    while next_wanted < len(wanted) and t >= wanted[next_wanted] - 1e-6:
                        next_wanted += 1
                    frames.append(
                        to_rgb.reformat(
                            frame, width=out_w, height=out_h, format="rgb24", threads=1
                        ).to_ndarray()
                    )
                    stamps.append(t - first)
                if next_wanted >= len(wanted):
                    break
        except av.FFmpegError as err:
            if not frames:
                raise FrameSamplingError(f"decoding failed: {err}") from err
        if not frames:
            raise FrameSamplingError("no frame could be decoded")
    # Repeat frames when the clip has fewer distinct frames than requested (keeps a fixed count).
    want = len(targets)
    if len(frames) < want:
        picks = [min(len(frames) - 1, i * len(frames) // want) for i in range(want)]
        frames = [frames[i] for i in picks]
        stamps = [stamps[i] for i in picks]
    return SampledFrames(frames=frames, timestamps_s=stamps, source_size=(width, height))


def _last_at_or_before(times: list[float], t: float) -> int:
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] <= t + 1e-9:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

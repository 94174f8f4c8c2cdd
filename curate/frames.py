"""One decode per clip: the sampled frames every scorer shares.

A clip's encoded MP4 bytes are decoded once with PyAV. Frames are picked by timestamp (count
spread evenly, or a fixed rate), so variable frame rate clips sample the right moments. Around each
sampled point a short run of consecutive frames is kept as small grey images for optical flow, and,
when asked, the codec's motion vectors are read from the same decode. `clip_input` turns sampled
frames into the CLIP tower's square input here, in the CPU tasks, so they never import torch.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from curate.config import FrameSamplingConfig


class FrameDecodeError(ValueError):
    """A clip whose bytes do not decode to any video frame."""


@dataclass(frozen=True)
class CodecMotion:
    """Per inter-coded frame: area-weighted mean motion-vector length and the median vector (pixels)."""

    magnitude_px: np.ndarray  # (n,) float64
    global_px: np.ndarray  # (n, 2) float64


@dataclass(frozen=True)
class ClipFrames:
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB, the sampled frames at decoded size
    times_s: np.ndarray  # (n,) seconds from the clip's first frame
    # One (k, h, w) uint8 grey array per sampled point: k consecutive frames, downscaled.
    motion_runs: tuple[np.ndarray, ...]
    codec_motion: CodecMotion | None
    frames_decoded: int

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def content_hash(self) -> str:
        """sha256 of the sampled frames' pixels: equal for clips with identical decoded content."""
        digest = hashlib.sha256()
        digest.update(np.asarray(self.frames.shape, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.frames).tobytes())
        return digest.hexdigest()


def sample_times(duration_s: float, cfg: FrameSamplingConfig) -> np.ndarray:
    """Target timestamps (seconds from the first frame) of the frames to sample."""
    duration_s = max(float(duration_s), 0.0)
    if cfg.mode == "count":
        n = cfg.count
        return (np.arange(n, dtype=np.float64) + 0.5) * duration_s / n
    n = min(cfg.max_frames, max(1, int(np.floor(duration_s * cfg.rate_fps))))
    step = 1.0 / cfg.rate_fps
    return (np.arange(n, dtype=np.float64) + 0.5) * step


def decode_clip(
    data: bytes,
    cfg: FrameSamplingConfig,
    *,
    motion_width: int = 0,
    motion_run_length: int = 2,
    motion_points: int = 0,
    codec_motion_vectors: bool = False,
) -> ClipFrames:
    """Decode a clip once and return its sampled frames (see module docstring).

    motion_width=0 skips the motion runs. Runs start at `motion_points` of the sampled frames,
    spread over the clip (`spread_indices`), or at every sampled frame when 0. Raises
    FrameDecodeError when nothing decodes.
    """
    if not data:
        raise FrameDecodeError("clip has no bytes")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise FrameDecodeError("clip has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = cfg.decode_threads
            if codec_motion_vectors:
                stream.codec_context.options = {"flags2": "+export_mvs"}
            duration = _stream_duration(container, stream)
            return _decode(
                container,
                stream,
                duration,
                cfg,
                motion_width,
                motion_run_length,
                motion_points,
                codec_motion_vectors,
            )
    except av.FFmpegError as err:
        raise FrameDecodeError(f"clip does not decode: {err}") from err


def _stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
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


def _decode(
    container, stream, duration, cfg, motion_width, run_length, motion_points, want_mvs
) -> ClipFrames:
    targets = sample_times(duration, cfg)
    run_targets = set(spread_indices(len(targets), motion_points or len(targets)).tolist())
    picked: list[np.ndarray] = []
    times: list[float] = []
    runs: list[list[np.ndarray]] = []
    open_run: list[np.ndarray] | None = None
    mv_mag: list[float] = []
    mv_glob: list[tuple[float, float]] = []
    motion_size: tuple[int, int] | None = None
    t0: float | None = None
    last: av.VideoFrame | None = None
    # One converter per output kind, reused for the whole clip: frame.to_ndarray(format=...) and
    # frame.reformat(...) set up a fresh swscale context with automatic threading on every call,
    # which cost more (0.6-4 ms a frame) than decoding the frame.
    to_rgb = VideoReformatter()
    to_grey = VideoReformatter()
    decoded = 0
    next_target = 0
    for frame in container.decode(stream):
        decoded += 1
        t = float(frame.time) if frame.time is not None else decoded / float(stream.average_rate or 25)
        if t0 is None:
            t0 = t
        rel = t - t0
        last = frame
        if motion_width and motion_size is None:
            motion_size = _motion_size(frame.width, frame.height, motion_width)
        if open_run is not None:
            open_run.append(_grey_small(to_grey, frame, motion_size))
            if len(open_run) >= run_length:
                open_run = None
        if next_target < len(targets) and rel + 1e-6 >= targets[next_target]:
            picked.append(_rgb(to_rgb, frame))
            times.append(rel)
            # Several targets can fall on one frame when the clip has fewer frames than targets.
            starts_run = False
            while next_target < len(targets) and rel + 1e-6 >= targets[next_target]:
                starts_run |= next_target in run_targets
                next_target += 1
            if motion_size is not None and open_run is None and starts_run:
                open_run = [_grey_small(to_grey, frame, motion_size)]
                runs.append(open_run)
        if want_mvs:
            _collect_mvs(frame, mv_mag, mv_glob)
    if last is None:
        raise FrameDecodeError("clip has a video stream but no frame decodes")
    if not picked:
        picked.append(_rgb(to_rgb, last))
        times.append(float(last.time or 0.0) - (t0 or 0.0))
    codec_motion = None
    if want_mvs:
        codec_motion = CodecMotion(
            magnitude_px=np.asarray(mv_mag, dtype=np.float64),
            global_px=np.asarray(mv_glob, dtype=np.float64).reshape(-1, 2),
        )
    return ClipFrames(
        frames=np.stack(picked),
        times_s=np.asarray(times, dtype=np.float64),
        motion_runs=tuple(np.stack(r) for r in runs if len(r) >= 2),
        codec_motion=codec_motion,
        frames_decoded=decoded,
    )


def spread_indices(n: int, k: int) -> np.ndarray:
    """k of the indices 0..n-1 spread evenly: the (floored) centres of k equal groups; all when k >= n."""
    if k >= n:
        return np.arange(n)
    j = np.arange(k)
    return (2 * j * n + n - k) // (2 * k)


def clip_input(frames: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB -> (n, size, size, 3) uint8: shortest side to `size`, centre crop."""
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    for i, rgb in enumerate(frames):
        h, w = rgb.shape[:2]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
        top, left = (nh - size) // 2, (nw - size) // 2
        out[i] = resized[top : top + size, left : left + size]
    return out


def _motion_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    w = min(target_width, width)
    h = max(2, round(height * w / width))
    return w, h


# One scaling thread: the decode already holds its CPU slot (FrameSamplingConfig.decode_threads).
def _rgb(converter: VideoReformatter, frame: av.VideoFrame) -> np.ndarray:
    return converter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _grey_small(
    converter: VideoReformatter, frame: av.VideoFrame, size: tuple[int, int] | None
) -> np.ndarray:
    assert size is not None
    return converter.reformat(frame, width=size[0], height=size[1], format="gray", threads=1).to_ndarray()


def _collect_mvs(frame: av.VideoFrame, magnitudes: list[float], globals_: list[tuple[float, float]]) -> None:
    side = frame.side_data.get("MOTION_VECTORS")
    if side is None:
        return
    mvs = side.to_ndarray()
    if mvs.size == 0:
        return
    scale = np.maximum(mvs["motion_scale"].astype(np.float64), 1.0)
    dx = mvs["motion_x"] / scale
    dy = mvs["motion_y"] / scale
    area = mvs["w"].astype(np.float64) * mvs["h"]
    magnitudes.append(float(np.sum(np.hypot(dx, dy) * area) / np.sum(area)))
    # Only vectors into a past reference share one direction convention (source < 0).
    past = mvs["source"] < 0
    if np.any(past):
        globals_.append((float(np.median(dx[past])), float(np.median(dy[past]))))

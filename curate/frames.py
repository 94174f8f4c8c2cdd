"""One decode per clip: the sampled frames every scorer shares.

A clip's encoded MP4 bytes are decoded once (`media.read_clip`). Frames are picked by timestamp
(media.sampling: a count spread evenly, or a fixed rate whose cap spreads the frames over the
whole clip), so variable frame rate clips sample the right moments. Around each sampled point a
short run of consecutive frames is kept as small grey images for optical flow, and, when asked,
the codec's motion vectors are read from the same decode; decoding stops once the last sampled
frame and its run are in (or runs to the end for motion vectors). `tower_input` turns sampled
frames into the image tower's square input here, in the CPU tasks, so they never import torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from curate.config import FrameSamplingConfig
from media import MediaError, Sampling, read_clip, spread_indices
from media.decode import DecodedFrame

__all__ = ["ClipFrames", "CodecMotion", "FrameDecodeError", "decode_clip", "spread_indices", "tower_input"]


class FrameDecodeError(MediaError):
    """A clip whose bytes do not decode to any video frame."""


@dataclass(frozen=True)
class CodecMotion:
    """Per inter-coded frame: area-weighted mean motion-vector length and the median vector (pixels)."""

    magnitude_px: np.ndarray  # (n,) float64
    global_px: np.ndarray  # (n, 2) float64


@dataclass(frozen=True)
class ClipFrames:
    """The frames one decode of a clip gives every scorer."""

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB, the sampled frames at decoded size
    times_s: np.ndarray  # (n,) seconds from the clip's first frame
    # One (k, h, w) uint8 grey array per sampled point: k consecutive frames, downscaled.
    motion_runs: tuple[np.ndarray, ...]
    # Seconds from the clip's first frame of every frame of each run (the camera model's pair rates).
    motion_run_times_s: tuple[np.ndarray, ...]
    codec_motion: CodecMotion | None
    frames_decoded: int

    @property
    def height(self) -> int:
        """Height of the sampled frames in pixels."""
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        """Width of the sampled frames in pixels."""
        return int(self.frames.shape[2])

    def content_hash(self) -> str:
        """sha256 of the sampled frames' pixels: equal for clips with identical decoded content."""
        digest = hashlib.sha256()
        digest.update(np.asarray(self.frames.shape, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.frames).tobytes())
        return digest.hexdigest()


def sampling_of(cfg: FrameSamplingConfig) -> Sampling:
    return Sampling(mode=cfg.mode, count=cfg.count, rate_fps=cfg.rate_fps, max_frames=cfg.max_frames)


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
    sampling = sampling_of(cfg)
    observer = _MotionObserver(motion_width, motion_run_length, codec_motion_vectors, motion_points)
    try:
        clip = read_clip(
            data,
            sampling,
            threads=cfg.decode_threads,
            export_mvs=codec_motion_vectors,
            observer=observer,
        )
    except MediaError as err:
        raise FrameDecodeError(str(err)) from err
    return ClipFrames(
        frames=clip.frames,
        times_s=clip.times_s,
        motion_runs=tuple(np.stack(r) for r in observer.runs if len(r) >= 2),
        motion_run_times_s=tuple(np.asarray(t, dtype=np.float64) for t in observer.run_times if len(t) >= 2),
        codec_motion=observer.codec_motion(),
        frames_decoded=clip.frames_decoded,
    )


@dataclass
class _MotionObserver:
    """Collects the grey motion runs after sampled frames and the codec's motion vectors."""

    width: int
    run_length: int
    want_mvs: bool
    run_points: int = 0
    runs: list[list[np.ndarray]] = field(default_factory=list)
    run_times: list[list[float]] = field(default_factory=list)
    _open: list[np.ndarray] | None = None
    _size: tuple[int, int] | None = None
    _run_targets: set[int] | None = None
    _to_grey: VideoReformatter = field(default_factory=VideoReformatter)
    _mv_mag: list[float] = field(default_factory=list)
    _mv_glob: list[tuple[float, float]] = field(default_factory=list)

    def start(self, targets: int) -> None:
        # Which targets start a run is known once their count is (it depends on the duration only).
        self._run_targets = set(spread_indices(targets, self.run_points or targets).tolist())

    def see(self, item: DecodedFrame, seconds: float, targets: list[int]) -> bool:
        frame = item.frame
        if self.width and self._size is None:
            w = min(self.width, frame.width)
            self._size = (w, max(2, round(frame.height * w / frame.width)))
        if self._open is not None:
            self._open.append(self._grey(frame))
            self.run_times[-1].append(seconds)
            if len(self._open) >= self.run_length:
                self._open = None
        if targets and self._size is not None and self._open is None:
            assert self._run_targets is not None
            if any(t in self._run_targets for t in targets):
                self._open = [self._grey(frame)]
                self.runs.append(self._open)
                self.run_times.append([seconds])
        if self.want_mvs:
            _collect_mvs(frame, self._mv_mag, self._mv_glob)
        return self.want_mvs or self._open is not None

    def _grey(self, frame: av.VideoFrame) -> np.ndarray:
        assert self._size is not None
        w, h = self._size
        return self._to_grey.reformat(frame, width=w, height=h, format="gray", threads=1).to_ndarray()

    def codec_motion(self) -> CodecMotion | None:
        if not self.want_mvs:
            return None
        return CodecMotion(
            magnitude_px=np.asarray(self._mv_mag, dtype=np.float64),
            global_px=np.asarray(self._mv_glob, dtype=np.float64).reshape(-1, 2),
        )


def tower_input(frames: np.ndarray, size: int) -> np.ndarray:
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

"""Sample frames from a clip's encoded MP4 bytes for a vision-language model.

Frames are chosen by presentation time with the sampling every stage shares (media.sampling:
`num_frames` spread evenly, or one every 1/fps seconds with the `max_frames` cap spread over the
whole clip), so variable-frame-rate clips are sampled evenly in time, not in frame index. One
decode pass stops at the last frame needed; each kept frame is scaled down by swscale to at most
`max_pixels`, keeping its aspect ratio (never up). The VLM always gets one frame per target: a
frame that several targets share (a short clip) is repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media import MediaError, Sampling, fit_pixels, read_clip
from media import jpeg as encode_jpeg

__all__ = ["FrameSamplingError", "SampledFrames", "encode_jpeg", "sample_frames"]


class FrameSamplingError(MediaError):
    """The clip bytes cannot give frames (not a video, no video stream, no decodable frame)."""


@dataclass(frozen=True)
class SampledFrames:
    """Frames sampled from a clip, with their times and the clip's size before scaling."""

    frames: list[np.ndarray]  # RGB uint8, H x W x 3, all the same size
    timestamps_s: list[float]  # presentation time of each frame from the clip start
    source_size: tuple[int, int]  # (width, height) before scaling


def sample_frames(
    data: bytes,
    num_frames: int = 8,
    fps: float | None = None,
    max_frames: int = 32,
    max_pixels: int = 448 * 448,
) -> SampledFrames:
    """Sample `num_frames` frames spread over the clip (or `fps` up to `max_frames`), at most `max_pixels`
    each."""
    sampling = (
        Sampling(mode="rate", rate_fps=fps, max_frames=max_frames)
        if fps is not None
        else Sampling(mode="count", count=num_frames)
    )
    try:
        clip = read_clip(data, sampling, size=fit_pixels(max_pixels))
    except MediaError as err:
        raise FrameSamplingError(str(err)) from err
    frames, times = clip.per_target()
    return SampledFrames(
        frames=list(frames), timestamps_s=[float(t) for t in times], source_size=clip.source_size
    )

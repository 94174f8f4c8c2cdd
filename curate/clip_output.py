"""What an extracted clip is, shared by the two-pass extraction (curate.extract) and the one-pass
split (curate.single_pass, curate.stream_writer): the encoder's output geometry, the finished clip
or its failure, and the check of its container against the plan (`verify_clip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from curate.borders import ContentBox
from curate.clip_plan import ClipPlan
from curate.probe import Reason
from curate.split_config import ExtractConfig
from media import jpeg
from media.decode import open_input, rotate, scaled_size


@dataclass(frozen=True)
class Clip:
    """One finished clip: its plan, MP4 bytes, thumbnail and what the encoder wrote."""

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
    """A planned clip that could not be made, with the reason."""

    plan: ClipPlan
    reason: Reason
    detail: str

    @property
    def message(self) -> str:
        """The failure as one line: the clip's index, time range and detail."""
        return f"clip {self.plan.index} [{self.plan.start_s:.3f}-{self.plan.end_s:.3f}s]: {self.detail}"


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


def encoder_frame(frame: av.VideoFrame, g: OutputGeometry, scaler: VideoReformatter) -> av.VideoFrame:
    """The encoder's input for a decoded frame: 4:2:0 at the output size, cropped and rotated.

    swscale scales straight into the encoder's pixel format (area), and crop and rotation move
    the planes: no trip through RGB, whose two conversions cost more CPU than decoding, blurred
    the chroma twice and added swscale's RGB dither, which x264 then spent time encoding. A crop
    window at an odd offset does not start on a 4:2:0 chroma sample: that frame is scaled to
    4:4:4 and its window's chroma averaged 2x2, so the crop is exact in every plane. `scaler`
    keeps one single-threaded swscale context for the clip (a context per frame, with a thread
    per core, cost more than the frame).
    """
    odd = bool(g.crop_x % 2 or g.crop_y % 2)
    scaled = scaler.reformat(
        frame,
        width=g.scale_width,
        height=g.scale_height,
        format="yuv444p" if odd else "yuv420p",
        interpolation="AREA",
        threads=1,
    )
    pre_w, pre_h = (g.height, g.width) if g.rotation in (90, 270) else (g.width, g.height)
    if (pre_w, pre_h) == (g.scale_width, g.scale_height) and g.rotation == 0:
        return scaled
    planes = []
    for index, sub in enumerate((1, 1, 1) if odd else (1, 2, 2)):
        plane = scaled.planes[index]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        x, y = g.crop_x // sub, g.crop_y // sub
        window = rows[y : y + pre_h // sub, x : x + pre_w // sub]
        if odd and index:
            quads = window.reshape(pre_h // 2, 2, pre_w // 2, 2).astype(np.uint16)
            window = ((quads.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)
        planes.append(rotate(window, g.rotation))
    i420 = np.concatenate([p.reshape(-1) for p in planes]).reshape(-1, g.width)
    return av.VideoFrame.from_ndarray(i420, format="yuv420p")


def thumbnail_frame(frame: av.VideoFrame, width: int, scaler: VideoReformatter) -> av.VideoFrame:
    """An encoder frame (`encoder_frame`) at its thumbnail's size: scaled down (area, still 4:2:0)
    when wider than `width`. Every split path makes its thumbnail through this, so a clip's thumbnail
    is the same whether its middle frame was shrunk early (curate/stream_writer.py) or at the end."""
    if frame.width <= width:
        return frame
    w, h = scaled_size(frame.width, frame.height, width)
    return scaler.reformat(frame, width=w, height=h, format="yuv420p", interpolation="AREA", threads=1)


def thumbnail_jpeg(frame: av.VideoFrame, cfg: ExtractConfig, scaler: VideoReformatter) -> bytes:
    """The JPEG thumbnail of an encoder frame, or of its `thumbnail_frame`."""
    small = thumbnail_frame(frame, cfg.thumbnail_width, scaler)
    return jpeg(cv2.cvtColor(small.to_ndarray(), cv2.COLOR_YUV2RGB_I420), cfg.thumbnail_quality)


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

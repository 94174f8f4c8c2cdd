"""Frames out: H.264 MP4 (streamed or whole), JPEG thumbnails, animated previews (WebP, GIF).

Every MP4 reelforge writes (split clips, training clipsets, samples, test and benchmark footage)
goes through `Mp4Writer`, so x264's settings and its determinism fix live in one place.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.logging
import cv2
import numpy as np
from PIL import Image

from media.frames import MediaError, fit_width, read_clip
from media.sampling import Sampling


class Mp4Writer:
    """H.264 (yuv420p) in MP4, one frame at a time; `finish()` returns the file's bytes.

    `rate` is the nominal frame rate; `time_base` (default 1/rate) the timestamps' unit. Frames
    without an explicit pts are numbered 0, 1, 2... in that unit. `threads` x264 threads (1 keeps
    one CPU slot honest, and the bytes independent of the machine's core count). Writing to `path`
    streams the file to disk instead of memory.
    """

    def __init__(
        self,
        width: int,
        height: int,
        rate: Fraction | float,
        *,
        crf: int = 23,
        preset: str = "veryfast",
        time_base: Fraction | None = None,
        threads: int = 1,
        gop: int = 0,
        path: str | Path | None = None,
    ) -> None:
        if width % 2 or height % 2 or width < 2 or height < 2:
            raise ValueError(f"H.264 4:2:0 needs even sizes, got {width}x{height}")
        self.rate = rate if isinstance(rate, Fraction) else Fraction(rate).limit_denominator(1001)
        self.time_base = time_base if time_base is not None else 1 / self.rate
        self.frames = 0
        self._buffer = io.BytesIO() if path is None else None
        target: io.BytesIO | str = self._buffer if self._buffer is not None else os.fspath(path or "")
        self._out = av.open(target, mode="w", format="mp4")
        options = {"crf": str(crf), "preset": preset}
        if gop:
            options["g"] = str(gop)
        simd = x264_simd_without_avx512()
        if simd:
            options["x264-params"] = f"asm={simd}"
        stream = self._out.add_stream("libx264", rate=self.rate, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.codec_context.thread_count = threads
        self._stream = stream

    def add(self, image: np.ndarray | av.VideoFrame, pts: int | None = None, duration: int = 1) -> None:
        """Encode one (H, W, 3) uint8 RGB frame (or a decoded frame of the stream's size, as it is)
        at `pts` (time_base units) lasting `duration`."""
        frame = (
            image if isinstance(image, av.VideoFrame) else av.VideoFrame.from_ndarray(image, format="rgb24")
        )
        frame.pts = self.frames if pts is None else pts
        frame.time_base = self.time_base
        frame.duration = duration
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.frames += 1

    def finish(self) -> bytes:
        """Flush the encoder and close the file: its bytes (b'' when written to a path)."""
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self._out.close()
        return self._buffer.getvalue() if self._buffer is not None else b""

    def abort(self) -> None:
        """Close the output without finishing it."""
        with contextlib.suppress(av.error.FFmpegError):
            self._out.close()


def encode_mp4(
    frames: Iterable[np.ndarray] | np.ndarray,
    rate: Fraction | float,
    *,
    crf: int = 23,
    preset: str = "veryfast",
    gop: int = 0,
    path: str | Path | None = None,
) -> bytes:
    """RGB frames (all one even size) -> H.264 MP4 bytes (or written to `path`, returning b'')."""
    writer: Mp4Writer | None = None
    try:
        for image in frames:
            if writer is None:
                h, w = image.shape[:2]
                writer = Mp4Writer(w, h, rate, crf=crf, preset=preset, gop=gop, path=path)
            writer.add(image)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise ValueError("no frames to encode")
    return writer.finish()


def pad_even(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) padded by one edge pixel where H or W is odd (4:2:0 needs even sizes)."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


@functools.cache
def x264_simd_without_avx512() -> str:
    """x264's detected SIMD levels without AVX-512 ('' when it detected no AVX-512: keep its default).

    Why: x264's AVX-512 MB-tree code (the lookahead's propagation of costs to reference frames)
    reads memory it never wrote, so on AVX-512 CPUs the bytes and pixels of a clip depended on
    what the process had freed before (measured: identical frames in, a different file out on
    most runs; mbtree=0, bframes=0 or no AVX-512 each make it exact). Clips of a resumed or
    multi-node run then differed from a clean run, and so did their scores. Without AVX-512
    x264 encodes the same bytes on every run, identical to what AVX2 and SSSE3 machines make,
    and MB-tree keeps its bitrate saving (turning it off made clips 19-60% larger).
    The detected levels come from x264 itself (its start-up log line), so no level the CPU
    lacks is ever forced on.
    """
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    try:
        with av.logging.Capture() as logs, av.open(io.BytesIO(), mode="w", format="mp4") as probe:
            stream = probe.add_stream("libx264", rate=25)
            stream.width = stream.height = 16
            stream.pix_fmt = "yuv420p"
            stream.codec_context.open()
    finally:
        av.logging.set_level(previous)
    prefix = "using cpu capabilities:"
    levels = next((line.split(prefix, 1)[1].split() for _, _, line in logs if prefix in line), [])
    if "AVX512" not in levels:
        return ""
    return ",".join(level for level in levels if level != "AVX512")


def jpeg(image_rgb: np.ndarray, quality: int = 90, max_width: int = 0) -> bytes:
    """JPEG bytes of an RGB image, scaled down (area) to `max_width` when wider (0 = keep)."""
    h, w = image_rgb.shape[:2]
    if 0 < max_width < w:
        image_rgb = cv2.resize(
            image_rgb, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA
        )
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()


def animated_webp(frames: Sequence[np.ndarray], frame_ms: int) -> bytes:
    """A looping animated WebP of RGB frames (the report's clip previews)."""
    images = [Image.fromarray(f) for f in frames]
    out = io.BytesIO()
    images[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=frame_ms,
        loop=0,
        quality=70,
        method=4,
    )
    return out.getvalue()


def write_gif(frames: Sequence[np.ndarray], path: Path, fps: float) -> Path:
    """A looping GIF of RGB frames."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def clip_preview(mp4: bytes, frames: int = 8, width: int = 160, frame_ms: int = 250) -> bytes:
    """An animated WebP of `frames` frames sampled over the clip (count mode), `width` pixels wide.

    Targets that share a frame (a clip shorter than `frames` frames) show it once. Raises
    MediaError when the bytes give no frame.
    """
    if frames < 1 or width < 8:
        raise ValueError(f"a preview needs frames >= 1 and width >= 8, got frames={frames}, width={width}")
    clip = read_clip(mp4, Sampling(mode="count", count=frames), size=fit_width(width))
    if not len(clip.frames):
        raise MediaError("no frame decoded from the clip bytes")
    return animated_webp(list(clip.frames), frame_ms)

"""Frames out: H.264 MP4 (streamed or whole), JPEG thumbnails, animated previews (WebP, GIF);
packets out: `PacketWriter`, `remux`.

Every video reelforge encodes (split clips, training clipsets, samples, the sample footage, test
and benchmark footage) goes through `VideoWriter`, so x264's settings and its determinism fix live
in one place; every stream copy (the split's clips cut on keyframes, test and benchmark inputs
made from real footage by `remux`) goes through `PacketWriter`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import av.logging
import cv2
import numpy as np
from PIL import Image

from media.decode import Source, open_input
from media.frames import MediaError, fit_width, read_clip
from media.sampling import Sampling


class VideoWriter:
    """Encoded video, one frame at a time; `finish()` returns the file's bytes.

    H.264 (yuv420p) in MP4 unless `codec` and `container` name another encoder and muxer (the
    sample footage's VP9 in WebM, test files in Matroska or AVI). `rate` is the nominal frame rate;
    `time_base` (default 1/rate) the timestamps' unit. Frames without an explicit pts are numbered
    0, 1, 2... in that unit. `crf` and `preset` are x264's; `codec_options` go to the encoder on top
    (`{"bf": "0"}`), `container_options` to the muxer (`{"movflags": "+faststart"}`). `threads`
    encoder threads (1 keeps one CPU slot honest, and the bytes independent of the machine's core
    count). Writing to `path` streams the file to disk instead of memory.
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
        codec: str = "libx264",
        container: str = "mp4",
        codec_options: Mapping[str, str] | None = None,
        container_options: Mapping[str, str] | None = None,
    ) -> None:
        if width % 2 or height % 2 or width < 2 or height < 2:
            raise ValueError(f"4:2:0 video needs even sizes, got {width}x{height}")
        if av.codec.Codec(codec, "w").type != "video":
            raise ValueError(f"{codec!r} is not a video encoder")
        self.rate = rate if isinstance(rate, Fraction) else Fraction(rate).limit_denominator(1001)
        self.time_base = time_base if time_base is not None else 1 / self.rate
        self.frames = 0
        self._buffer = io.BytesIO() if path is None else None
        target: io.BytesIO | str = self._buffer if self._buffer is not None else os.fspath(path or "")
        self._out = av.open(target, mode="w", format=container, options=dict(container_options or {}))
        options = {"crf": str(crf), "preset": preset} if codec == "libx264" else {}
        if gop:
            options["g"] = str(gop)
        simd = x264_simd_without_avx512() if codec == "libx264" else ""
        if simd:
            options["x264-params"] = f"asm={simd}"
        options.update(codec_options or {})
        stream = self._out.add_stream(codec, rate=self.rate, options=options)
        assert isinstance(stream, av.video.stream.VideoStream)  # a video codec, checked above
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
    writer: VideoWriter | None = None
    try:
        for image in frames:
            if writer is None:
                h, w = image.shape[:2]
                writer = VideoWriter(w, h, rate, crf=crf, preset=preset, gop=gop, path=path)
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


class PacketWriter:
    """Packets of a stream, unchanged, into a new file (stream copy: no decode, no encode).

    `template` is the input stream whose codec parameters the output stream takes; `add` muxes one
    of its packets (timestamps as the caller sets them); `finish()` returns the file's bytes, or b''
    when it went to `target` (a path or a seekable file object).
    """

    def __init__(
        self,
        template: av.video.stream.VideoStream,
        target: str | Path | BinaryIO | None = None,
        *,
        container: str | None = None,
        container_options: Mapping[str, str] | None = None,
        comment: str = "",
    ) -> None:
        self._buffer: io.BytesIO | None = None
        sink: io.BytesIO | str | BinaryIO
        if target is None:
            sink = self._buffer = io.BytesIO()
        elif isinstance(target, str | Path):
            sink = os.fspath(target)
        else:
            sink = target
        # The format follows a path's name; a file object gets MP4 unless told otherwise.
        fmt = container or (None if isinstance(target, str | Path) else "mp4")
        self._out = av.open(sink, mode="w", format=fmt, options=dict(container_options or {}))
        if comment:
            self._out.metadata["comment"] = comment
        self._stream = self._out.add_stream_from_template(template)
        self.packets = 0

    def add(self, packet: av.Packet) -> None:
        """Mux one packet of the template's stream."""
        packet.stream = self._stream
        self._out.mux(packet)
        self.packets += 1

    def finish(self) -> bytes:
        """Close the file: its bytes (b'' when written to a target)."""
        self._out.close()
        return self._buffer.getvalue() if self._buffer is not None else b""

    def abort(self) -> None:
        """Close the output without finishing it."""
        with contextlib.suppress(av.error.FFmpegError):
            self._out.close()


def remux(
    source: Source,
    target: str | Path | BinaryIO,
    *,
    loops: int = 1,
    keep: slice = slice(None),
    comment: str = "",
    container: str | None = None,
    container_options: Mapping[str, str] | None = None,
) -> int:
    """Copy the first video stream's packets, unchanged, into a new file (no decode, no encode).

    `keep` selects packets by their place in decoding order, as `itertools.islice` does (streamed,
    so no negative bounds; cutting packets off the front or the end makes a clip without its
    keyframe or its last frames); `loops` plays them that many times back to back, each shifted by
    the span of the one before; `comment` goes into the container's metadata (the same frames in
    files of different bytes). The format follows the target's name, or `container` (MP4 for a
    file object). Returns the packets written.
    """
    writer: PacketWriter | None = None
    offset = 0
    try:
        for _ in range(loops):
            first: int | None = None
            end = 0
            step = 1  # the last step between timestamps: packets often leave their duration unset
            last_dts: int | None = None
            with open_input(source) as inp:
                in_stream = inp.streams.video[0]
                if writer is None:
                    writer = PacketWriter(
                        in_stream,
                        target,
                        container=container,
                        container_options=container_options,
                        comment=comment,
                    )
                # the demuxer's end-of-stream marker has no size and no timestamps
                packets = (
                    p for p in inp.demux(in_stream) if p.size and p.dts is not None and p.pts is not None
                )
                for packet in itertools.islice(packets, keep.start, keep.stop):
                    assert packet.pts is not None and packet.dts is not None
                    if last_dts is not None and packet.dts > last_dts:
                        step = packet.dts - last_dts
                    last_dts = packet.dts
                    first = packet.pts if first is None else min(first, packet.pts)
                    end = max(end, packet.pts + (packet.duration or step))
                    packet.pts += offset
                    packet.dts += offset
                    writer.add(packet)
            offset += end - (first or 0)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    assert writer is not None  # loops >= 1
    writer.finish()
    return writer.packets

"""A generated corpus of bad and awkward input files, each with the outcome the split job must give.

Every file has distinct bytes (its own seed), because the split job keys files by content hash and
stores identical content once; the corpus is about bad input, not duplicates.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from media import VideoWriter

WIDTH, HEIGHT, FPS = 192, 108, 25
SHOT_FRAMES = 50  # 2 s shots: a clip survives the 1 s minimum after trimming at the cuts


@dataclass(frozen=True)
class Expect:
    """What the split job must record for one input.

    `reasons`: reason codes (curate.probe.Reason values) of which the file's `error` must name at least
    one (empty: the file must have no error at all). `clips`: "some" or "none".
    """

    status: str
    reasons: frozenset[str]
    clips: str


def _expect(status: str, clips: str, *reasons: str) -> Expect:
    return Expect(status, frozenset(reasons), clips)


OK = _expect("ok", "some")


def shot_frames(seed: int, shots: int = 3) -> list[np.ndarray]:
    """Frames of `shots` hard-cut shots: each a textured colour field drifting sideways."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(shots):
        base = rng.integers(0, 256, size=(HEIGHT // 4, (WIDTH + 2 * SHOT_FRAMES) // 4, 3), dtype=np.uint8)
        base = cv2.resize(base, (WIDTH + 2 * SHOT_FRAMES, HEIGHT), interpolation=cv2.INTER_CUBIC)
        tint = np.array([(90 * k) % 256, (160 + 70 * k) % 256, (40 + 110 * k) % 256], np.uint8)
        base = (base // 2 + tint // 2).astype(np.uint8)
        # A 2 px/frame pan.
        frames.extend(np.ascontiguousarray(base[:, i * 2 : i * 2 + WIDTH]) for i in range(SHOT_FRAMES))
    return frames


def encode_h264(
    path: Path, frames: list[np.ndarray], *, faststart: bool = True, container: str = "mp4"
) -> bytes:
    """Write H.264 in MP4 (moov first with faststart, so a truncated file keeps its index) to `path`."""
    options = {"movflags": "+faststart"} if faststart and container == "mp4" else {}
    writer = VideoWriter(
        WIDTH, HEIGHT, FPS, gop=25, path=path, container=container, container_options=options
    )
    for frame in frames:
        writer.add(frame)
    writer.finish()
    return path.read_bytes()


def encode_audio_only(path: Path, seconds: float = 2.0) -> bytes:
    """Write an MP4 with one AAC audio stream and no video to `path`."""
    rate = 22050
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        step = 1024
        for i in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[None, i : i + step], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def raw_avi_claiming(width: int, height: int, seed: int) -> bytes:
    """A small rawvideo AVI whose main and stream headers are patched to claim width x height.

    Raw video has no size inside its bitstream, so the container's BITMAPINFOHEADER (32-bit fields)
    is the only source of the frame size a reader sees.
    """
    rng = np.random.default_rng(seed)
    writer = VideoWriter(64, 48, FPS, codec="rawvideo", container="avi")
    for _ in range(5):
        writer.add(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))
    data = bytearray(writer.finish())
    avih = data.index(b"avih") + 8  # MainAVIHeader: dwWidth, dwHeight are its 9th and 10th fields
    data[avih + 32 : avih + 40] = struct.pack("<II", width, height)
    strf = data.index(b"strf") + 8  # BITMAPINFOHEADER: biSize, biWidth, biHeight
    data[strf + 4 : strf + 12] = struct.pack("<ii", width, height)
    return bytes(data)


def image_bytes(seed: int, ext: str) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    return encoded.tobytes()


def build_corpus(out: Path) -> dict[str, Expect]:
    """Write the generated bad-input corpus into `out`; returns {file name: expected outcome}."""
    out.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expect] = {}

    def put(name: str, data: bytes, expect: Expect) -> None:
        (out / name).write_bytes(data)
        expected[name] = expect

    scratch = out / ".scratch"
    scratch.mkdir()

    def h264(seed: int, frames: int | None = None, **kwargs: object) -> bytes:
        return encode_h264(
            scratch / f"{seed}.{kwargs.get('container', 'mp4')}", shot_frames(seed)[:frames], **kwargs
        )

    put("good.mp4", h264(1), OK)
    put("zero_bytes.mp4", b"", _expect("error", "none", "empty_file"))
    whole = h264(2)
    # The first keyframe itself is cut: whether that reads as a cut-off file or a broken packet, no frame
    # decodes and the row says so.
    put(
        "truncated_10.mp4",
        whole[: len(whole) // 10],
        _expect("error", "none", "truncated", "undecodable_bitstream"),
    )
    put("truncated_50.mp4", whole[: len(whole) // 2], _expect("ok", "some", "truncated"))
    put("truncated_90.mp4", whole[: len(whole) * 9 // 10], _expect("ok", "some", "truncated"))
    # Without faststart the index (moov) is at the end: half a file has no index at all.
    no_index = h264(3, faststart=False)
    put(
        "truncated_no_index_50.mp4",
        no_index[: len(no_index) // 2],
        _expect("error", "none", "truncated", "not_a_media_file"),
    )
    put(
        "random_bytes.mp4",
        np.random.default_rng(4).integers(0, 256, 200_000, dtype=np.uint8).tobytes(),
        _expect("error", "none", "not_a_media_file", "no_video_stream"),
    )
    put("text.mkv", b"This is not a video.\n" * 200, _expect("error", "none", "not_a_media_file"))
    # A still image is a one-frame video to FFmpeg: too short to give a clip, and said so.
    put("image_png.mp4", image_bytes(5, ".png"), _expect("ok", "none", "too_short"))
    put("image_jpeg.mov", image_bytes(6, ".jpg"), _expect("ok", "none", "too_short"))
    put(
        "audio_only.mp4",
        encode_audio_only(scratch / "audio.mp4"),
        _expect("error", "none", "no_video_stream"),
    )
    put(
        "claims_100000x100000.avi",
        raw_avi_claiming(100_000, 100_000, 7),
        _expect("error", "none", "invalid_frame_size"),
    )
    # Accepted by FFmpeg, refused by the probe's pixel limit before any frame buffer is allocated.
    put(
        "claims_10000x10000.avi",
        raw_avi_claiming(10_000, 10_000, 8),
        _expect("error", "none", "invalid_frame_size"),
    )
    put("one_frame.mp4", h264(9, frames=1), _expect("ok", "none", "too_short"))
    put("name with spaces.mp4", h264(10), OK)
    put("vidéo ünïcødé 日本語 🎬.mp4", h264(11), OK)
    put("meta;$(touch PWNED)`touch PWNED2`&|'q'\"dq\"*?.mp4", h264(12), OK)
    put("mpegts.ts", h264(13, container="mpegts"), OK)
    (out / "dangling_link.mp4").symlink_to(out / "this file does not exist.mp4")
    expected["dangling_link.mp4"] = _expect("error", "none", "file_missing")
    os.mkfifo(out / "named_pipe.mp4")  # opening it for reading would block forever
    expected["named_pipe.mp4"] = _expect("error", "none", "not_a_file")
    if os.geteuid() != 0:
        unreadable = out / "unreadable.mp4"
        unreadable.write_bytes(h264(14))
        unreadable.chmod(0)
    else:
        # Root reads a mode-000 file anyway; /proc/self/mem is a regular file every read of which at
        # offset 0 fails with EIO, so it is an unreadable file even for root.
        (out / "unreadable.mp4").symlink_to("/proc/self/mem")
    expected["unreadable.mp4"] = _expect("error", "none", "unreadable")
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    return expected

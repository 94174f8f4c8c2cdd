"""Probe one input file with PyAV: what it is, and if it is not a usable video, exactly why.

`probe_file` never raises for a bad file: it returns a `Probe` whose `error` holds a reason
code from `Reason` plus a detail. `Probe.refine` later replaces the sampled estimates (frame
count, duration, average rate, VFR) with the values measured over the full decode pass.
"""

from __future__ import annotations

import errno
import hashlib
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import av.error

from curate.split_config import ProbeConfig
from media.decode import (
    Deadline,
    DecodeStats,
    FileTimeout,
    display_rotation,
    iter_frames,
    nominal_rate,
    open_input,
)


class Reason(StrEnum):
    """Why a file produced no (or not all) clips. Stored as the prefix of the `error` column."""

    FILE_MISSING = "file_missing"
    NOT_A_FILE = "not_a_file"
    UNREADABLE = "unreadable"
    EMPTY_FILE = "empty_file"
    NOT_MEDIA = "not_a_media_file"
    NO_VIDEO_STREAM = "no_video_stream"
    INVALID_FRAME_SIZE = "invalid_frame_size"
    UNSUPPORTED_CODEC = "unsupported_codec"
    UNDECODABLE = "undecodable_bitstream"
    TRUNCATED = "truncated"
    CORRUPT_PACKETS = "corrupt_packets"
    TOO_SHORT = "too_short"
    TIMEOUT = "timeout"
    CLIP_VERIFY = "clip_verification_failed"
    INTERNAL = "internal_error"


class ProbeError(Exception):
    """A file refused by the probe, with the reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    """What the probe learned about one input file, or why it failed."""

    path: str
    video_id: str
    size_bytes: int
    container: str = ""
    codec: str = ""
    width: int = 0
    height: int = 0
    # Clockwise degrees a player rotates the picture by (display matrix).
    rotation: int = 0
    nominal_fps: float = 0.0
    avg_fps: float = 0.0
    is_vfr: bool = False
    duration_s: float = 0.0
    num_frames: int = 0
    has_audio: bool = False
    # False when the numbers above are estimates from the header and a sample of frames.
    measured: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        """Did the probe succeed?"""
        return not self.error

    def failed(self, reason: Reason, detail: str) -> Probe:
        """This probe marked failed with the reason."""
        return replace(self, error=f"{reason}: {detail}")

    def as_row(self) -> dict[str, object]:
        """The probe as a row of the videos table."""
        return asdict(self)

    def refine(
        self, frame_pts: Sequence[int], time_base: Fraction, end_pts: int | None, tolerance: float
    ) -> Probe:
        """Frame count, duration, average rate and VFR measured from every decoded timestamp."""
        count = len(frame_pts)
        if count == 0:
            return replace(self, num_frames=0, measured=True)
        deltas = [b - a for a, b in pairwise(frame_pts)]
        last_duration = statistics.median(deltas) if deltas else 0
        stop = end_pts if end_pts is not None and end_pts > frame_pts[-1] else frame_pts[-1] + last_duration
        duration = float((stop - frame_pts[0]) * time_base)
        avg = count / duration if duration > 0 else self.nominal_fps
        return replace(
            self,
            num_frames=count,
            duration_s=duration,
            avg_fps=avg,
            is_vfr=is_variable_rate(deltas, tolerance),
            measured=True,
        )


def is_variable_rate(pts_deltas: Sequence[int], tolerance: float) -> bool:
    """True when frame durations spread more than `tolerance` around their median.

    Rounding of a timestamp grid (e.g. 33/34 ms at 29.97 fps in a 1/1000 time base) stays below
    a few percent; a dropped or repeated-frame pattern (1001/2002) does not.
    """
    if len(pts_deltas) < 2:
        return False
    median = statistics.median(pts_deltas)
    if median <= 0:
        return True
    spread = (max(pts_deltas) - min(pts_deltas)) / median
    return spread > tolerance + 1.0 / median


def content_id(path: Path, chunk_bytes: int) -> tuple[str, int]:
    """(blake2b-128 hex digest of the file's bytes, size), read in chunks (never whole in memory)."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def path_id(path: Path) -> str:
    """Id of an input whose bytes cannot be read: stable per path, never equal to a content hash."""
    return "path-" + hashlib.blake2b(os.fsencode(str(path)), digest_size=16).hexdigest()


def probe_file(
    path: str | Path,
    cfg: ProbeConfig,
    deadline: Deadline | None = None,
    identity: tuple[str, int] | None = None,
    *,
    decode_sample: bool = True,
) -> Probe:
    """Read the header and decode a sample of frames. Never raises for a bad input file.

    `identity` = (video_id, size) when the caller already hashed the file (saves a second read).
    `decode_sample=False` reads the header only: the split's one decode pass measures the rest.
    """
    path = Path(path)
    deadline = deadline or Deadline(None)
    try:
        video_id, size = _identify(path, cfg, identity)
    except ProbeError as err:
        return Probe(
            path=str(path), video_id=path_id(path), size_bytes=0, error=f"{err.reason}: {err.detail}"
        )
    probe = Probe(path=str(path), video_id=video_id, size_bytes=size)
    if size == 0:
        return probe.failed(Reason.EMPTY_FILE, "the file has zero bytes")
    try:
        return _probe_media(path, probe, cfg, deadline, decode_sample)
    except ProbeError as err:
        return probe.failed(err.reason, err.detail)
    except FileTimeout as err:
        return probe.failed(Reason.TIMEOUT, str(err))


def _identify(path: Path, cfg: ProbeConfig, identity: tuple[str, int] | None) -> tuple[str, int]:
    if not os.path.lexists(path):
        raise ProbeError(Reason.FILE_MISSING, "no such file")
    if not path.exists():
        raise ProbeError(Reason.FILE_MISSING, f"broken symbolic link to {os.readlink(path)!r}")
    if not path.is_file():
        raise ProbeError(Reason.NOT_A_FILE, "not a regular file")
    if identity is not None:
        return identity
    try:
        return content_id(path, cfg.hash_chunk_bytes)
    except PermissionError as err:
        raise ProbeError(Reason.UNREADABLE, f"permission denied ({err.strerror})") from None
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise ProbeError(Reason.FILE_MISSING, "file disappeared while reading") from None
        raise ProbeError(Reason.UNREADABLE, f"{err.strerror or err}") from None


def _probe_media(  # noqa: PLR0912 — one check per container field the probe refuses, in order
    path: Path, probe: Probe, cfg: ProbeConfig, deadline: Deadline, decode_sample: bool
) -> Probe:
    try:
        container = open_input(path)
    except av.error.InvalidDataError as err:
        kind = _container_signature(path)
        if kind:
            raise ProbeError(
                Reason.TRUNCATED, f"starts like {kind} but the container cannot be read ({err.strerror})"
            ) from None
        raise ProbeError(Reason.NOT_MEDIA, f"no known container format ({err.strerror})") from None
    except av.error.FFmpegError as err:
        raise ProbeError(Reason.NOT_MEDIA, f"cannot open the container: {err}") from None
    with container:
        if not container.streams.video:
            kinds = sorted({str(s.type) for s in container.streams})
            raise ProbeError(Reason.NO_VIDEO_STREAM, f"streams present: {', '.join(kinds) or 'none'}")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        probe = replace(
            probe,
            container=container.format.name,
            codec=ctx.name or "",
            width=width,
            height=height,
            nominal_fps=float(nominal_rate(stream) or 0.0),
            avg_fps=float(stream.average_rate or 0.0),
            has_audio=bool(container.streams.audio),
            num_frames=int(stream.frames or 0),
            duration_s=_header_duration(container, stream),
        )
        if width <= 0 or height <= 0:
            raise ProbeError(Reason.INVALID_FRAME_SIZE, f"header gives {width}x{height}")
        if width * height > cfg.max_pixels:
            raise ProbeError(
                Reason.INVALID_FRAME_SIZE,
                f"header claims {width}x{height}, over the limit of {cfg.max_pixels} pixels",
            )
        if ctx.name not in av.codecs_available:
            raise ProbeError(Reason.UNSUPPORTED_CODEC, f"no decoder for codec '{ctx.name}'")
        if not decode_sample:
            return probe
        stats = DecodeStats()
        pts: list[int] = []
        rotation = 0
        for item in iter_frames(container, stats, deadline, threads=1, where="probe"):
            assert not isinstance(item, av.Packet)
            if not pts:
                rotation = display_rotation(item.frame)
            pts.append(item.pts)
            if len(pts) >= cfg.sample_frames:
                break
        if not pts:
            raise ProbeError(*no_frames_reason(stats))
        probe = replace(probe, rotation=rotation)
        deltas = [b - a for a, b in pairwise(pts)]
        if probe.num_frames <= 0 and probe.duration_s > 0 and deltas:
            # No frame count in the header: estimate it from the sample; the split pass measures it.
            step = float(statistics.median(deltas) * (stream.time_base or Fraction(1, 90000)))
            probe = replace(probe, num_frames=round(probe.duration_s / step) if step > 0 else len(pts))
        return replace(probe, is_vfr=is_variable_rate(deltas, cfg.vfr_tolerance))


def no_frames_reason(stats: DecodeStats) -> tuple[Reason, str]:
    """The reason a file decoded no frames, from the decode's counts."""
    if stats.bad_packets:
        return Reason.UNDECODABLE, (
            f"0 frames decoded, {stats.bad_packets} of {stats.packets} packets failed "
            f"(first: {stats.first_bad_packet_error})"
        )
    if stats.demux_error:
        return Reason.TRUNCATED, f"container ended before any frame: {stats.demux_error}"
    if stats.packets == 0:
        return Reason.TRUNCATED, "the video stream has no packets"
    return Reason.UNDECODABLE, f"{stats.packets} packets gave no frame"


def _header_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _container_signature(path: Path) -> str:
    """The container a file's first bytes announce, if any (to tell damaged media from non-media)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return "an MP4/MOV file (its index box is missing or cut)"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "a Matroska/WebM file"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "an AVI file"
    return ""


def reason_of(error: str) -> str:
    """The reason code of an `error` value ("truncated: ..." -> "truncated")."""
    return error.split(":", 1)[0] if error else ""

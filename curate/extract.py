"""Exact clip extraction, the extraction pass of the two-pass split.

`extract_clips` is that pass (stride mode, stream copy; curate.single_pass cuts on the detection
pass otherwise): it decodes the file once more, streams the frames of each planned clip
(curate.clip_plan) into its own H.264 encoder (size, frame rate and display rotation from the
config) and closes the clip as soon as its last frame has passed, so memory holds one clip's
encoded bytes, never the video. Each clip's container is then read back (packets, no decoding:
`curate.clip_output.verify_clip` says what that proves) and its frame count and duration compared
with the plan; a mismatch is a failure with the numbers in its message, never a silently wrong clip.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from curate.borders import file_content_box
from curate.clip_output import (
    Clip,
    ClipFailure,
    OutputGeometry,
    encoder_frame,
    output_geometry,
    thumbnail_jpeg,
    verify_clip,
)
from curate.clip_plan import ClipPlan
from curate.config import BorderConfig
from curate.probe import Reason
from curate.scenes import Scan
from curate.split_config import ExtractConfig
from media import PacketWriter, VideoWriter, jpeg
from media.decode import (
    Deadline,
    DecodedFrame,
    DecodeStats,
    iter_frames,
    open_input,
)

# Seconds of slack when comparing times that went through float conversions.
_EPS = 1e-6


class _ClipWriter:
    """One clip being encoded: frames in, MP4 bytes out."""

    def __init__(
        self,
        plan: ClipPlan,
        geometry: OutputGeometry,
        cfg: ExtractConfig,
        time_base: Fraction,
        start_pts: int,
    ) -> None:
        self.plan = plan
        self.geometry = geometry
        self.cfg = cfg
        self.frames_in = 0
        self.frames_out = 0
        self.pts_mismatch = ""
        self.thumbnail: bytes = b""
        # One single-threaded converter for the whole clip: frame.to_ndarray(width=..., format=...)
        # built a swscale context with a thread per core on every frame (two thread starts per frame
        # here), which borrowed the idle core of a 1-worker run and fought the other worker's.
        self._scaler = VideoReformatter()
        self._src_time_base = time_base
        self._start_pts = start_pts
        if cfg.fps > 0:
            rate = Fraction(cfg.fps).limit_denominator(1001)
            out_time_base = 1 / rate
        else:
            rate = Fraction(max(1, round(plan.num_frames / max(plan.duration_s, _EPS)))).limit_denominator(
                1001
            )
            out_time_base = time_base
        self._rate = rate
        # One thread per encoder: the per-file task owns one CPU and decoding already uses threads.
        self._writer = VideoWriter(
            geometry.width,
            geometry.height,
            rate,
            crf=cfg.crf,
            preset=cfg.preset,
            time_base=out_time_base,
            threads=1,
        )
        self._thumb_at = plan.num_frames // 2

    def add(self, item: DecodedFrame, next_seconds: float) -> None:
        image = encoder_frame(item.frame, self.geometry, self._scaler)
        if self.frames_in == self._thumb_at:
            self.thumbnail = thumbnail_jpeg(image, self.cfg, VideoReformatter())
        if self.cfg.fps > 0:
            # Constant output rate: emit this frame for every output tick inside its display time.
            rel_end = next_seconds - self.plan.start_s
            while self.frames_out / float(self._rate) < rel_end - _EPS:
                self._encode(image, self.frames_out, 1)
        else:
            duration = (
                max(1, round((next_seconds - item.seconds) / self._src_time_base))
                if next_seconds > item.seconds
                else 1
            )
            self._encode(image, item.pts - self._start_pts, duration)
        self.frames_in += 1

    def _encode(self, image: av.VideoFrame, pts: int, duration: int) -> None:
        self._writer.add(image, pts, duration)
        self.frames_out += 1

    def finish(self) -> bytes:
        return self._writer.finish()

    def abort(self) -> None:
        self._writer.abort()

    def expected_frames(self) -> int:
        if self.cfg.fps > 0:
            return max(1, math.ceil(self.plan.duration_s * float(self._rate) - _EPS))
        return self.plan.num_frames


class _CopyWriter:
    """One clip cut without re-encoding: the source's packets from a keyframe to the next cut keyframe."""

    def __init__(
        self,
        plan: ClipPlan,
        source: av.video.stream.VideoStream,
        start_pts: int,
        end_pts: int | None,
        geometry: OutputGeometry,
        cfg: ExtractConfig,
    ) -> None:
        self.plan = plan
        self.geometry = geometry
        self.cfg = cfg
        self.start_pts = start_pts
        self.end_pts = end_pts
        self.frames_in = 0
        self.pts_mismatch = ""
        self.thumbnail: bytes = b""
        self._out = PacketWriter(source)
        self._rate = Fraction(source.average_rate or source.guessed_rate or 25)

    @property
    def frames_out(self) -> int:
        return self.frames_in

    def add_packet(self, packet: av.Packet[VideoStream]) -> None:
        assert packet.pts is not None  # only packets accepted by the pts range get here
        packet.pts -= self.start_pts
        if packet.dts is not None:
            packet.dts -= self.start_pts
        self._out.add(packet)

    def add(self, item: DecodedFrame, next_seconds: float) -> None:
        if self.frames_in == self.plan.num_frames // 2:
            g = self.geometry
            image = item.frame.reformat(
                width=g.scale_width, height=g.scale_height, format="rgb24", threads=1
            ).to_ndarray()
            self.thumbnail = jpeg(image, self.cfg.thumbnail_quality, self.cfg.thumbnail_width)
        self.frames_in += 1

    def finish(self) -> bytes:
        return self._out.finish()

    def abort(self) -> None:
        self._out.abort()

    def expected_frames(self) -> int:
        return self.plan.num_frames


def _copyable(
    plans: Sequence[ClipPlan],
    scan: Scan,
    geometry: OutputGeometry,
    width: int,
    height: int,
    codec: str,
    container_name: str,
    cfg: ExtractConfig,
) -> dict[int, tuple[int, int | None]]:
    """{plan index: (start pts, end pts or None)} of the clips that can be cut without re-encoding."""
    if not cfg.allow_stream_copy or cfg.fps > 0 or codec != "h264" or "mp4" not in container_name:
        return {}
    if (geometry.width, geometry.height, geometry.rotation) != (width, height, 0):
        return {}
    keyframes = set(scan.stats.keyframe_pts)
    out: dict[int, tuple[int, int | None]] = {}
    for plan in plans:
        start = scan.frame_pts[plan.start_frame]
        end = scan.frame_pts[plan.end_frame] if plan.end_frame < scan.num_frames else None
        if start in keyframes and (end is None or end in keyframes):
            out[plan.index] = (start, end)
    return out


def extract_clips(  # noqa: PLR0912 — one decode loop keeps each clip's copy/re-encode state in step
    path: str | Path,
    plans: Sequence[ClipPlan],
    scan: Scan,
    width: int,
    height: int,
    rotation: int,
    cfg: ExtractConfig,
    deadline: Deadline | None = None,
    threads: int = 0,
) -> Iterator[Clip | ClipFailure]:
    """Decode the file once and yield each planned clip, encoded and verified, as soon as it is done."""
    deadline = deadline or Deadline(None)
    if not plans:
        return
    box = file_content_box(path, BorderConfig(), threads=threads) if cfg.crop_borders else None
    geometry = output_geometry(width, height, rotation, cfg, box)
    stats = DecodeStats()
    pending = list(plans)
    writer: _ClipWriter | _CopyWriter | None = None
    with open_input(path) as container:
        source = container.streams.video[0]
        copyable = _copyable(
            plans, scan, geometry, width, height, source.codec_context.name, container.format.name, cfg
        )
        # Packets of a stream-copied clip come before its frames (decoder delay): their writer starts early.
        copying: dict[int, _CopyWriter] = {}
        by_index = {plan.index: plan for plan in plans}
        try:
            for item in iter_frames(
                container,
                stats,
                deadline,
                threads=threads,
                where="clip extraction",
                with_packets=bool(copyable),
            ):
                if isinstance(item, av.Packet):
                    for index, (start, end) in copyable.items():
                        if item.pts is not None and start <= item.pts and (end is None or item.pts < end):
                            if index not in copying:
                                copying[index] = _CopyWriter(
                                    by_index[index], source, start, end, geometry, cfg
                                )
                            copying[index].add_packet(item)
                    continue
                while writer is not None and item.index >= writer.plan.end_frame:
                    copying.pop(writer.plan.index, None)
                    copyable.pop(writer.plan.index, None)
                    yield _close(writer, scan)
                    writer = None
                if writer is None:
                    while pending and pending[0].end_frame <= item.index:
                        yield ClipFailure(
                            pending.pop(0), Reason.CLIP_VERIFY, "its frames were not decoded again"
                        )
                    if not pending:
                        break
                    if item.index < pending[0].start_frame:
                        continue
                    plan = pending.pop(0)
                    writer = copying.get(plan.index) or _ClipWriter(
                        plan, geometry, cfg, scan.time_base, item.pts
                    )
                if (
                    item.index < scan.num_frames
                    and item.pts != scan.frame_pts[item.index]
                    and not writer.pts_mismatch
                ):
                    writer.pts_mismatch = (
                        f"frame {item.index} has pts {item.pts} on extraction but {scan.frame_pts[item.index]} "
                        "on detection"
                    )
                writer.add(item, scan.seconds_of(item.index + 1))
        except BaseException:
            for open_writer in [writer, *copying.values()]:
                if open_writer is not None:
                    open_writer.abort()
            raise
        for leftover in copying.values():
            if leftover is not writer:
                leftover.abort()
    if writer is not None:
        yield _close(writer, scan)
    for plan in pending:
        detail = "the decoder stopped before this clip"
        if stats.demux_error:
            detail += f" ({stats.demux_error})"
        yield ClipFailure(plan, Reason.TRUNCATED, detail)


def _close(writer: _ClipWriter | _CopyWriter, scan: Scan) -> Clip | ClipFailure:
    plan = writer.plan
    data = writer.finish()
    if writer.pts_mismatch:
        return ClipFailure(plan, Reason.CLIP_VERIFY, writer.pts_mismatch)
    if writer.frames_in != plan.num_frames:
        return ClipFailure(
            plan, Reason.CLIP_VERIFY, f"{writer.frames_in} source frames decoded, plan has {plan.num_frames}"
        )
    check = verify_clip(data, writer.expected_frames(), plan.duration_s, _frame_tolerance(scan, plan))
    if check:
        return ClipFailure(plan, Reason.CLIP_VERIFY, check)
    g = writer.geometry
    fps = writer.frames_out / plan.duration_s if plan.duration_s > 0 else float(writer._rate)
    copied = isinstance(writer, _CopyWriter)
    return Clip(
        plan, data, writer.thumbnail, writer.frames_out, fps, g.width, g.height, "h264", copied, g.crop
    )


def _frame_tolerance(scan: Scan, plan: ClipPlan) -> float:
    """One (longest) source frame duration inside the clip: how far the container's end may differ."""
    longest = max(
        (scan.seconds_of(i + 1) - scan.seconds_of(i) for i in range(plan.start_frame, plan.end_frame)),
        default=0.0,
    )
    return longest + 1e-3

"""One frame from each of n equal slots of a whole file, with as little decoding as seeks allow.

A whole-file property measured on a few frames (the picture's box inside constant borders) needs
frames spread over the file, not particular ones, so each slot takes the frame that is cheapest
to reach: its last keyframe when it holds one (a seek to the slot's end lands there and one
frame is decoded), else its first frame, decoded on from the keyframe before it, with the
non-reference frames before it skipped (nothing refers to them). When the container's index shows
that no keyframe lies between the last frame taken and the next slot, decoding goes on without
a seek: a short file of one group of pictures is decoded at most once, where a seek per slot
decoded a 4K 60 fps phone clip four times over from its first frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import av.error

from media.decode import Source, configure_threads, log_decoding, open_input

_EPS = 1e-6


def frames_across(source: Source, count: int, *, threads: int = 1) -> list[av.VideoFrame]:
    """One decoded frame from each of `count` equal slots of the first video stream's duration
    (frames as decoded: before rotation, the decoder's format), with `threads` decoder threads
    (`configure_threads`). A slot whose frame cannot be decoded is left out, so a broken file
    gives fewer frames or none, never an error."""
    picked: list[av.VideoFrame] = []
    try:
        container = open_input(source)
    except av.error.FFmpegError:
        return picked
    with container:
        if not container.streams.video:
            return picked
        stream = container.streams.video[0]
        configure_threads(stream, threads)
        time_base = stream.time_base
        if not time_base:  # no timestamps to seek by
            return picked
        duration = float(stream.duration * time_base) if stream.duration else 0.0
        if duration <= 0 and container.duration:
            duration = container.duration / av.time_base
        start = float(stream.start_time * time_base) if stream.start_time else 0.0
        slot = duration / count
        decoder: _ForwardDecoder | None = None
        for i in range(count):
            lo = start + i * slot
            try:
                if decoder is None or not decoder.passed_keyframe_before(lo + slot):
                    container.seek(max(0, round((lo + slot - 1e-3) / time_base)), stream=stream)
                    decoder = _ForwardDecoder(container, stream)
                picked.append(decoder.first_at(lo))
            except (av.error.FFmpegError, StopIteration):
                decoder = None
    return picked


class _ForwardDecoder:
    """Frames from the container's position on (one decoding pass), skipping the non-reference
    frames timed before the frame looked for."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> None:
        self._container, self._stream = container, stream
        self._target = 0.0
        self._last_dts: int | None = None  # decode timestamp of the last frame taken
        self._frames = self._decode()
        log_decoding(container, passes=1)

    def first_at(self, target: float) -> av.VideoFrame:
        """The first frame timed at or after `target` (StopIteration at the end of the stream)."""
        self._target = target
        frame = next(f for f in self._frames if f.time is None or f.time + _EPS >= target)
        self._last_dts = frame.dts
        return frame

    def passed_keyframe_before(self, end: float) -> bool:
        """Has this pass decoded the keyframe a seek to `end` would land on, so that going on
        decodes less than seeking? False when the container has no index to tell."""
        entries, time_base = self._stream.index_entries, self._stream.time_base
        if self._last_dts is None or not len(entries) or not time_base:
            return False
        key = entries.search_timestamp(round(end / time_base), backward=True)
        # Index timestamps are decode times, like the frame's dts.
        return key >= 0 and entries[key].timestamp <= self._last_dts

    def _decode(self) -> Iterator[av.VideoFrame]:
        context = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            early = (
                packet.pts is not None
                and packet.time_base is not None
                and packet.pts * packet.time_base + _EPS < self._target
            )
            context.skip_frame = "NONREF" if early else "DEFAULT"
            frames = packet.decode()
            log_decoding(self._container, frames=len(frames))
            yield from frames

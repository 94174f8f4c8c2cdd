"""A clip encoded as its frames pass, before its end is known (the one-pass split's writer).

It feeds the encoder exactly as `curate.extract._ClipWriter` does, so a clip's bytes are the same;
what it cannot know at the start it settles at `close`: the plan (and so the frame count to
verify) and the thumbnail, the middle frame, kept from every encoder frame that can still be the
middle (a reference, not a copy: the encoder's frames are made once for it).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from curate.clip_output import (
    Clip,
    ClipFailure,
    OutputGeometry,
    thumbnail_frame,
    thumbnail_jpeg,
    verify_clip,
)
from curate.clip_plan import ClipPlan
from curate.probe import Reason
from curate.split_config import ExtractConfig
from media import VideoWriter
from media.decode import DecodedFrame

_EPS = 1e-6
# Bytes of a clip's thumbnail candidates held at the encoder's size (see StreamWriter).
_HELD_BYTES = 32 << 20


class StreamWriter:
    """One clip encoded as its frames pass, before its end is known (cf. curate.extract._ClipWriter)."""

    def __init__(
        self,
        geometry: OutputGeometry,
        cfg: ExtractConfig,
        rate: Fraction,
        time_base: Fraction,
        start_s: float,
        start_pts: int,
        src_time_base: Fraction,
    ) -> None:
        self.cfg, self.geometry, self.rate = cfg, geometry, rate
        self.start_s, self.start_pts, self.src_time_base = start_s, start_pts, src_time_base
        self.frames_in = self.frames_out = 0
        # The thumbnail is the middle frame: every frame that can still be it, the later half of the
        # clip's encoder frames so far, held as they are (no copy, no work) up to _HELD_BYTES; beyond,
        # the oldest are shrunk to thumbnail size (`thumbnail_frame`), so a long clip kept at a large
        # size does not hold half its frames (a 10 s 4K clip at 60 fps: 3.7 GB).
        # The candidates are the offsets [_first_candidate, frames_in); the newest _max_full of them
        # are at the encoder's size.
        self._candidates: dict[int, av.VideoFrame] = {}
        self._first_candidate = 0
        self._max_full = max(1, _HELD_BYTES // (geometry.width * geometry.height * 3 // 2))
        self._thumb_scaler = VideoReformatter()
        self._mp4 = VideoWriter(
            geometry.width,
            geometry.height,
            rate,
            crf=cfg.crf,
            preset=cfg.preset,
            time_base=time_base,
            threads=1,
        )

    def add(self, item: DecodedFrame, next_seconds: float) -> None:
        """Encode one frame into the clip and keep it as a thumbnail candidate; `item` holds the
        encoder frame (`encoder_frame`) of the decoded frame it stands for."""
        image = item.frame
        self._candidates[self.frames_in] = image
        while self._first_candidate < (self.frames_in + 1) // 2:  # can no longer be the middle
            del self._candidates[self._first_candidate]
            self._first_candidate += 1
        leaving = self.frames_in - self._max_full  # the candidate that just left the full-size ones
        if leaving >= self._first_candidate:
            self._candidates[leaving] = thumbnail_frame(
                self._candidates[leaving], self.cfg.thumbnail_width, self._thumb_scaler
            )
        if self.cfg.fps > 0:
            rel_end = next_seconds - self.start_s
            while self.frames_out / float(self.rate) < rel_end - _EPS:
                self._mp4.add(image, self.frames_out, 1)
                self.frames_out += 1
        else:
            duration = (
                max(1, round((next_seconds - item.seconds) / self.src_time_base))
                if next_seconds > item.seconds
                else 1
            )
            self._mp4.add(image, item.pts - self.start_pts, duration)
            self.frames_out += 1
        self.frames_in += 1

    def close(self, plan: ClipPlan, tolerance: float) -> Clip | ClipFailure:
        """Finish the clip: its MP4, thumbnail and checks against the plan, or the failure."""
        data = self._mp4.finish()
        thumb = thumbnail_jpeg(self._candidates[plan.num_frames // 2], self.cfg, self._thumb_scaler)
        expected = (
            max(1, int(np.ceil(plan.duration_s * float(self.rate) - _EPS)))
            if self.cfg.fps > 0
            else plan.num_frames
        )
        if self.frames_in != plan.num_frames:
            return ClipFailure(
                plan, Reason.CLIP_VERIFY, f"{self.frames_in} frames encoded, plan has {plan.num_frames}"
            )
        check = verify_clip(data, expected, plan.duration_s, tolerance)
        if check:
            return ClipFailure(plan, Reason.CLIP_VERIFY, check)
        g = self.geometry
        fps = self.frames_out / plan.duration_s if plan.duration_s > 0 else float(self.rate)
        return Clip(plan, data, thumb, self.frames_out, fps, g.width, g.height, "h264", False, g.crop)

    def abort(self) -> None:
        """Drop the clip being written."""
        self._mp4.abort()

"""The media layer: one sampling rule, clip frames at a size/crop/format, MP4 out, previews, counting."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from caption.frames import sample_frames
from curate.config import FrameSamplingConfig
from curate.frames import decode_clip
from media import (
    MediaError,
    Mp4Writer,
    Sampling,
    clip_preview,
    count_decodes,
    encode_mp4,
    fit_pixels,
    fit_width,
    read_clip,
    sample_times,
)

FPS = 4


def numbered_frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Frame i is a flat grey of level (i * 7) % 200 + 20 with a bright bar at x = i % width."""
    frames = []
    for i in range(count):
        image = np.full((height, width, 3), (i * 7) % 200 + 20, np.uint8)
        image[:, i % width] = 255
        frames.append(image)
    return frames


@pytest.fixture(scope="module")
def minute_clip() -> bytes:
    """60 s at 4 fps (240 frames): small enough to encode in a second."""
    return encode_mp4(numbered_frames(60 * FPS), FPS, preset="ultrafast")


def test_count_mode_takes_segment_centres():
    assert sample_times(2.0, Sampling(mode="count", count=4)).tolist() == [0.25, 0.75, 1.25, 1.75]


def test_rate_mode_below_the_cap_keeps_the_rate():
    times = sample_times(2.0, Sampling(mode="rate", rate_fps=2.0, max_frames=32))
    assert times.tolist() == [0.25, 0.75, 1.25, 1.75]


def test_capped_rate_mode_spreads_its_frames_over_the_whole_60s_clip(minute_clip):
    sampling = Sampling(mode="rate", rate_fps=1.0, max_frames=16)
    times = sample_times(60.0, sampling)
    assert len(times) == 16 and times[0] < 2.0 and times[-1] > 58.0
    assert np.allclose(np.diff(times), 60.0 / 16)
    # Every stage samples the same moments of the same clip: score, caption, media itself.
    clip = read_clip(minute_clip, sampling)
    scored = decode_clip(minute_clip, FrameSamplingConfig(mode="rate", rate_fps=1.0, max_frames=16))
    captioned = sample_frames(minute_clip, fps=1.0, max_frames=16, max_pixels=10**6)
    assert clip.times_s[0] <= 2.0 and clip.times_s[-1] > 58.0
    assert scored.times_s.tolist() == clip.times_s.tolist() == captioned.timestamps_s
    assert np.array_equal(scored.frames, clip.frames)
    # The first frame at or after each target: at 4 fps, within a quarter second after it.
    assert np.all((clip.times_s - times >= -1e-6) & (clip.times_s - times < 0.25 + 1e-6))


def test_decoding_stops_at_the_last_frame_needed(minute_clip):
    early = read_clip(minute_clip, Sampling(mode="count", count=1), threads=1)
    assert len(early.frames) == 1 and early.frames_decoded < 240
    middle = read_clip(minute_clip, middle=9)
    assert len(middle.frames) == 9 and middle.frames_decoded == (240 - 9) // 2 + 9
    with pytest.raises(MediaError, match=r"240 frames, 241 are needed"):
        read_clip(minute_clip, middle=241)


def test_frames_at_a_size_a_crop_and_in_each_format(minute_clip):
    span = range(10, 14)
    rgb = read_clip(minute_clip, indices=span)
    assert rgb.frames.shape == (4, 48, 64, 3) and rgb.source_size == (64, 48)
    # Frame 10's bright bar is at x = 10: the frames are the ones asked for, in order.
    assert int(np.argmax(rgb.frames[0, 24, :, 0])) == 10
    assert read_clip(minute_clip, indices=span, size=fit_width(32)).frames.shape == (4, 24, 32, 3)
    assert read_clip(minute_clip, indices=span, size=fit_pixels(16 * 12)).frames.shape == (4, 12, 16, 3)
    assert read_clip(minute_clip, indices=span, cover=(20, 20)).frames.shape == (4, 20, 20, 3)
    assert read_clip(minute_clip, indices=span, fmt="gray").frames.shape == (4, 48, 64)
    planes = read_clip(minute_clip, indices=span, fmt="yuv420p").frames
    assert planes.shape == (4, 72, 64)  # I420: Y rows then the U and V planes


def test_per_target_view_repeats_frames_shared_by_targets():
    short = encode_mp4(numbered_frames(3), FPS)
    clip = read_clip(short, Sampling(mode="count", count=8))
    frames, times = clip.per_target()
    assert len(clip.frames) <= 3 and len(frames) == 8 and list(times) == sorted(times)


def test_mp4_round_trip_and_identical_bytes_for_identical_frames():
    frames = numbered_frames(12)
    first, second = encode_mp4(frames, FPS, crf=10), encode_mp4(frames, FPS, crf=10)
    assert first == second
    back = read_clip(first).frames
    assert back.shape == (12, 48, 64, 3)
    assert np.abs(back.astype(int) - np.stack(frames).astype(int)).mean() < 3
    with pytest.raises(ValueError, match="even sizes"):
        Mp4Writer(63, 48, FPS)


def test_preview_and_clear_errors(minute_clip):
    preview = Image.open(io.BytesIO(clip_preview(minute_clip, frames=5, width=32)))
    assert preview.format == "WEBP" and preview.n_frames == 5 and preview.size == (32, 24)
    for data, message in ((b"", "empty clip bytes"), (b"not a video" * 50, "not a readable video")):
        with pytest.raises(MediaError, match=message):
            read_clip(data)


def test_count_decodes_counts_opens_and_frames_per_input(minute_clip):
    with count_decodes() as log:
        read_clip(minute_clip, indices=range(5))
        read_clip(minute_clip, indices=range(3))
    (label,) = log.opens
    assert label.startswith("bytes:") and log.opens[label] == 2 and log.frames[label] == 8

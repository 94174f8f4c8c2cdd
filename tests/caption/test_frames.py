from __future__ import annotations

import io

import numpy as np
import pytest
from caption_clips import pan_clip
from PIL import Image

from caption.frames import FrameSamplingError, encode_jpeg, sample_frames


@pytest.fixture(scope="module")
def clip() -> bytes:
    import skimage.data

    return pan_clip(skimage.data.astronaut(), num_frames=24, size=(160, 96), fps=12)


def test_sample_at_most_max_pixels_keeping_the_aspect(clip):
    sampled = sample_frames(clip, num_frames=2, max_pixels=10**6)
    assert sampled.frames[0].shape == (96, 160, 3)  # never upscaled
    small = sample_frames(clip, num_frames=2, max_pixels=40 * 40).frames[0]
    h, w = small.shape[:2]
    assert h * w <= 40 * 40 and h % 2 == 0 and w % 2 == 0 and abs(w / h - 160 / 96) < 0.1


def test_sample_by_count_spreads_frames_over_the_clip(clip):
    sampled = sample_frames(clip, num_frames=8, max_pixels=64 * 64)
    assert len(sampled.frames) == 8
    assert sampled.source_size == (160, 96)
    h, w, c = sampled.frames[0].shape
    assert c == 3 and w * h <= 64 * 64 and w > h
    stamps = sampled.timestamps_s
    assert stamps == sorted(stamps) and len(set(stamps)) == 8
    assert stamps[0] < 0.25 and stamps[-1] > 1.6  # covers the 2 s clip
    # A pan: the first and last frames show different parts of the photo.
    assert np.abs(sampled.frames[0].astype(int) - sampled.frames[-1].astype(int)).mean() > 10


def test_sample_by_rate(clip):
    sampled = sample_frames(clip, fps=2.0, max_frames=32, max_pixels=10**6)
    assert len(sampled.frames) == 4
    assert sampled.frames[0].shape == (96, 160, 3)
    assert np.allclose(np.diff(sampled.timestamps_s), 0.5, atol=0.09)


def test_more_frames_than_the_clip_has_repeats_frames(clip):
    sampled = sample_frames(clip, num_frames=40, max_frames=64)
    assert len(sampled.frames) == 40
    # Each target takes the first frame at or after it: the first target (0.025 s) lies after frame 0.
    assert len(set(sampled.timestamps_s)) == 23


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty clip bytes"), (b"definitely not a video" * 20, "not a readable video container")],
)
def test_bad_bytes_raise_a_specific_error(data, message):
    with pytest.raises(FrameSamplingError, match=message):
        sample_frames(data)


def test_truncated_clip_still_gives_frames_or_a_clear_error(clip):
    try:
        sampled = sample_frames(clip[: len(clip) // 2], num_frames=4)
    except FrameSamplingError as err:
        assert str(err)
    else:
        assert len(sampled.frames) == 4


def test_encode_jpeg_roundtrip(clip):
    frame = sample_frames(clip, num_frames=1).frames[0]
    decoded = np.asarray(Image.open(io.BytesIO(encode_jpeg(frame, quality=95))))
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 6

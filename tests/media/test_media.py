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
    Sampling,
    VideoWriter,
    clip_preview,
    count_decodes,
    decode_check,
    encode_mp4,
    fit_pixels,
    fit_short_side,
    fit_width,
    read_clip,
    remux,
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


def test_first_frames_and_short_side_rule(minute_clip):
    first = read_clip(minute_clip, first=5, size=fit_short_side(24))
    assert first.frames.shape == (5, 24, 32, 3) and first.frames_decoded == 5
    assert int(np.argmax(first.frames[4, 12, :, 0])) == 2  # frame 4's bar (x = 4), halved
    # Fewer frames than asked for is not an error in this mode (it is for `indices`).
    short = encode_mp4(numbered_frames(3), FPS)
    assert len(read_clip(short, first=16).frames) == 3
    # Never upscaled; odd sizes are kept (this rule is for analysis, not for encoding).
    assert fit_short_side(100)(64, 48) == (64, 48) and fit_short_side(15)(64, 48) == (20, 15)


def test_decode_check_counts_frames_and_names_damage(minute_clip, tmp_path):
    whole = decode_check(minute_clip)
    assert whole.frames == 240 and not (whole.bad_packets or whole.demux_error)
    assert decode_check(minute_clip, limit=1).frames == 1
    with count_decodes() as log:
        decode_check(minute_clip, limit=7)
    assert sum(log.frames.values()) == 7
    # moov first, then cut in the middle: the index promises frames the file no longer holds.
    faststart = tmp_path / "faststart.mp4"  # the muxer moves the index by reading the file back
    remux(minute_clip, faststart, container_options={"movflags": "+faststart"})
    data = faststart.read_bytes()
    cut = decode_check(data[: len(data) // 2])
    assert 0 < cut.frames < 240 and (cut.demux_error or cut.bad_packets)
    for data, message in ((b"", "empty clip bytes"), (b"not a video" * 50, "not a readable video")):
        with pytest.raises(MediaError, match=message):
            decode_check(data)


def test_writer_takes_other_codecs_and_containers(tmp_path):
    frames = numbered_frames(6)
    webm = tmp_path / "clip.webm"
    writer = VideoWriter(
        64, 48, FPS, path=webm, codec="libvpx-vp9", container="webm", codec_options={"crf": "30", "b": "0"}
    )
    for frame in frames:
        writer.add(frame)
    assert writer.finish() == b""
    assert webm.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: Matroska/WebM
    back = read_clip(webm).frames
    assert back.shape == (6, 48, 64, 3) and np.abs(back.astype(int) - np.stack(frames).astype(int)).mean() < 6
    raw = VideoWriter(64, 48, FPS, codec="rawvideo", container="avi")
    for frame in frames:
        raw.add(frame)
    data = raw.finish()
    assert data[:4] == b"RIFF" and len(read_clip(data).frames) == 6
    with pytest.raises(ValueError, match="not a video encoder"):
        VideoWriter(64, 48, FPS, codec="aac")


def test_remux_copies_packets_loops_and_selects(minute_clip, tmp_path):
    looped = tmp_path / "looped.mp4"
    assert remux(minute_clip, looped, loops=3, comment="copy 1") == 3 * 240
    clip = read_clip(looped, fmt="gray")
    assert len(clip.frames) == 720
    # Back to back: time keeps going at 4 fps across the seams, and the same frames come back.
    assert np.allclose(np.diff(clip.times_s), 1 / FPS)
    assert np.array_equal(clip.frames[:240], clip.frames[240:480])
    assert np.array_equal(clip.frames[:240], read_clip(minute_clip, fmt="gray").frames)
    # `keep` selects packets in decoding order: the first 10 give the first 10 frames.
    head = io.BytesIO()
    assert remux(minute_clip, head, keep=slice(10)) == 10
    assert decode_check(head.getvalue()).frames == 10


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
        VideoWriter(63, 48, FPS)


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

"""Clip rules, exact extraction with verification, and whole-file splitting of good and bad input."""

from __future__ import annotations

import io
import json
from array import array
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from curate.borders import ContentBox
from curate.clip_output import Clip, encoder_frame, output_geometry, verify_clip
from curate.clip_plan import clip_id, plan_clips, stride_plans
from curate.extract import extract_clips
from curate.probe import Reason, probe_file, reason_of
from curate.scenes import Boundary, Scan, scan_file
from curate.split_config import ClipRules, ExtractConfig, SplitConfig
from curate.split_file import VideoSplit
from media import remux
from media.decode import Deadline, DecodedFrame, DecodeStats, iter_frames, open_input

CFG = SplitConfig()


def synthetic_scan(n: int, fps: int = 25, boundaries=()) -> Scan:
    """Timestamps of n frames at `fps` in a 1/fps time base (no video needed for the rules)."""
    scan = Scan(boundaries=list(boundaries), frame_pts=array("q", range(n)), time_base=Fraction(1, fps))
    scan.end_pts = n
    return scan


def spans(plans):
    return [(p.start_frame, p.end_frame) for p in plans]


def test_rules_trim_at_cuts_and_drop_short_shots():
    scan = synthetic_scan(250, boundaries=[Boundary(100, 4.0, "cut"), Boundary(120, 4.8, "cut")])
    rules = ClipRules(min_length_s=1.0, max_length_s=10.0, trim_s=0.2)
    # 0.2 s = 5 frames trimmed at each cut, nothing at the file's start and end; 100-120 is 0.8 s: dropped.
    assert spans(plan_clips(scan, rules)) == [(0, 95), (125, 250)]
    plan = plan_clips(scan, rules)[1]
    assert (plan.start_s, plan.end_s, plan.num_frames) == (5.0, 10.0, 125)


def test_rules_window_long_scenes():
    scan = synthetic_scan(250)  # one 10 s shot
    window = ClipRules(min_length_s=1.0, max_length_s=3.0, trim_s=0.0)
    # The 1 s remainder is kept while it meets min_length_s and dropped when it does not.
    assert spans(plan_clips(scan, window)) == [(0, 75), (75, 150), (150, 225), (225, 250)]
    assert spans(plan_clips(scan, window.model_copy(update={"min_length_s": 1.5}))) == [
        (0, 75),
        (75, 150),
        (150, 225),
    ]
    assert spans(plan_clips(scan, window.model_copy(update={"long_scenes": "first"}))) == [(0, 75)]
    assert plan_clips(scan, window.model_copy(update={"long_scenes": "drop"})) == []


def test_rules_drop_transitions():
    scan = synthetic_scan(250, boundaries=[Boundary(100, 4.0, "gradual")])
    rules = ClipRules(min_length_s=1.0, trim_s=0.0, transition_s=1.0)
    assert spans(plan_clips(scan, rules)) == [(0, 75), (125, 250)]
    assert spans(plan_clips(scan, rules.model_copy(update={"drop_transitions": False}))) == [
        (0, 100),
        (100, 250),
    ]


def test_stride_mode_windows_without_detection():
    scan = synthetic_scan(250)
    plans = stride_plans(scan, ClipRules(min_length_s=1.0, max_length_s=10.0), stride_s=4.0)
    assert spans(plans) == [(0, 100), (100, 200), (200, 250)]


def test_config_rejects_inconsistent_lengths():
    with pytest.raises(ValueError, match="min_length_s"):
        ClipRules(min_length_s=5.0, max_length_s=2.0)


def test_output_geometry_scales_rotates_and_keeps_even_sizes():
    g = output_geometry(1920, 1080, 0, ExtractConfig(short_side=360))
    assert (g.width, g.height) == (640, 360)
    g = output_geometry(568, 320, 90, ExtractConfig(short_side=360))
    assert (g.width, g.height, g.scale_width, g.scale_height) == (320, 568, 568, 320)
    g = output_geometry(161, 121, 0, ExtractConfig(short_side=0))
    assert (g.width, g.height) == (160, 120)
    assert clip_id("abc", 1.5) == "abc_0000001500000"


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("box", [None, ContentBox(37, 21, 240, 130, 320, 180)])
def test_encoder_frames_show_the_cropped_rotated_picture(rotation, box):
    """The 4:2:0 encoder input is the picture of the whole frame scaled in RGB, cut to the box and
    turned (the reference here), up to chroma subsampling: close to it, far from other turns."""
    from av.video.reformatter import VideoReformatter

    from media.decode import rotate

    y, x = np.mgrid[0:180, 0:320]
    rgb = np.stack([x * 255 // 319, y * 255 // 179, (x // 40 + y // 30) % 2 * 200 + 20], -1).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    g = output_geometry(320, 180, rotation, ExtractConfig(short_side=90), box)
    scaled = frame.reformat(width=g.scale_width, height=g.scale_height, format="rgb24", interpolation="AREA")
    pre_w, pre_h = (g.height, g.width) if rotation in (90, 270) else (g.width, g.height)
    window = scaled.to_ndarray()[g.crop_y : g.crop_y + pre_h, g.crop_x : g.crop_x + pre_w]
    i420 = encoder_frame(frame, g, VideoReformatter()).to_ndarray()
    image = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420).astype(int)
    assert image.shape == (g.height, g.width, 3)
    assert np.abs(image - rotate(window, rotation)).mean() < 4
    for other in {0, 90, 180, 270} - {rotation}:
        turned = rotate(window, other)
        assert turned.shape != image.shape or np.abs(image - turned).mean() > 20


def decode_clip(data: bytes) -> tuple[list[int], Fraction, tuple[int, int]]:
    with open_input(data) as container:
        stream = container.streams.video[0]
        frames = [
            f for f in iter_frames(container, DecodeStats(), Deadline(None)) if isinstance(f, DecodedFrame)
        ]
        return [f.pts for f in frames], stream.time_base, (frames[0].frame.width, frames[0].frame.height)


def split(path: Path, cfg: SplitConfig = CFG) -> tuple[VideoSplit, list[Clip]]:
    job = VideoSplit(path, cfg)
    return job, list(job.clips())


def test_sample_cuts_become_exact_verified_clips(sample_footage):
    video = sample_footage / "cuts.mp4"
    job, clips = split(video)
    truth = json.loads((sample_footage / "cuts.mp4.gt.json").read_text())
    assert job.status == "ok" and job.error == "" and not job.failures
    assert len(clips) == len(truth["cuts"]) + 1
    for clip in clips:
        pts, time_base, size = decode_clip(clip.data)
        assert len(pts) == clip.num_frames == clip.plan.num_frames
        assert size == (clip.width, clip.height) == (320, 180)  # never upscaled to short_side 360
        assert float((pts[-1] - pts[0]) * time_base) == pytest.approx(clip.plan.duration_s - 0.04, abs=1e-3)
        assert clip.thumbnail[:2] == b"\xff\xd8"  # JPEG
    # No clip crosses a cut: each lies inside one ground-truth shot.
    edges = [0, *truth["cuts"], truth["num_frames"]]
    for clip in clips:
        assert any(a <= clip.plan.start_frame and clip.plan.end_frame <= b for a, b in pairwise(edges))
    assert job.probe is not None and job.probe.measured and job.probe.num_frames == truth["num_frames"]


def test_vfr_timing_is_kept_exactly(sample_footage):
    video = sample_footage / "vfr.mp4"
    scan = scan_file(video, CFG.detect)
    probe = probe_file(video, CFG.probe)
    plans = plan_clips(scan, CFG.clips)
    clips = list(extract_clips(video, plans, scan, probe.width, probe.height, 0, CFG.extract))
    assert clips and all(isinstance(c, Clip) for c in clips)
    for clip in clips:
        pts, time_base, _ = decode_clip(clip.data)
        source = [scan.frame_pts[i] for i in range(clip.plan.start_frame, clip.plan.end_frame)]
        got = [float(p * time_base) for p in pts]
        want = [float((s - source[0]) * scan.time_base) for s in source]
        assert got == pytest.approx(want, abs=1e-4)


def test_fixed_output_rate(sample_footage):
    cfg = SplitConfig.model_validate({"extract": {"fps": 10}})
    job, clips = split(sample_footage / "vfr.mp4", cfg)
    assert job.status == "ok" and clips
    for clip in clips:
        pts, time_base, _ = decode_clip(clip.data)
        assert len(pts) == round(clip.plan.duration_s * 10 + 0.4999)
        assert np.allclose(np.diff([float(p * time_base) for p in pts]), 0.1, atol=1e-3)


def test_verification_reports_mismatches(sample_footage):
    _, clips = split(sample_footage / "cuts.mp4")
    clip = clips[0]
    assert verify_clip(clip.data, clip.num_frames, clip.plan.duration_s, 0.05) == ""
    assert "frames" in verify_clip(clip.data, clip.num_frames + 1, clip.plan.duration_s, 0.05)
    assert "lasts" in verify_clip(clip.data, clip.num_frames, clip.plan.duration_s + 1.0, 0.05)
    assert "does not open" in verify_clip(b"not an mp4", 1, 1.0, 0.05)
    # A clip that lost its last frames (packets cut off the end) fails on its count.
    short, _ = _packets(clip.data, slice(clip.num_frames - 2))
    assert "frames" in verify_clip(short, clip.num_frames, 1.0, 9.0)
    # One that starts mid-GOP (its keyframe cut off) does not start decodable.
    headless, count = _packets(clip.data, slice(1, None))
    assert "keyframe" in verify_clip(headless, count, 1.0, 9.0)


def _packets(data: bytes, keep: slice) -> tuple[bytes, int]:
    """The clip remuxed with only the packets `keep` selects (in decoding order), and their number."""
    out = io.BytesIO()
    written = remux(data, out, keep=keep)
    return out.getvalue(), written


def test_time_limit_gives_a_timeout_row(sample_footage):
    job, clips = split(sample_footage / "cuts.mp4", SplitConfig(time_limit_s=1e-6))
    assert clips == [] and job.status == "error" and reason_of(job.error) == Reason.TIMEOUT


def test_stride_mode_end_to_end(sample_footage):
    cfg = SplitConfig.model_validate({"detect": {"mode": "stride", "stride_s": 3.0}})
    job, clips = split(sample_footage / "cuts.mp4", cfg)
    assert job.boundaries == [] and [round(c.plan.start_s, 3) for c in clips] == [0.0, 3.0, 6.0, 9.0]


def test_bad_inputs_end_as_error_rows_or_partial_clips(bad_inputs):
    for name, (path, accepted) in bad_inputs.items():
        job, clips = split(path)
        if job.status == "ok":
            assert "ok" in accepted and clips, name
            assert any(reason_of(part) in accepted for part in job.error.split(" | ")), (name, job.error)
        else:
            assert clips == [] and reason_of(job.error) in accepted, (name, job.error)


@pytest.mark.footage
@pytest.mark.slow
def test_every_shared_format_splits(shared_footage):
    cfg = SplitConfig.model_validate({"clips": {"min_length_s": 0.05}})
    for path in sorted((shared_footage / "formats").iterdir()):
        job, clips = split(path, cfg)
        assert job.status == "ok" and clips and not job.failures, (path.name, job.error)
        pts, _, size = decode_clip(clips[0].data)
        assert len(pts) == clips[0].num_frames
        if path.name == "video_90.mov":
            assert size[0] < size[1]  # rotation applied to the pixels: portrait
    job, _ = split(shared_footage / "formats" / "no_duration.webm", cfg)
    assert job.probe is not None and job.probe.duration_s == pytest.approx(4.94, abs=0.1)


@pytest.mark.footage
def test_shared_broken_files(shared_footage):
    broken = shared_footage / "broken"
    job, clips = split(broken / "invalid-bitstream.webm")
    assert job.status == "error" and reason_of(job.error) == Reason.UNDECODABLE and not clips
    job, clips = split(broken / "corrupted.mp4")
    assert job.status == "ok" and clips and reason_of(job.error) == Reason.CORRUPT_PACKETS
    job, clips = split(
        broken / "sample_mdat_too_long.mp4", SplitConfig.model_validate({"clips": {"min_length_s": 0.5}})
    )
    assert job.status == "ok" and sum(c.num_frames for c in clips) == 30


def test_stream_copy_only_when_cuts_lie_on_keyframes(sample_footage):
    # cuts.mp4 has a keyframe every 50 frames and a cut every 50 frames.
    copy = {"extract": {"allow_stream_copy": True, "short_side": 0}, "clips": {"trim_s": 0.0}}
    job, clips = split(sample_footage / "cuts.mp4", SplitConfig.model_validate(copy))
    assert job.status == "ok" and len(clips) == 5 and all(c.stream_copied for c in clips)
    for clip in clips:
        pts, _, size = decode_clip(clip.data)
        assert len(pts) == clip.plan.num_frames == 50 and size == (320, 180)
    # Trimmed starts are not keyframes, a resize changes the pixels: both re-encode.
    trimmed = SplitConfig.model_validate({**copy, "clips": {"trim_s": 0.1}})
    assert not any(c.stream_copied for c in split(sample_footage / "cuts.mp4", trimmed)[1])
    resized = SplitConfig.model_validate({**copy, "extract": {"allow_stream_copy": True, "short_side": 90}})
    assert not any(c.stream_copied for c in split(sample_footage / "cuts.mp4", resized)[1])


def _dirty_the_heap(seed: int) -> None:
    """Leave garbage in freed heap blocks, as a different process history (a resumed job, another node) would.

    Extraction must not depend on memory it never wrote, so the next run may not see what this one saw.
    """
    rng = np.random.default_rng(seed)
    blocks = [
        rng.integers(0, 256, size=int(n), dtype=np.uint8) for n in rng.integers(1_000, 200_000, size=64)
    ]
    del blocks


def assert_split_reproducible(paths: list[Path], runs: int = 3) -> None:
    for path in paths:
        first: list[tuple[str, bytes]] | None = None
        for run in range(runs):
            _dirty_the_heap(run)
            job, clips = split(path)
            assert job.status == "ok" and clips, (path.name, job.error)
            got = [(clip_id(job.video_id, c.plan.start_s), c.data) for c in clips]
            if first is None:
                first = got
                continue
            assert [i for i, _ in got] == [i for i, _ in first], path.name
            differing = [i for (i, a), (_, b) in zip(got, first, strict=True) if a != b]
            assert not differing, f"{path.name} run {run}: encoded bytes differ for clips {differing}"


def test_split_is_byte_reproducible(sample_footage):
    assert_split_reproducible([sample_footage / name for name in ("cuts.mp4", "looks.mp4", "vfr.mp4")])


@pytest.mark.footage
@pytest.mark.slow
def test_split_is_byte_reproducible_on_real_footage(shared_footage):
    assert_split_reproducible([shared_footage / "multishot" / "bikes.mp4"], runs=2)

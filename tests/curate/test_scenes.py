"""Scene detection: cut positions (frames and exact seconds) against ground truth."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from curate.scenes import frame_mean, make_detector, scan_file
from curate.split_config import DetectConfig

CFG = DetectConfig()


def cuts(scan, kind="cut"):
    return [b.frame for b in scan.boundaries if b.kind == kind]


def assert_close(found, expected, tolerance=1):
    assert len(found) == len(expected), (found, expected)
    for f, e in zip(found, expected, strict=True):
        assert abs(f - e) <= tolerance, (found, expected)


def test_sample_footage_cuts_and_exact_seconds(sample_footage):
    for video in sorted(sample_footage.glob("*.mp4")) + sorted(sample_footage.glob("*.webm")):
        truth = json.loads(Path(f"{video}.gt.json").read_text())
        scan = scan_file(video, CFG)
        assert scan.num_frames == truth["num_frames"], video.name
        found = cuts(scan)
        assert_close(found, truth["cuts"])
        seconds = [b.seconds for b in scan.boundaries if b.kind == "cut"]
        assert seconds == pytest.approx(truth["cuts_s"], abs=1e-3), video.name
        # A very dark shot is not a fade: no gradual boundary around it.
        assert cuts(scan, "gradual") == [], video.name


def test_every_cut_detector_runs_from_config(sample_footage):
    truth = json.loads((sample_footage / "cuts.mp4.gt.json").read_text())["cuts"]
    for name in ("content", "adaptive", "hash", "histogram"):
        found = cuts(scan_file(sample_footage / "cuts.mp4", DetectConfig(detector=name, detect_fades=False)))
        for expected in truth:
            assert any(abs(f - expected) <= 1 for f in found), (name, found)
    # The fade detector finds nothing on a file without fades, and its boundaries are "gradual".
    assert scan_file(sample_footage / "cuts.mp4", DetectConfig(detector="threshold")).boundaries == []
    assert type(make_detector(DetectConfig(detector="adaptive"))).__name__ == "AdaptiveDetector"


@pytest.mark.parametrize("luma_only", [False, True])
def test_content_scores_are_upstreams_bit_for_bit(luma_only):
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector

    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (6, 90, 160, 3), dtype=np.uint8)
    frames[3] = frames[2] // 3 + 40  # a small change next to large ones
    ours = make_detector(DetectConfig(content={"luma_only": luma_only}))
    upstream = ContentDetector(threshold=27.0, min_scene_len=15, luma_only=luma_only)
    for i, frame in enumerate(frames):
        timecode = FrameTimecode(i, fps=25.0)
        assert ours._calculate_frame_score(timecode, frame) == upstream._calculate_frame_score(
            timecode, frame
        )
        assert frame_mean(frame) == float(frame.mean())


@pytest.mark.parametrize("length", [0, 1, 3, 15])
def test_frame_number_flash_filter_is_upstreams(length):
    """The content detector's min_scene_len filter runs on frame numbers: on the same frames above
    and below the threshold it reports exactly upstream's FlashFilter cuts."""
    from scenedetect.common import FrameTimecode
    from scenedetect.detector import FlashFilter

    from curate.scenes import _FramesFlashFilter

    rng = np.random.default_rng(length)
    reported = 0
    for density in (0.02, 0.2, 0.6):
        above = rng.random(3000) < density
        ours, upstream = _FramesFlashFilter(length), FlashFilter(FlashFilter.Mode.MERGE, length)
        ours_cuts, upstream_cuts = [], []
        for i, flag in enumerate(above.tolist()):
            ours_cuts += ours.filter(i, flag)
            upstream_cuts += [t.frame_num for t in upstream.filter(FrameTimecode(i, fps=25.0), flag)]
        assert ours_cuts == upstream_cuts
        reported += len(upstream_cuts)
    assert reported > 10


def test_fade_boundaries_are_upstreams():
    """The fade detector reads each frame's average from BoundaryDetector (taken once) instead of
    taking it again: its boundaries must be those of upstream's own ThresholdDetector."""
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ThresholdDetector

    from curate.scenes import BoundaryDetector

    rng = np.random.default_rng(3)
    # Bright shots with two fades through black (one slow, one fast) and a dark run that ends the file.
    levels = np.concatenate(
        [
            np.full(40, 120.0),
            np.linspace(120, 0, 25),
            np.linspace(0, 140, 10),
            np.full(30, 140.0),
            np.linspace(140, 2, 6),
            np.full(5, 2.0),
            np.linspace(2, 90, 8),
            np.full(30, 90.0),
            np.linspace(90, 1, 20),
        ]
    )
    noise = rng.integers(-3, 4, (len(levels), 90, 160, 3))
    frames = np.clip(levels[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    cfg = DetectConfig(detector="threshold")
    ours = BoundaryDetector(cfg, rate=Fraction(25))
    t = cfg.threshold
    upstream = ThresholdDetector(
        threshold=t.threshold, min_scene_len=cfg.min_scene_frames, fade_bias=t.fade_bias
    )
    expected = []
    for i, frame in enumerate(frames):
        ours.add(i, frame)
        expected += [c.frame_num for c in upstream.process_frame(FrameTimecode(i, fps=25.0), frame)]
    expected += [c.frame_num for c in upstream.post_process(FrameTimecode(len(frames) - 1, fps=25.0))]
    assert len(expected) == 2, expected  # both fades (the final fade-out ends no shot)
    assert ours.finish() == [f for f in expected if f > 0]


def test_timestamps_are_kept_compactly(sample_footage):
    scan = scan_file(sample_footage / "vfr.mp4", CFG, detect=False)
    assert scan.frame_pts.itemsize == 8 and scan.boundaries == []
    deltas = np.diff(np.asarray(scan.frame_pts))
    assert len(set(deltas.tolist())) > 1  # variable frame durations survive exactly


@pytest.mark.footage
@pytest.mark.slow
def test_shared_multishot_ground_truth(shared_footage):
    multi = shared_footage / "multishot"
    testvideo = scan_file(multi / "testvideo.mp4", CFG)
    hard = cuts(testvideo)
    for expected in (30, 180):
        assert any(abs(f - expected) <= 1 for f in hard), hard
    bikes = scan_file(multi / "bikes.mp4", CFG)
    assert_close(cuts(bikes), [30, 76, 137, 187, 242])
    vfr = scan_file(multi / "goldeneye-vfr-drop3.mp4", CFG)
    assert vfr.num_frames == 160
    assert_close(cuts(vfr), [60, 140])
    frame_s = 2002 / 24000  # longest frame duration of that file
    for got, want in zip([b.seconds for b in vfr.boundaries], [3.754, 8.759], strict=True):
        assert abs(got - want) <= frame_s
    fades = scan_file(multi / "fades.mp4", CFG)
    assert cuts(fades) == []
    assert_close(cuts(fades, "gradual"), [84, 167])
    rotated = scan_file(multi / "issue-134-rotate.mp4", CFG)
    assert_close(cuts(rotated), [90, 210])


@pytest.mark.footage
@pytest.mark.slow
def test_shared_singleshot_files_have_no_boundary(shared_footage):
    files = [p for p in sorted((shared_footage / "singleshot").rglob("*")) if p.is_file()]
    assert len(files) >= 10
    for path in files:
        scan = scan_file(path, CFG)
        assert scan.num_frames > 0, path.name
        assert scan.boundaries == [], (path.name, scan.boundaries)

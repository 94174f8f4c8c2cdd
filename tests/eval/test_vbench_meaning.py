"""Each VBench dimension orders real clips against damaged copies of themselves as it must: shuffled frames
lower subject consistency and motion smoothness, dropping every other frame lowers motion smoothness, a
brightness flicker lowers temporal flickering, a frozen clip has dynamic degree 0, blur and heavy noise
lower imaging quality. Real footage (../shared/footage) and the built-in sample footage; the image tower
is the demo's (random weights: the test checks the measure, not the model)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curate.config import ImageTowerConfig, QualityConfig, ScoreConfig
from curate.eval_config import EvalConfig
from curate.frames import spread_indices, tower_input
from curate.quality import QualityScorer
from curate.vbench import (
    DIMENSIONS,
    FeatureMoments,
    FlowMeasures,
    VBenchScorer,
    Video,
    aggregate,
    feature_consistency,
    frechet_distance,
    imaging_quality,
    letterbox,
    read_video,
    temporal_flickering,
)
from tests.score_clips import sample_shots

CFG = EvalConfig(max_frames=96, short_side=240, tower_frames=12, flow_width=160)
# One shot each, read 3 frames apart (32 frames, ~4 s): moving, near-static and panning real footage.
REAL = ("flower.mp4", "bigbuckbunny.mp4", "car-detection.mp4", "friday.mp4", "stream-of-water.webm")
SAMPLE = ("pan_astronaut", "fast_pan_chelsea", "zoom_rocket", "static_coffee")


@pytest.fixture(scope="module")
def clips(shared_footage, sample_footage) -> dict[str, np.ndarray]:
    out = {name: read_video(shared_footage / "singleshot" / name, CFG).frames[::3] for name in REAL}
    shots = sample_shots(sample_footage, "cuts.mp4")
    out.update({label: np.stack(shots[label])[:48] for label in SAMPLE})
    return out


@pytest.fixture(scope="module")
def tower():
    from curate.image_tower import ImageTower

    return ImageTower(ImageTowerConfig(allow_random_weights=True))


def _shuffled(frames: np.ndarray) -> np.ndarray:
    return frames[np.random.default_rng(0).permutation(len(frames))]


@pytest.mark.parametrize("name", ["car-detection.mp4", "pan_astronaut", "fast_pan_chelsea"])
def test_shuffled_frames_lower_subject_consistency(clips, tower, name):
    """With random weights the tower answers to the picture's layout, not to what is in it: the clips
    here are those whose view changes over the shot (a drive, pans), where order matters to layout."""

    def consistency(frames: np.ndarray) -> float:
        picked = frames[spread_indices(len(frames), CFG.tower_frames)]
        return feature_consistency(tower.embed(tower_input(picked, tower.image_size)))

    assert consistency(_shuffled(clips[name])) < consistency(clips[name])


@pytest.mark.parametrize("name", REAL + SAMPLE[:3])
def test_shuffled_frames_lower_motion_smoothness(clips, name):
    flow = FlowMeasures(CFG)
    assert flow.motion_smoothness(_shuffled(clips[name])) < flow.motion_smoothness(clips[name]) - 0.005


@pytest.mark.parametrize("name", REAL)
def test_dropping_every_other_frame_lowers_motion_smoothness(clips, name):
    """Twice the motion between frames is harder to interpolate (a perfectly linear synthetic pan is
    not: its middle frames are predicted as well either way, so the real footage is the test)."""
    flow = FlowMeasures(CFG)
    assert flow.motion_smoothness(clips[name][::2]) < flow.motion_smoothness(clips[name])


@pytest.mark.parametrize("name", REAL + SAMPLE)
def test_brightness_flicker_lowers_temporal_flickering(clips, name):
    frames = clips[name].astype(np.int16)
    frames[1::2] += 40  # every other frame brighter
    flickering = np.clip(frames, 0, 255).astype(np.uint8)
    assert temporal_flickering(flickering) < temporal_flickering(clips[name]) - 0.02


@pytest.mark.parametrize(
    "name", ["bigbuckbunny.mp4", "car-detection.mp4", "pan_astronaut", "fast_pan_chelsea"]
)
def test_frozen_clip_has_dynamic_degree_zero(clips, name):
    flow = FlowMeasures(CFG)
    frozen = np.repeat(clips[name][:1], len(clips[name]), axis=0)
    assert flow.dynamic_degree(clips[name], fps=25.0) == 1.0, "a moving clip is dynamic"
    assert flow.dynamic_degree(frozen, fps=25.0) == 0.0


def test_static_shot_is_not_dynamic(clips):
    assert FlowMeasures(CFG).dynamic_degree(clips["static_coffee"], fps=25.0) == 0.0


@pytest.mark.parametrize("name", ["flower.mp4", "bigbuckbunny.mp4", "car-detection.mp4", "pan_astronaut"])
def test_blur_and_heavy_noise_lower_imaging_quality(clips, name):
    quality = QualityScorer(QualityConfig())
    frames = clips[name][:8]

    def score(f: np.ndarray) -> float:
        return imaging_quality(quality(f).technical_quality, f, CFG.noise_sigma)

    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in frames])
    noise = np.random.default_rng(0).normal(0, 40, frames.shape)
    noisy = np.clip(frames + noise, 0, 255).astype(np.uint8)
    assert score(blurred) < score(frames)
    assert score(noisy) < score(frames)


def test_letterbox_keeps_the_whole_frame():
    frame = np.zeros((1, 90, 160, 3), np.uint8)
    frame[:, :, :8] = 255  # a white bar at the left edge, which a centre crop cuts away
    assert letterbox(frame, 64)[0, :, :4].max() == 255
    assert tower_input(frame, 64)[0, :, :4].max() == 0


def test_scorer_gives_every_dimension(shared_footage):
    score = ScoreConfig(image_tower=ImageTowerConfig(allow_random_weights=True))
    scorer = VBenchScorer(CFG, score)
    video = read_video(shared_footage / "singleshot" / "bigbuckbunny.mp4", CFG)
    values, feature = scorer(Video(video.frames[:32], video.fps))
    assert set(values) == set(DIMENSIONS)
    assert all(0.0 <= values[d] <= 1.0 for d in DIMENSIONS if d != "aesthetic_quality")
    assert feature.shape == (scorer.tower.embed_dim,) and abs(float(np.linalg.norm(feature)) - 1) < 1e-5
    # random tower and head: their dimensions are marked
    assert set(scorer.placeholders()) >= {
        "subject_consistency",
        "background_consistency",
        "aesthetic_quality",
    }


def test_aggregate_is_vbench_quality_score():
    row = dict.fromkeys(DIMENSIONS, 1.0) | {"error": None}
    static = row | {"dynamic_degree": 0.0, "temporal_flickering": 0.9}
    moving = row | {"temporal_flickering": 0.5}
    agg = aggregate([static, moving, {"error": "does not decode"}])
    assert agg["videos"] == 2
    assert agg["temporal_flickering"] == pytest.approx(0.9), "flickering is averaged over static videos"
    assert agg["dynamic_degree"] == 0.5
    # min-max normalised with VBench's bounds (motion smoothness tops out at 0.9975: 1.0 is above 1),
    # dynamic degree at weight 0.5
    smooth = (1.0 - 0.706) / (0.9975 - 0.706)
    expected = (4 + smooth + (0.9 - 0.6293) / (1 - 0.6293) + 0.5 * 0.5) / 6.5
    assert agg["quality_score"] == pytest.approx(expected)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = frechet_distance(a, a + np.array([3.0, 0, 0, 0]))
    assert shifted == pytest.approx(9.0, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)
    streamed = FeatureMoments()
    for row in a + 1.0:
        streamed.add(row)
    assert frechet_distance(streamed, a) == pytest.approx(frechet_distance(a + 1.0, a), rel=1e-6)

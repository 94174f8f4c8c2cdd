"""Scores that mean something: on the built-in sample footage, real footage, and tiny local models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from score_clips import decode_all, encode_mp4, even, sample_shots

from curate.aesthetic import AestheticHead, MissingWeightsError, load_head, score_frames
from curate.config import (
    AestheticConfig,
    DedupConfig,
    FrameSamplingConfig,
    ImageTowerConfig,
    MotionConfig,
    QualityConfig,
)
from curate.dedup import find_duplicates, frame_signature
from curate.frames import FrameDecodeError, decode_clip, spread_indices, tower_input
from curate.image_tower import ImageTower
from curate.motion import MotionScorer
from curate.quality import QualityScorer

FRAMES = FrameSamplingConfig(count=6)


def _decode(data: bytes, **kw):
    return decode_clip(data, FRAMES, motion_width=160, motion_run_length=3, **kw)


@pytest.fixture(scope="module")
def shots(sample_footage):
    out = {}
    for movie in ("cuts.mp4", "looks.mp4"):
        out.update(sample_shots(sample_footage, movie))
    return out


def test_frames_sampled_by_count_and_rate(shots):
    data = encode_mp4(shots["static_coffee"])  # 50 frames at 25 fps
    clip = _decode(data)
    # Decoding stops after the last sampled frame (frame 46, 1.84 s) and its 3-frame motion run.
    assert clip.frames.shape[0] == 6 and clip.frames_decoded == 49
    assert np.all(np.diff(clip.times_s) > 0) and clip.times_s[-1] < 2.0
    assert all(run.shape[0] == 3 and run.shape[2] == 160 for run in clip.motion_runs)
    by_rate = decode_clip(data, FrameSamplingConfig(mode="rate", rate_fps=2.0))
    assert by_rate.frames.shape[0] == 4  # 2 s at 2 fps
    assert clip.content_hash() == _decode(data).content_hash()


def test_bad_bytes_give_a_clear_error():
    for data in (b"", b"not a video", encode_mp4([np.zeros((16, 16, 3), np.uint8)] * 3)[:200]):
        with pytest.raises(FrameDecodeError):
            _decode(data)


def test_static_shot_moves_less_than_fast_pan(shots):
    scorer = MotionScorer(MotionConfig())
    static = scorer(_decode(encode_mp4(shots["static_coffee"])))
    fast = scorer(_decode(encode_mp4(shots["fast_pan_chelsea"])))
    assert static.is_still and not fast.is_still
    assert fast.motion > 10 * max(static.motion, 1e-5)
    farneback = MotionScorer(MotionConfig(method="farneback"))(_decode(encode_mp4(shots["fast_pan_chelsea"])))
    assert farneback.motion > 10 * max(static.motion, 1e-5)
    mvs = MotionScorer(MotionConfig(method="codec_mvs"))
    static_mv = mvs(_decode(encode_mp4(shots["static_coffee"]), codec_motion_vectors=True))
    fast_mv = mvs(_decode(encode_mp4(shots["fast_pan_chelsea"]), codec_motion_vectors=True))
    assert fast_mv.motion > 5 * max(static_mv.motion, 1e-5)


def test_scorers_use_spread_subsets_of_the_sampled_frames(shots):
    assert spread_indices(8, 4).tolist() == [0, 2, 4, 6] and spread_indices(3, 4).tolist() == [0, 1, 2]
    data = encode_mp4(shots["pan_astronaut"])
    every, some = _decode(data), _decode(data, motion_points=3)
    assert len(every.motion_runs) == 6 and len(some.motion_runs) == 3
    # Subsetting the runs in the scorer or in the decode measures the same frames.
    scorer = MotionScorer(MotionConfig(points=3))
    assert scorer(every) == scorer(some)
    picked = every.frames[spread_indices(6, 3)]
    assert QualityScorer(QualityConfig(frames=3))(every.frames) == QualityScorer(QualityConfig(frames=6))(
        picked
    )


def test_shaky_shot_has_more_camera_shake_than_steady_pan(shots):
    scorer = MotionScorer(MotionConfig())
    pan = scorer(_decode(encode_mp4(shots["pan_astronaut"])))
    shake = scorer(_decode(encode_mp4(shots["shake_immunohistochemistry"])))
    assert shake.camera_shake > 2 * pan.camera_shake


def test_blurred_copy_scores_lower_sharpness_and_dark_shot_is_flagged(shots):
    scorer = QualityScorer(QualityConfig())
    frames = np.stack([even(f) for f in shots["pan_coffee"][:6]])
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.5) for f in frames])
    sharp_q, blur_q = scorer(frames), scorer(blurred)
    assert blur_q.sharpness < 0.3 * sharp_q.sharpness
    assert blur_q.technical_quality < sharp_q.technical_quality
    dark = scorer(_decode(encode_mp4(shots["dark_chelsea"])).frames)
    assert dark.too_dark and not sharp_q.too_dark
    gt_blurred = scorer(_decode(encode_mp4(shots["blurred_astronaut"])).frames)
    normal = scorer(_decode(encode_mp4(shots["pan_astronaut"])).frames)
    assert gt_blurred.sharpness < normal.sharpness


@pytest.mark.footage
def test_pristine_carphone_beats_distorted(shared_footage):
    scorer = QualityScorer(QualityConfig())
    single = shared_footage / "singleshot"
    pristine = scorer(_decode((single / "carphone_pristine.mp4").read_bytes()).frames)
    distorted = scorer(_decode((single / "carphone_distorted.mp4").read_bytes()).frames)
    assert pristine.technical_quality > distorted.technical_quality + 0.1
    assert pristine.blockiness < distorted.blockiness
    assert pristine.sharpness > distorted.sharpness


def test_reencoded_copy_is_a_near_duplicate_and_byte_copy_exact(shots):
    clips = {name: encode_mp4(shots[name]) for name in ("pan_astronaut", "static_coffee", "zoom_rocket")}
    reencoded = encode_mp4(decode_all(clips["static_coffee"]), crf=32)
    ids = ["a", "b", "c", "d", "e"]
    datas = [
        clips["pan_astronaut"],
        clips["static_coffee"],
        clips["zoom_rocket"],
        reencoded,
        clips["zoom_rocket"],
    ]
    decoded = [_decode(d) for d in datas]
    hashes = [c.content_hash() for c in decoded]
    sigs = np.stack([frame_signature(c.frames) for c in decoded])
    dup = find_duplicates(ids, hashes, sigs, DedupConfig(threshold=0.9))
    assert dup == [None, None, None, "b", "c"]


def test_dedup_clusters_scale_and_stay_deterministic():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 32)).astype(np.float32)
    near = base[:20] + 0.01 * rng.normal(size=(20, 32)).astype(np.float32)
    vectors = np.concatenate([base, near])
    ids = [f"{i:04d}" for i in range(len(vectors))]
    cfg = DedupConfig(threshold=0.98, lists=8)
    dup = find_duplicates(ids, [None] * len(ids), vectors, cfg)
    assert dup[:200] == [None] * 200
    assert dup[200:] == ids[:20]
    assert find_duplicates(ids, [None] * len(ids), vectors, cfg) == dup
    vectors[5] = np.nan  # a clip without an embedding is never a duplicate by embedding
    assert find_duplicates(ids, [None] * len(ids), vectors, cfg)[205] is None


# ---- tiny models built here: never downloaded --------------------------------------------------
TINY_TOWER = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_tower_dir(tmp_path_factory):
    """A hub-layout open_clip folder (config + safetensors weights) with a tiny random model."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_tower")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_TOWER, "preprocess_cfg": {}}))
    torch.manual_seed(1)
    model = open_clip.CLIP(**TINY_TOWER)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return folder


def test_tiny_image_tower_loads_weights_and_is_deterministic_across_batches(tiny_tower_dir):
    cfg = ImageTowerConfig(model=f"local-dir:{tiny_tower_dir}")
    tower = ImageTower(cfg)
    assert not tower.placeholder and tower.embed_dim == 32 and tower.image_size == 32
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    pixels = np.concatenate([tower_input(p[None], 32) for p in photos])
    together = tower.embed(pixels)
    one_by_one = np.concatenate([tower.embed(pixels[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    again = ImageTower(cfg).embed(pixels)
    np.testing.assert_allclose(together, again, atol=1e-6)  # weights came from the file, not the seed
    assert not np.allclose(together[0], together[1])


def test_clip_without_weights_refuses_unless_random_allowed(tmp_path):
    with pytest.raises(MissingWeightsError, match="allow_random_weights"):
        ImageTower(ImageTowerConfig(model="ViT-B-32"))
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_TOWER}))
    with pytest.raises(MissingWeightsError):
        ImageTower(ImageTowerConfig(model=f"local-dir:{folder}"))
    tower = ImageTower(ImageTowerConfig(model=f"local-dir:{folder}", allow_random_weights=True))
    assert tower.placeholder


def test_aesthetic_head_loads_the_laion_checkpoint_layout(tmp_path):
    torch.manual_seed(3)
    published = torch.nn.Sequential(
        torch.nn.Linear(32, 1024),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    )
    state = {f"layers.{k}": v for k, v in published.state_dict().items()}
    path = tmp_path / "head.pth"
    torch.save(state, path)
    head, placeholder = load_head(AestheticConfig(head_checkpoint=str(path)), 32, allow_random=False, seed=0)
    assert not placeholder
    x = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)
    published.eval()
    with torch.inference_mode():
        np.testing.assert_allclose(head(x).numpy(), published(x).squeeze(-1).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="768"):
        load_head(AestheticConfig(head_checkpoint=str(path)), 768, allow_random=False, seed=0)
    with pytest.raises(MissingWeightsError, match="head_checkpoint"):
        load_head(AestheticConfig(), 32, allow_random=False, seed=0)
    random_head, placeholder = load_head(AestheticConfig(), 32, allow_random=True, seed=0)
    assert placeholder and isinstance(random_head, AestheticHead)
    # its scores sit far from the 1-10 ratings of a trained head: nobody reads them as ratings
    scores = score_frames(random_head, torch.nn.functional.normalize(torch.randn(200, 32), dim=-1).numpy())
    assert np.abs(scores).max() < 1.0


@pytest.mark.slow
def test_text_shot_has_much_larger_text_area(shots):
    from curate.config import OcrConfig
    from curate.ocr import TextDetector, ocr_input

    detector = TextDetector(OcrConfig())
    areas = {}
    for name in ("text_rocket", "zoom_rocket", "static_coffee"):
        frames = ocr_input(_decode(encode_mp4(shots[name])).frames, 2, 320)
        areas[name] = max(detector.text_area(f) for f in frames)
    assert areas["text_rocket"] > 0.03
    assert areas["text_rocket"] > 5 * max(areas["zoom_rocket"], areas["static_coffee"], 1e-3)

"""Overlay text apart from scene text: the OCR detector's boxes tracked over a clip's frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from camera_clips import HEIGHT, WIDTH, Move, photo, render
from score_clips import encode_mp4

from curate.config import FrameSamplingConfig, OcrConfig, OverlayConfig
from curate.frames import decode_clip
from curate.ocr import OverlayScores, TextAreaStage, ocr_input, overlay_scores

# Three OCR frames: overlay text must be found at the same place in each.
OCR = OcrConfig(frames=3)


def _text(frame: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)


def with_logo() -> list[np.ndarray]:
    frames = render("coffee", Move("pan_left", shift=(0.3, 0.0)), frames=40)
    for f in frames:
        _text(f, "TV5", (WIDTH - 62, 26), 0.8)
    return frames


def with_subtitles() -> list[np.ndarray]:
    frames = render("chelsea", Move("pan_right", shift=(-0.2, 0.0)), frames=40)
    for i, f in enumerate(frames):
        line = "where are we going" if i < 20 else "somewhere far away"
        _text(f, line, (38, HEIGHT - 14), 0.7)
    return frames


def scene_text_in_a_pan() -> list[np.ndarray]:
    """A sign painted on the photograph itself: the pan carries it across the frame."""
    image = photo("astronaut").copy()
    cv2.putText(image, "EXIT", (200, 250), cv2.FONT_HERSHEY_DUPLEX, 3.0, (255, 255, 255), 8, cv2.LINE_AA)
    import camera_clips

    original = camera_clips.photo
    camera_clips.photo = lambda name: image if name == "signed" else original(name)
    try:
        return render("signed", Move("pan_left", shift=(0.35, 0.0)), frames=40)
    finally:
        camera_clips.photo = original


def scores(frames: list[np.ndarray], stage: TextAreaStage) -> dict[str, float]:
    sampled = decode_clip(encode_mp4(frames), FrameSamplingConfig()).frames
    out = stage(
        {
            "clip_id": np.array(["c"], dtype=object),
            "ocr_frames": [ocr_input(sampled, OCR.frames, OCR.max_side)],
        }
    )
    return {k: float(out[k][0]) for k in ("text_area", "overlay_text_area", "subtitle_band", "corner_logo")}


@pytest.mark.slow
def test_logo_and_subtitles_are_overlay_and_a_sign_in_a_pan_is_not():
    stage = TextAreaStage(OCR)
    logo, subtitles, sign = (
        scores(with_logo(), stage),
        scores(with_subtitles(), stage),
        scores(scene_text_in_a_pan(), stage),
    )
    assert (
        logo["corner_logo"] == 1.0 and logo["subtitle_band"] == 0.0 and 0.0 < logo["overlay_text_area"] < 0.05
    )
    assert (
        subtitles["subtitle_band"] == 1.0
        and subtitles["corner_logo"] == 0.0
        and subtitles["overlay_text_area"] > 0.02
    )
    # The sign is text (the detector sees it) but moves with the picture: no overlay.
    assert sign["text_area"] > 0.01 and sign["overlay_text_area"] == 0.0
    assert sign["corner_logo"] == 0.0 and sign["subtitle_band"] == 0.0


def test_overlay_rules_on_given_boxes():
    rng = np.random.default_rng(0)
    moving = rng.integers(0, 255, (3, 90, 160, 3), dtype=np.uint8)  # the picture changes everywhere
    still = np.repeat(moving[:1], 3, axis=0)
    logo = np.array([[0.85, 0.03, 0.97, 0.12]])
    subtitle = np.array([[0.25, 0.85, 0.75, 0.95]])
    both = np.concatenate([logo, subtitle])
    cfg = OverlayConfig()
    found = overlay_scores(moving, [both, both + 0.005, both - 0.005], cfg)
    assert (
        found.corner_logo and found.subtitle_band and found.overlay_text_area == pytest.approx(0.06, abs=0.02)
    )
    # Text that moves between the frames is scene text; a still picture tells nothing.
    assert overlay_scores(moving, [logo, logo + 0.2, logo + 0.4], cfg) == OverlayScores(0.0, False, False)
    assert overlay_scores(still, [both, both, both], cfg) == OverlayScores(0.0, False, False)
    assert overlay_scores(moving, [both], cfg) == OverlayScores(0.0, False, False)  # one frame: no tracking


def test_overlay_flags_become_nullable_booleans_in_the_staged_table(tmp_store):
    from score_clips import store_with

    from curate.config import ScoreConfig
    from pipelines.jobs.score import OCR_COLUMNS, decode_and_measure, score_schema, to_staged_table

    store_with(tmp_store, {"v:logo": encode_mp4(with_logo()), "v:broken": b"not a video"})
    cfg = ScoreConfig(aesthetic={"enabled": False}, embedding={"enabled": False})
    work = tmp_store.work_list()
    batch = {"clip_id": work.rows["clip_id"].to_numpy(), "_rowid": work.rows["_rowid"].to_numpy()}
    measured = decode_and_measure(batch, str(tmp_store.root), work.version, cfg, 0)
    # What TextAreaStage hands on: floats, NaN for the clip it could not look at.
    broken = [str(c) for c in measured["clip_id"]].index("v:broken")
    for name in OCR_COLUMNS:
        values = np.ones(len(measured["clip_id"]))
        values[broken] = np.nan
        measured[name] = values
    del measured["ocr_frames"]
    rows = {r["clip_id"]: r for r in to_staged_table(measured, score_schema(cfg, None)).to_pylist()}
    assert rows["v:logo"]["corner_logo"] is True and rows["v:logo"]["subtitle_band"] is True
    assert rows["v:broken"]["corner_logo"] is None and rows["v:broken"]["overlay_text_area"] is None

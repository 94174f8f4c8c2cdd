"""Letterbox, pillarbox and windowbox detection on generated boxed footage, and no crop where there is none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from camera_clips import Move, render
from score_clips import encode_mp4

from curate.borders import content_box
from curate.config import BorderConfig, FrameSamplingConfig
from curate.frames import decode_clip

CFG = BorderConfig()


def boxed(photo: str, move: Move, canvas: tuple[int, int], box: tuple[int, int, int, int], colour=(0, 0, 0)):
    """Frames of `move` over a photo scaled into `box` (x, y, w, h) of a flat-coloured canvas (w, h)."""
    x, y, w, h = box
    out = []
    for frame in render(photo, move, frames=30, noise=2.0):
        canvas_frame = np.empty((canvas[1], canvas[0], 3), np.uint8)
        canvas_frame[:] = colour
        canvas_frame[y : y + h, x : x + w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        out.append(canvas_frame)
    return out


def detect(frames: list[np.ndarray], crf: int = 26):
    return content_box(decode_clip(encode_mp4(frames, crf=crf), FrameSamplingConfig()).frames, CFG)


CASES = [
    ("letterbox", (320, 180), (0, 22, 320, 136), (0, 0, 0)),
    ("letterbox, grey bars, off centre", (320, 240), (0, 30, 320, 166), (40, 40, 40)),
    ("pillarbox", (320, 180), (40, 0, 240, 180), (0, 0, 0)),
    ("pillarbox, blue bars", (320, 180), (56, 0, 208, 180), (20, 30, 120)),
    ("windowbox", (320, 180), (32, 18, 256, 144), (0, 0, 0)),
    ("windowbox, uneven", (320, 240), (20, 40, 260, 150), (16, 16, 16)),
]


@pytest.mark.parametrize(("name", "canvas", "box", "colour"), CASES, ids=[c[0] for c in CASES])
def test_boxed_footage_gives_the_picture_box_within_2_px(name, canvas, box, colour):
    for photo, move in (("astronaut", Move("pan_left", shift=(0.2, 0.0))), ("coffee", Move("static"))):
        found = detect(boxed(photo, move, canvas, box, colour))
        assert (found.frame_w, found.frame_h) == canvas
        edges = np.array([found.x, found.y, found.x + found.w, found.y + found.h])
        assert np.abs(edges - np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]])).max() <= 2, (
            name,
            found,
        )
        assert found.border_fraction == pytest.approx(1 - box[2] * box[3] / (canvas[0] * canvas[1]), abs=0.03)


def test_no_border_and_dark_edges_are_not_cropped():
    plain = detect(render("chelsea", Move("pan_right", shift=(-0.2, 0.0)), frames=30))
    assert (plain.x, plain.y, plain.w, plain.h) == (0, 0, 256, 144) and plain.border_fraction == 0.0
    # A dark scene whose edges fade to black (a vignette) over a slow pan, with sensor noise.
    yy, xx = np.mgrid[0:144, 0:256]
    vignette = np.clip(1.3 - np.hypot((xx - 128) / 128, (yy - 72) / 72), 0.0, 1.0)[..., None]
    dark = [
        (f.astype(np.float32) * 0.3 * vignette).astype(np.uint8)
        for f in render("coffee", Move("pan_left", shift=(0.05, 0.0)), frames=30, noise=2.0)
    ]
    scene = detect(dark, crf=28)
    assert scene.border_fraction == 0.0, scene
    # A blank clip is not a letterbox around nothing.
    blank = detect([np.zeros((144, 256, 3), np.uint8)] * 10)
    assert blank.border_fraction == 0.0


def test_score_job_writes_the_content_box(tmp_store):
    from score_clips import store_with

    from curate.config import ScoreConfig
    from pipelines.jobs.score import decode_and_measure, score_schema, to_staged_table

    letterboxed = boxed("astronaut", Move("pan_left", shift=(0.2, 0.0)), (320, 180), (0, 22, 320, 136))
    store_with(tmp_store, {"v:boxed": encode_mp4(letterboxed), "v:broken": b"not a video"})
    cfg = ScoreConfig(aesthetic={"enabled": False}, embedding={"enabled": False}, ocr={"enabled": False})
    work = tmp_store.work_list()
    batch = {"clip_id": work.rows["clip_id"].to_numpy(), "_rowid": work.rows["_rowid"].to_numpy()}
    measured = decode_and_measure(batch, str(tmp_store.root), work.version, cfg, 0)
    rows = {r["clip_id"]: r for r in to_staged_table(measured, score_schema(cfg, None)).to_pylist()}
    box = rows["v:boxed"]["content_box"]
    assert box["x"] == 0 and box["w"] == 320 and abs(box["y"] - 22) <= 2 and abs(box["h"] - 136) <= 4
    assert rows["v:boxed"]["border_fraction"] == pytest.approx(1 - 136 / 180, abs=0.03)
    assert rows["v:broken"]["content_box"] is None and rows["v:broken"]["border_fraction"] is None


@pytest.mark.parametrize("crop", [True, False])
def test_split_crops_clips_to_the_picture(tmp_path, crop):
    from curate.clip_output import Clip
    from curate.clip_plan import plan_clips
    from curate.extract import extract_clips
    from curate.probe import probe_file
    from curate.scenes import scan_file
    from curate.split_config import ExtractConfig, SplitConfig

    video = tmp_path / "letterboxed.mp4"
    frames = boxed("astronaut", Move("pan_left", shift=(0.2, 0.0)), (320, 240), (0, 30, 320, 180))
    video.write_bytes(encode_mp4(frames + frames[::-1]))  # 60 frames, one shot
    cfg = SplitConfig()
    scan, probe = scan_file(video, cfg.detect), probe_file(video, cfg.probe)
    extract = ExtractConfig(crop_borders=crop)
    clips = list(
        extract_clips(video, plan_clips(scan, cfg.clips), scan, probe.width, probe.height, 0, extract)
    )
    assert clips and all(isinstance(c, Clip) for c in clips)
    for c in clips:
        picture = decode_clip(c.data, FrameSamplingConfig()).frames
        if crop:
            # 320x180 picture: its short side already under split.extract.short_side, so not scaled.
            assert (c.width, c.height) == (320, 180) and picture.shape[1:3] == (180, 320)
            assert content_box(picture, CFG).border_fraction == 0.0
            box = c.crop_box
            assert box is not None and (box.x, box.w) == (0, 320)
            assert abs(box.y - 30) <= 2 and abs(box.h - 180) <= 2
        else:
            assert (c.width, c.height) == (320, 240)
            assert c.crop_box is None
            assert content_box(picture, CFG).border_fraction > 0.2
    # the split job's one-pass path crops the same way and records the same box
    from curate.single_pass import SinglePass
    from media.decode import Deadline

    run = SinglePass(
        video, cfg.model_copy(update={"extract": extract}), probe.width, probe.height, Deadline(None)
    )
    assert [(c.data, c.crop_box) for c in run.run()] == [(c.data, c.crop_box) for c in clips]

"""Camera motion apart from object motion: known camera moves over real photographs, and the sample footage.

Moves follow the conventions of curate/camera.py (tests/camera_clips.py renders them): pan_left = the
content moves right, tilt_up = the content moves down, zoom_in = the content grows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from camera_clips import Move, MovingObject, clip, labelled_moves, render
from score_clips import encode_mp4, sample_shots, store_with

from curate.camera import FRAME_RADIUS, LABELS, CameraScores
from curate.config import CameraConfig, FrameSamplingConfig, MotionConfig, ScoreConfig
from curate.frames import decode_clip
from curate.motion import MotionScorer
from pipelines.sample_footage import load_ground_truth

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("motion_columns.py")
MOTION = MotionConfig()
SCORER = MotionScorer(MOTION, CameraConfig())
# Textured photographs: a camera model needs texture over most of the frame to be measured at all.
PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry")
# (sensor noise std in grey levels, x264 crf), cycled over the clips.
CONDITIONS = ((0.0, 20), (4.0, 30), (2.0, 26))


def camera(data: bytes) -> CameraScores:
    frames = decode_clip(
        data,
        FrameSamplingConfig(),
        motion_width=MOTION.width,
        motion_run_length=MOTION.run_length,
        motion_points=MOTION.points,
    )
    scores = SCORER.measure(frames)[1]
    assert scores is not None
    return scores


def _other(photo: str) -> str:
    return "astronaut" if photo != "astronaut" else "chelsea"


@pytest.mark.slow
def test_known_camera_moves_are_labelled_over_noise_compression_and_moving_objects():
    cases: list[tuple[str, bytes, Move]] = []
    for p, photo in enumerate(PHOTOS):
        for m, move in enumerate(labelled_moves()):
            noise, crf = CONDITIONS[(p + m) % len(CONDITIONS)]
            cases.append((photo, clip(photo, move, noise=noise, crf=crf, seed=m), move))
        # A subject walking through a pan, a tilt and a static shot does not change the camera's label.
        subject = MovingObject(_other(photo), 0.25, (0.0, 0.3), start=(0.6, 0.15))
        moves = (Move("pan_left", shift=(0.15, 0.0)), Move("tilt_up", shift=(0.0, 0.15)), Move("static"))
        cases.extend((photo, clip(photo, move, noise=3.0, crf=26, obj=subject), move) for move in moves)
    results = [(photo, move, camera(data)) for photo, data, move in cases]
    wrong = [(photo, move, s.camera_motion) for photo, move, s in results if s.camera_motion != move.label]
    assert len(wrong) <= 0.05 * len(results), wrong
    assert {move.label for _, move, _ in results} == set(LABELS)
    for _, move, s in results:
        assert s.camera_error is None and s.camera_motion_confidence is not None
        assert 0.0 <= s.camera_motion_confidence <= 1.0
        if move.label.startswith(("pan", "tilt")) and move.shake == 0:
            # Speed in frame fractions per second: the shift the footage was rendered with.
            assert s.camera_speed == pytest.approx(float(np.hypot(*move.shift)), rel=0.15, abs=0.01)
    by_label = Counter(move.label for _, move, s in results if s.camera_motion == move.label)
    assert all(by_label[label] > 0 for label in LABELS), by_label


@pytest.mark.slow
def test_object_motion_is_high_for_a_subject_and_low_for_camera_moves_of_similar_speed():
    for speed in (0.15, 0.3):
        subjects, cameras = [], []
        for p, photo in enumerate(PHOTOS):
            noise, crf = CONDITIONS[p % len(CONDITIONS)]
            subject = MovingObject(_other(photo), 0.25, (speed, 0.0))
            still = camera(clip(photo, Move("static"), noise=noise, crf=crf, obj=subject))
            # A static camera filming a moving subject: static, and the motion is the subject's.
            assert still.camera_motion == "static" and still.camera_speed < 0.01
            subjects.append(still.object_motion)
            # Zoom rate giving the same mean displacement over the frame as the pan.
            for move in (
                Move("pan_left", shift=(speed, 0.0)),
                Move("tilt_down", shift=(0.0, -speed)),
                Move("zoom_in", zoom=speed / FRAME_RADIUS),
                Move("zoom_out", zoom=-speed / FRAME_RADIUS),
            ):
                moved = camera(clip(photo, move, noise=noise, crf=crf))
                assert moved.camera_motion == move.label
                assert moved.camera_speed == pytest.approx(speed, rel=0.15)
                cameras.append(moved.object_motion)
        assert np.mean(subjects) > 3 * np.mean(cameras), (speed, subjects, cameras)
        assert min(subjects) > max(cameras), (speed, subjects, cameras)


EXPECTED_SAMPLE = {
    "static": "static",
    "pan": "pan_right",
    "fast_pan": "pan_right",
    "zoom": "zoom_in",
    "shake": "shaky",
}


def test_sample_footage_shots_are_labelled_and_the_unmeasurable_ones_say_why(sample_footage):
    """The sample's camera moves: its pans move the view right over the photo (content moves left)."""
    seen = []
    for movie in ("cuts.mp4", "looks.mp4", "vp9.webm", "vfr.mp4"):
        truth = {s["label"]: s for s in load_ground_truth(sample_footage / movie)["shots"]}
        for name, frames in sample_shots(sample_footage, movie).items():
            s = camera(encode_mp4(frames))
            shot = truth[name]
            if shot["look"] == "dark":
                assert (
                    s.camera_motion is None
                    and s.camera_speed is None
                    and "too dark" in (s.camera_error or "")
                )
            elif shot["photo"] == "colorwheel":
                # A smooth hue wheel: too little texture for flow, so no label rather than a guess.
                assert s.camera_motion is None and "texture" in (s.camera_error or "")
            else:
                seen.append((name, EXPECTED_SAMPLE[shot["motion"]], s.camera_motion))
    wrong = [case for case in seen if case[1] != case[2]]
    assert not wrong and len(seen) >= 11, seen


def test_too_short_or_flat_clips_get_nulls_with_the_reason():
    two_frames = camera(clip("astronaut", Move("pan_left", shift=(0.2, 0.0)), frames=2))
    assert two_frames.camera_motion is None and "too short" in (two_frames.camera_error or "")
    grey = [np.full((144, 256, 3), 128, np.uint8)] * 30
    flat = camera(encode_mp4(grey))
    assert (
        flat.camera_motion is None and flat.object_motion is None and "texture" in (flat.camera_error or "")
    )


def test_camera_needs_dense_flow():
    with pytest.raises(ValueError, match=r"score\.camera\.enabled"):
        ScoreConfig(motion=MotionConfig(method="codec_mvs"))
    assert not ScoreConfig(
        motion=MotionConfig(method="codec_mvs"), camera=CameraConfig(enabled=False)
    ).camera.enabled


def test_score_job_writes_the_camera_columns_and_the_reason(tmp_store):
    from pipelines.jobs.score import decode_and_measure, score_schema, to_staged_table

    store_with(
        tmp_store,
        {
            "v:pan": clip("coffee", Move("pan_left", shift=(0.2, 0.0))),
            "v:short": clip("coffee", Move("static"), frames=2),
        },
    )
    cfg = ScoreConfig(aesthetic={"enabled": False}, embedding={"enabled": False}, ocr={"enabled": False})
    work = tmp_store.work_list()
    batch = {"clip_id": work.rows["clip_id"].to_numpy(), "_rowid": work.rows["_rowid"].to_numpy()}
    table = to_staged_table(
        decode_and_measure(batch, str(tmp_store.root), work.version, cfg, 0), score_schema(cfg, None)
    )
    assert table.schema.field("camera_motion").type == pa.string()
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert rows["v:pan"]["camera_motion"] == "pan_left" and rows["v:pan"]["camera_error"] is None
    assert rows["v:pan"]["camera_speed"] == pytest.approx(0.2, rel=0.15)
    short = rows["v:short"]
    assert short["score_error"] is None and short["motion"] is not None  # the other scores stay
    assert (
        short["camera_motion"] is None
        and short["camera_speed"] is None
        and "too short" in short["camera_error"]
    )


def test_speeds_are_per_second_whatever_the_frame_rate():
    frames = render("chelsea", Move("pan_right", shift=(-0.2, 0.0)), frames=60)
    at_25 = camera(encode_mp4(frames, fps=25))
    at_50 = camera(encode_mp4(frames, fps=50))  # the same frames played twice as fast
    assert at_25.camera_motion == at_50.camera_motion == "pan_right"
    assert at_50.camera_speed == pytest.approx(2 * at_25.camera_speed, rel=0.1)


def test_a_clips_motion_and_camera_columns_do_not_depend_on_the_process_threads_or_order(tmp_path):
    """Two fresh processes, one OpenCV thread and two, the clips in opposite orders through one scorer:
    the same bytes give the same scores to the last digit (a cluster's nodes and one node agree)."""
    moves = {
        "pan": ("astronaut", Move("pan_left", shift=(0.15, 0.0)), None),
        "zoom": ("coffee", Move("zoom_in", zoom=0.25), None),
        "shaky": ("chelsea", Move("shaky", shake=0.02), None),
        "subject": ("immunohistochemistry", Move("static"), MovingObject("astronaut", 0.25, (0.3, 0.0))),
        "roll": ("coffee", Move("complex", roll=0.4), None),
    }
    paths = []
    for name, (photo, move, subject) in moves.items():
        paths.append(tmp_path / f"{name}.mp4")
        paths[-1].write_bytes(clip(photo, move, noise=2.0, crf=26, obj=subject, frames=40))

    def columns(threads: int, order: list[Path]) -> dict:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        }
        out = subprocess.run(
            [sys.executable, str(DRIVER), str(threads), *map(str, order)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    one_thread = columns(1, paths)
    assert columns(2, paths[::-1]) == one_thread
    assert {scores["camera_motion"] for scores in one_thread.values()} >= {"'pan_left'", "'zoom_in'"}

"""The camera, border and overlay columns reach the store, the filter, and both reports."""

from __future__ import annotations

import numpy as np
import pytest
from camera_clips import Move, clip
from score_clips import encode_mp4, store_with

from curate.config import ScoreConfig
from pipelines.jobs.score import decode_and_measure, model_records, score_schema, to_staged_table
from pipelines.report import build_report
from pipelines.report.scores_text import render
from store import CLIPS, ColumnStaging


def test_camera_columns_in_store_filter_and_reports(tmp_store):
    store_with(
        tmp_store,
        {
            "v:pan": clip("coffee", Move("pan_left", shift=(0.2, 0.0))),
            "v:zoom": clip("astronaut", Move("zoom_in", zoom=0.4)),
            "v:still": clip("chelsea", Move("static")),
            "v:short": clip("coffee", Move("static"), frames=2),
        },
    )
    cfg = ScoreConfig(
        aesthetic={"enabled": False},
        embedding={"enabled": False},
        ocr={"enabled": False},
        dedup={"enabled": False},
    )
    work = tmp_store.work_list()
    batch = {"clip_id": work.rows["clip_id"].to_numpy(), "_rowid": work.rows["_rowid"].to_numpy()}
    measured = decode_and_measure(batch, str(tmp_store.root), work.version, cfg, 0)
    table = to_staged_table(measured, score_schema(cfg, None))
    staging = ColumnStaging(tmp_store, "score")
    staging.append(table)
    staging.merge_into_clips(config=cfg.model_dump(mode="json"), models=model_records(cfg))
    rows = {
        r["clip_id"]: r
        for r in tmp_store.read_clips(
            columns=["clip_id", "camera_motion", "caption_camera", "caption_motion", "content_box"]
        ).to_pylist()
    }
    assert rows["v:pan"]["camera_motion"] == "pan_left" and rows["v:pan"]["caption_camera"].startswith(
        "the camera pans left"
    )
    assert rows["v:still"]["caption_camera"] == "static camera"
    assert rows["v:still"]["caption_motion"] == "nothing in the scene moves"
    assert rows["v:short"]["camera_motion"] is None and rows["v:short"]["caption_camera"] is None
    assert rows["v:pan"]["content_box"] == {"x": 0, "y": 0, "w": 256, "h": 144}

    chosen = tmp_store.read(
        CLIPS,
        ["clip_id"],
        filter="camera_motion != 'shaky' AND camera_motion != 'complex' AND border_fraction <= 0.3",
    )
    assert chosen.num_rows == 3  # the unmeasured clip is never selected by a camera rule (Lance SQL)

    text = render(tmp_store)
    assert "camera_motion: static 1, pan_left 1, zoom_in 1, not measured 1" in text
    assert "camera_speed" in text and "object_motion" in text and "border_fraction" in text
    html = build_report(tmp_store, thumbnails=4)
    assert (
        "id='camera'" in html and "data-camera='pan_left'" in html and "data-camera='(not measured)'" in html
    )


@pytest.mark.slow
def test_score_job_keeps_every_outcome_of_the_camera(ray_session, tmp_store):
    """The job on Ray with a clip that fails, two the camera cannot measure and one it can, one per
    decode batch and re-batched by the OCR actors: every outcome lands with its reason."""
    from pipelines.config import parse_config
    from pipelines.jobs.score import run_score

    store_with(
        tmp_store,
        {
            "v:pan": clip("coffee", Move("pan_left", shift=(0.2, 0.0))),
            "v:broken": b"not a video",
            "v:short": clip("coffee", Move("static"), frames=2),
            "v:dark": encode_mp4([np.zeros((144, 256, 3), np.uint8)] * 20),
        },
    )
    config = parse_config(
        {
            "store": {"root": str(tmp_store.root)},
            "score": {
                "aesthetic": {"enabled": False},
                "embedding": {"enabled": False},
                "ocr": {"batch_size": 4},
                "dedup": {"enabled": False},
                "decode_batch_size": 1,
                "commit_every": 8,
            },
        }
    )
    summary = run_score(config, progress=False)
    assert summary.scored == 4 and summary.failed == 1
    rows = {
        r["clip_id"]: r
        for r in tmp_store.read_clips(
            columns=["clip_id", "score_error", "camera_motion", "camera_error"]
        ).to_pylist()
    }
    assert rows["v:pan"]["camera_motion"] == "pan_left" and rows["v:pan"]["score_error"] is None
    assert rows["v:broken"]["score_error"] and rows["v:broken"]["camera_error"] is None
    assert "too short" in rows["v:short"]["camera_error"] and "too dark" in rows["v:dark"]["camera_error"]

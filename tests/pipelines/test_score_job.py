"""The score job end to end on Ray: staged + merged columns, resume, errors kept, dedup, filter, report."""

from __future__ import annotations

import json

import pytest
import torch
from score_clips import decode_all, encode_mp4, sample_shots, store_with

from curate.aesthetic import MissingWeightsError
from pipelines.config import parse_config
from pipelines.jobs.filter import run_filter
from pipelines.jobs.score import run_score
from pipelines.report.scores_text import render
from store import ColumnStaging

TINY_TOWER = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.mark.slow
def test_score_job_resumes_dedups_filters_and_reports(ray_session, sample_footage, tmp_store, tmp_path):
    import open_clip
    from safetensors.torch import save_file

    tower_dir = tmp_path / "tiny_tower"
    tower_dir.mkdir()
    (tower_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_TOWER}))
    torch.manual_seed(0)
    save_file(
        {k: v.contiguous() for k, v in open_clip.CLIP(**TINY_TOWER).state_dict().items()},
        str(tower_dir / "open_clip_model.safetensors"),
    )
    shots = sample_shots(sample_footage, "cuts.mp4")
    clips = {f"v:{name}": encode_mp4(frames) for name, frames in shots.items()}
    clips["v:static_copy"] = encode_mp4(decode_all(clips["v:static_coffee"]), crf=32)
    clips["v:broken"] = b"definitely not an mp4"
    store_with(tmp_store, clips)
    cfg = parse_config(
        {
            "store": {"root": str(tmp_store.root)},
            "score": {
                "image_tower": {"model": f"local-dir:{tower_dir}", "allow_random_weights": True},
                "ocr": {"enabled": False},
                "dedup": {"signature": "frame_signature", "threshold": 0.9},
                "commit_every": 2,
            },
            "filter": {"expression": "motion > 0.0005 and duplicate_of is null"},
        }
    )
    strict = cfg.model_copy(
        update={
            "score": cfg.score.model_copy(
                update={
                    "image_tower": cfg.score.image_tower.model_copy(update={"allow_random_weights": False})
                }
            )
        }
    )
    with pytest.raises(MissingWeightsError, match="head_checkpoint"):
        run_score(strict, progress=False)  # refused on the driver: no aesthetic head, randoms not allowed
    first = run_score(cfg, progress=False)
    assert first.scored == len(clips) and first.errors == 1 and first.duplicates == 1
    assert (
        "aesthetic" in first.placeholders and "image_tower" not in first.placeholders
    )  # trained tower, random head
    table = tmp_store.read_clips(
        columns=[
            "clip_id",
            "score_error",
            "motion",
            "clip_embedding",
            "aesthetic_mean",
            "duplicate_of",
            "too_dark",
        ]
    ).to_pylist()
    rows = {r["clip_id"]: r for r in table}
    assert rows["v:broken"]["score_error"] and rows["v:broken"]["motion"] is None
    assert rows["v:static_copy"]["duplicate_of"] == "v:static_coffee"
    assert len(rows["v:pan_astronaut"]["clip_embedding"]) == 32 and rows["v:pan_astronaut"]["aesthetic_mean"]
    assert rows["v:fast_pan_chelsea"]["motion"] > 10 * rows["v:static_coffee"]["motion"]

    again = run_score(cfg, progress=False)  # resume: nothing left to score
    assert again.scored == 0 and again.skipped_done == len(clips)
    assert ColumnStaging(tmp_store, "score").done_row_ids() is None  # merged, so the staging is gone

    summary = run_filter(cfg)
    selected = {
        r["clip_id"]
        for r in tmp_store.read_clips(columns=["clip_id", "selected"]).to_pylist()
        if r["selected"]
    }
    assert (
        "v:broken" not in selected and "v:static_copy" not in selected and "v:static_coffee" not in selected
    )
    assert "v:fast_pan_chelsea" in selected and summary.selected == len(selected)
    assert (
        tmp_store.stage_records()["filter"]["config"]["expression"]
        == "motion > 0.0005 AND duplicate_of IS NULL"  # canonical SQL
    )
    report = render(tmp_store)
    assert "motion > 0.0005" in report and "PLACEHOLDER" in report and "aesthetic_mean" in report


@pytest.mark.parametrize("decode_num_cpus", [0.5, 2])
def test_score_decode_task_gives_opencv_its_cpus(sample_footage, tmp_store, decode_num_cpus):
    """The CPU scorers run OpenCV, whose own pool ignores OMP_NUM_THREADS: the task sizes it."""
    import cv2

    from pipelines.jobs.score import decode_and_measure

    shots = sample_shots(sample_footage, "cuts.mp4")
    store_with(tmp_store, {f"v:{name}": encode_mp4(frames) for name, frames in list(shots.items())[:2]})
    cfg = parse_config(
        {
            "store": {"root": str(tmp_store.root)},
            "score": {
                "decode_num_cpus": decode_num_cpus,
                "aesthetic": {"enabled": False},
                "embedding": {"enabled": False},
                "ocr": {"enabled": False},
            },
        }
    ).score
    before = cv2.getNumThreads()
    cv2.setNumThreads(8)
    try:
        work = tmp_store.work_list()
        batch = {"clip_id": work.rows["clip_id"].to_numpy(), "_rowid": work.rows["_rowid"].to_numpy()}
        out = decode_and_measure(batch, str(tmp_store.root), work.version, cfg, 0)
        assert len(out["clip_id"]) == 2 and not any(out["score_error"])
        assert cv2.getNumThreads() == max(1, int(decode_num_cpus))
    finally:
        cv2.setNumThreads(before)

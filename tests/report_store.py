"""A small real dataset for the report and notebook tests, built without Ray in ~10-20 s.

Clips come from curate's real splitter (probe, PySceneDetect, PyAV extraction) on two files of the
built-in sample footage, a remuxed copy of one of them (same frames, other bytes: exact duplicates
for the dedup section) and a file that is not a video (a failed row with its reason). Scores come
from curate's real motion and quality scorers and a random-weight image tower + aesthetic head (recorded as
placeholders, as the demo does); captions are the footage's ground-truth shot descriptions; the
filter is evaluated with curate's filter language. Rows and stage records go through store
the same way the jobs write them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from synthetic_store import selected_by

from curate.config import (
    CameraConfig,
    DedupConfig,
    FrameSamplingConfig,
    MotionConfig,
    QualityConfig,
    ScoreConfig,
)
from curate.dedup import find_duplicates, frame_signature
from curate.describe import with_descriptions
from curate.frames import FrameDecodeError, decode_clip, tower_input
from curate.image_tower import ImageTowerStage
from curate.motion import MotionScorer
from curate.quality import QualityScorer
from curate.split_config import SplitConfig
from curate.split_file import VideoSplit
from media import remux
from pipelines.jobs.split_worker import clip_row
from store import CLIPS, CLIPS_SCHEMA, VIDEOS, VIDEOS_SCHEMA, Store
from store.filters import parse_filter

SOURCES = ("cuts.mp4", "looks.mp4")
# The random aesthetic head's placeholder scores centre on 0: its rule keeps every clip and still puts a
# threshold on the placeholder histogram.
FILTER = "motion > 0.0005 and technical_quality >= 0.3 and aesthetic_mean >= -1 and duplicate_of is null"
# A small image tower keeps the placeholder aesthetic scores cheap; its weights are random.
SCORE_CFG = ScoreConfig(
    frames=FrameSamplingConfig(count=3),
    image_tower={"model": "ViT-S-32", "allow_random_weights": True},
    ocr={"enabled": False},
    dedup=DedupConfig(signature="frame_signature"),
)


def report_store_for(tmp_path_factory, footage: Path) -> Store:
    """One dataset per test session, shared by the report and notebook tests (built on first use)."""
    root = tmp_path_factory.getbasetemp() / "report-dataset"
    done = root / "complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way is started over
        build_report_store(root, footage)
        done.touch()
    return Store(root / "store")


def build_report_store(root: Path, footage: Path) -> Store:
    work = root / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    remux(footage / "cuts.mp4", work / "cuts_copy.mkv")
    (work / "broken.mp4").write_bytes(b"not a video, just text with a video extension\n")
    inputs = [footage / name for name in SOURCES] + [work / "cuts_copy.mkv", work / "broken.mp4"]
    store = split_into(Store(root / "store"), inputs)
    _score(store)
    _dedup(store)
    _filter(store)
    captions = {}
    for row in store.read_clips(["clip_id", "uri", "start_s"]).to_pylist():
        captions[row["clip_id"]] = _ground_truth_caption(Path(row["uri"]), row["start_s"], footage)
    ids = list(captions)
    store.add_columns(
        pa.table({"clip_id": ids, "caption": [captions[c] for c in ids]}),
        stage="caption",
        config={"source": "sample footage ground truth"},
        models={"source": "ground truth", "placeholder": False},
    )
    return store


def split_into(store: Store, inputs: list[Path]) -> Store:
    """Split files with curate's splitter and write videos + clips rows as the split job does."""
    store.root.mkdir(parents=True, exist_ok=True)
    store.create(VIDEOS)
    store.create(CLIPS)
    split_cfg = SplitConfig()
    for path in inputs:
        split = VideoSplit(path, split_cfg)
        rows = [clip_row(split.video_id, str(path), clip) for clip in split.clips()]
        if rows:
            store.append(CLIPS, pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA))
        probe = split.probe.as_row() if split.probe is not None else {}
        video = {name: probe.get(name) for name in VIDEOS_SCHEMA.names if name in probe}
        video.update(
            video_id=split.video_id,
            uri=str(path),
            num_clips=len(rows),
            status=split.status,
            error=split.error,
            boundaries=[b.as_dict() for b in split.boundaries],
            pipeline_version="test",
            processed_at=dt.datetime.now(dt.UTC),
        )
        store.append(VIDEOS, pa.Table.from_pylist([video], schema=VIDEOS_SCHEMA))
    store.record(VIDEOS, "split", {"config": split_cfg.model_dump(mode="json"), "version": "test"})
    return store


def _ground_truth_caption(path: Path, start_s: float, footage: Path) -> str:
    gt_file = footage / (path.name + ".gt.json")
    if not gt_file.is_file():  # the remuxed copy shares the ground truth of its source
        gt_file = footage / "cuts.mp4.gt.json"
    shots = json.loads(gt_file.read_text())["shots"]
    shot = next((s for s in shots if s["start_s"] <= start_s + 1e-6 < s["end_s"]), shots[-1])
    look = "" if shot["look"] == "normal" else f"{shot['look']} "
    return (
        f"a {look}{shot['motion'].replace('_', ' ')} shot of the {shot['photo'].replace('_', ' ')} photograph"
    )


def _score(store: Store) -> None:
    cfg = SCORE_CFG
    table = store.read_clips(["clip_id"])
    ids = table.column("clip_id").to_pylist()
    blobs = store.read_clip_bytes(ids)
    motion, quality = MotionScorer(MotionConfig(), CameraConfig()), QualityScorer(QualityConfig())
    stage = ImageTowerStage(cfg)
    size = stage.tower.image_size
    rows, pixels = [], []
    for cid in ids:
        row: dict = {"clip_id": cid, "score_error": None}
        try:
            frames = decode_clip(
                blobs[cid], cfg.frames, motion_width=cfg.motion.width, motion_run_length=cfg.motion.run_length
            )
            motion_scores, camera_scores = motion.measure(frames)
            row.update(vars(motion_scores), **vars(camera_scores), **vars(quality(frames.frames)))
            row["content_hash"] = frames.content_hash()
            row["frame_signature"] = frame_signature(frames.frames).tolist()
            pixels.append(tower_input(frames.frames, size))
        except FrameDecodeError as err:
            row["score_error"] = str(err)
            pixels.append(np.zeros((0, size, size, 3), np.uint8))
        rows.append(row)
    out = stage({"tower_pixels": pixels})
    for row, a_mean, a_min in zip(rows, out["aesthetic_mean"], out["aesthetic_min"], strict=True):
        row["aesthetic_mean"], row["aesthetic_min"] = float(a_mean), float(a_min)
    models = {
        "motion": {"method": cfg.motion.method, "placeholder": False},
        "camera": {"model": "similarity fitted with RANSAC to the motion flow", "placeholder": False},
        "quality": {"measures": ["sharpness", "technical_quality"], "placeholder": False},
        "image_tower": {**stage.tower.describe(), "columns": []},
        "aesthetic": {"placeholder": True, "columns": ["aesthetic_mean", "aesthetic_min"]},
    }
    store.add_columns(
        with_descriptions(pa.Table.from_pylist(rows)),
        stage="score",
        config=cfg.model_dump(mode="json"),
        models=models,
    )


def _dedup(store: Store) -> None:
    table = store.read_clips(["clip_id", "content_hash", "frame_signature"])
    vectors = np.asarray(table["frame_signature"].to_pylist(), dtype=np.float32)
    cfg = SCORE_CFG.dedup
    dup = find_duplicates(table["clip_id"].to_pylist(), table["content_hash"].to_pylist(), vectors, cfg)
    store.add_columns(
        pa.table({"clip_id": table["clip_id"], "duplicate_of": pa.array(dup, pa.string())}),
        stage="dedup",
        config=cfg.model_dump(mode="json"),
        models={"signature": "frame_signature", "placeholder": False},
    )


def _filter(store: Store) -> None:
    checked = parse_filter(FILTER, "filter.expression")
    table = store.read_clips(sorted(checked.columns | {"clip_id"}))
    mask = selected_by(FILTER, table)
    store.add_columns(
        pa.table({"clip_id": table["clip_id"], "selected": mask}),
        stage="filter",
        config={
            "expression": checked.sql,
            "source_expression": FILTER,
            "evaluated_on_version": store.require(CLIPS).version,
        },
    )

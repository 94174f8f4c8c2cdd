"""The score stage's CPU part on a batch of clips: decode each clip once, measure it, and prepare
the model stages' inputs.

Each clip is decoded once (curate.frames); motion (and camera motion, on the same flow), borders,
technical quality and the duplicate signature are measured on its sampled frames, and the frames
the model stages take (the image tower's square input, the OCR frames) are resized here, so the
model stages only run their networks. A clip that cannot be decoded gets `score_error` and
placeholder values. Nothing here knows Ray: pipelines/jobs/score.py reads the blobs and runs this
as its CPU tasks, which is also why nothing here imports torch (every task would pay seconds to).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa

from curate.borders import content_box
from curate.camera import CameraScores
from curate.config import ScoreConfig
from curate.dedup import frame_signature
from curate.frames import FrameDecodeError, decode_clip, tower_input
from curate.motion import MotionScorer, MotionScores
from curate.ocr import ocr_input
from curate.quality import QualityScorer, QualityScores
from store import contract

SIGNATURE_SIZE = 4 * 16 * 16  # frame_signature(): 4 frames of 16x16


def runs_image_tower(cfg: ScoreConfig) -> bool:
    """Does the score config need the image tower (aesthetic or embedding)?"""
    return cfg.aesthetic.enabled or cfg.embedding.enabled


def signature_wanted(cfg: ScoreConfig) -> set[str]:
    """The signature columns the dedup config needs measured."""
    return {"frame_signature"} if cfg.dedup.enabled and cfg.dedup.signature == "frame_signature" else set()


def measure_clips(
    clip_ids: Sequence[str], blobs: Mapping[str, bytes], cfg: ScoreConfig, tower_size: int
) -> dict[str, Any]:
    """The CPU scores and model inputs of each clip (its MP4 bytes in `blobs`) as a batch of columns."""
    motion = MotionScorer(cfg.motion, cfg.camera) if cfg.motion.enabled else None
    quality = QualityScorer(cfg.quality) if cfg.quality.enabled else None
    rows: list[dict[str, Any]] = []
    for clip_id in clip_ids:
        row: dict[str, Any] = {
            "clip_id": clip_id,
            "score_error": None,
            "frames_sampled": 0,
            "content_hash": None,
        }
        try:
            data = blobs.get(clip_id)
            if not data:
                raise FrameDecodeError("clip bytes missing from the store")
            frames = decode_clip(
                data,
                cfg.frames,
                motion_width=cfg.motion.width
                if cfg.motion.enabled and cfg.motion.method != "codec_mvs"
                else 0,
                motion_run_length=cfg.motion.run_length,
                motion_points=cfg.motion.points,
                codec_motion_vectors=cfg.motion.enabled and cfg.motion.method == "codec_mvs",
            )
            row["frames_sampled"] = int(frames.frames.shape[0])
            row["content_hash"] = frames.content_hash()
            if motion is not None:
                motion_scores, camera_scores = motion.measure(frames)
                row.update(vars(motion_scores))
                if camera_scores is not None:
                    row.update(vars(camera_scores))
            if cfg.borders.enabled:
                box = content_box(frames.frames, cfg.borders)
                row["content_box"] = np.array([box.x, box.y, box.w, box.h], dtype=np.float64)
                row["border_fraction"] = box.border_fraction
            if quality is not None:
                row.update(vars(quality(frames.frames)))
            if "frame_signature" in signature_wanted(cfg):
                row["frame_signature"] = frame_signature(frames.frames)
            row["tower_pixels"] = tower_input(frames.frames, tower_size) if runs_image_tower(cfg) else None
            row["ocr_frames"] = (
                ocr_input(frames.frames, cfg.ocr.frames, cfg.ocr.max_side) if cfg.ocr.enabled else None
            )
        except (FrameDecodeError, ValueError) as err:
            row["score_error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
    return _columns(rows, cfg, tower_size)


def _columns(rows: list[dict[str, Any]], cfg: ScoreConfig, tower_size: int) -> dict[str, Any]:
    """Rows -> a batch of columns. Failed clips get NaN/False placeholders plus empty model inputs."""
    n = len(rows)
    out: dict[str, Any] = {
        "clip_id": np.array([r["clip_id"] for r in rows], dtype=object),
        "score_error": np.array([r["score_error"] or "" for r in rows], dtype=object),
        "frames_sampled": np.array([r["frames_sampled"] for r in rows], dtype=np.int32),
        "content_hash": np.array([r["content_hash"] or "" for r in rows], dtype=object),
    }
    measured = {}
    if cfg.motion.enabled:
        measured.update(_types(MotionScores))
    if cfg.camera.enabled:
        measured.update(_types(CameraScores))
    if cfg.quality.enabled:
        measured.update(_types(QualityScores))
    for name, typ in measured.items():
        if typ == pa.string():
            # "" for a missing text: a batch whose texts are all None would reach the driver typed as
            # float by Ray's Arrow conversion and clash with the batches that have text.
            out[name] = np.array([r.get(name) or "" for r in rows], dtype=object)
        elif typ == pa.bool_():
            out[name] = np.array([bool(r.get(name, False)) for r in rows])
        else:
            out[name] = np.array([r.get(name, np.nan) for r in rows], dtype=np.float64)
    if cfg.borders.enabled:
        # x, y, w, h as a float row (NaN: not measured) through Ray; a struct in the table.
        out["content_box"] = (
            np.stack([r.get("content_box", np.full(4, np.nan)) for r in rows]) if n else np.zeros((0, 4))
        )
        out["border_fraction"] = np.array([r.get("border_fraction", np.nan) for r in rows], dtype=np.float64)
    if signature_wanted(cfg):
        out["frame_signature"] = (
            np.stack([r.get("frame_signature", np.full(SIGNATURE_SIZE, np.nan, np.float32)) for r in rows])
            if n
            else np.zeros((0, SIGNATURE_SIZE), np.float32)
        )
    if runs_image_tower(cfg):
        out["tower_pixels"] = [
            r.get("tower_pixels")
            if r.get("tower_pixels") is not None
            else np.zeros((0, tower_size, tower_size, 3), np.uint8)
            for r in rows
        ]
    if cfg.ocr.enabled:
        out["ocr_frames"] = [
            r.get("ocr_frames") if r.get("ocr_frames") is not None else np.zeros((0, 1, 1, 3), np.uint8)
            for r in rows
        ]
    return out


def _types(scores: type[MotionScores] | type[CameraScores] | type[QualityScores]) -> dict[str, pa.DataType]:
    """The contract's type of each field of a scorer's result dataclass."""
    return {f.name: contract.COLUMNS[contract.CLIPS][f.name].type for f in fields(scores)}

"""Test support for the score tests: real MP4 clips cut from footage (media module), and a clips table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

import media
from media import read_clip
from pipelines.sample_footage import load_ground_truth
from store import CLIPS, CLIPS_SCHEMA, Store


def encode_mp4(frames: list[np.ndarray], fps: int = 25, crf: int = 20) -> bytes:
    """H.264 MP4 bytes of RGB frames (even sizes)."""
    return media.encode_mp4(frames, fps, crf=crf, preset="veryfast")


def decode_all(path: Path | bytes, limit: int | None = None) -> list[np.ndarray]:
    """Every frame (or the first `limit`) as RGB at decoded size."""
    return list(read_clip(path, indices=range(limit) if limit else None).frames)


def even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])


def sample_shots(footage: Path, movie: str) -> dict[str, list[np.ndarray]]:
    """The frames of each ground-truth shot of a sample movie, by shot label."""
    video = footage / movie
    frames = decode_all(video)
    truth = load_ground_truth(video)
    return {s["label"]: frames[s["start_frame"] : s["end_frame"] + 1] for s in truth["shots"]}


def clips_table(clips: dict[str, bytes]) -> pa.Table:
    n = len(clips)
    rows = {name: [None] * n for name in CLIPS_SCHEMA.names}
    rows.update(
        clip_id=list(clips),
        video_id=[cid.split(":")[0] for cid in clips],
        clip_index=list(range(n)),
        start_s=[0.0] * n,
        video=list(clips.values()),
        size_bytes=[len(b) for b in clips.values()],
    )
    return pa.table(rows, schema=CLIPS_SCHEMA)


def store_with(store: Store, clips: dict[str, bytes]) -> Store:
    store.append(CLIPS, clips_table(clips))
    return store

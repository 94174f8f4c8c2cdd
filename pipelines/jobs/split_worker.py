"""Worker side of `reelforge split`: one input file -> its `videos` row and its clips written as Lance
fragments. A split task imports this module only (not the driver's job code, its config composition or
its progress bars), so the worker that runs the first file starts on it sooner; the driver prestarts
one with these imports done (pipelines.runtime.prestart_worker).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.clip_output import Clip
from curate.clip_plan import clip_id
from curate.probe import content_id, path_id
from curate.split_config import SplitConfig
from curate.split_file import VideoSplit
from media.decode import use_cpus
from store import CLIPS_SCHEMA, write_fragment_json

# Clip bytes a worker holds before writing them out as a fragment: with the Arrow copy made when
# writing, this bounds the worker's memory beyond one decode pass whatever the video's length.
_FRAGMENT_BYTES = 16 << 20


def pipeline_version() -> str:
    """The installed reelforge version, recorded with each split."""
    try:
        return metadata.version("reelforge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def split_one(path: str, cfg: SplitConfig, clips_uri: str, done: frozenset[str]) -> dict[str, Any]:
    """Worker side: one file -> {video row, clip fragment JSON}. Never raises for a bad file."""
    started = time.monotonic()
    use_cpus(cfg.num_cpus)
    # Only regular files are hashed: opening a named pipe (or a device) would block the task forever.
    # Anything not hashed gets a path-based id, and the probe names the reason.
    identity: tuple[str, int] | None = None
    try:
        if Path(path).is_file():
            identity = content_id(Path(path), cfg.probe.hash_chunk_bytes)
    except OSError:
        identity = None
    video_id = identity[0] if identity is not None else path_id(Path(path))
    if video_id in done:
        return {"path": path, "video_id": video_id, "skipped": True, "row": "", "fragments": [], "clips": 0}
    split = VideoSplit(path, cfg, identity=identity)
    fragments: list[str] = []
    rows: list[dict[str, Any]] = []
    held = 0
    clips_kept: list[str] = []
    for clip in split.clips():
        row = clip_row(split.video_id, path, clip)
        rows.append(row)
        clips_kept.append(row["clip_id"])
        held += len(clip.data)
        if held >= _FRAGMENT_BYTES:
            fragments += write_fragment_json(
                clips_uri, pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA), CLIPS_SCHEMA
            )
            rows, held = [], 0
    if split.status == "error":
        # A file that ends as an error row has no clips: anything written stays uncommitted.
        fragments, rows, clips_kept = [], [], []
    if rows:
        fragments += write_fragment_json(
            clips_uri, pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA), CLIPS_SCHEMA
        )
    video_row = _video_row(split, path, len(clips_kept))
    return {
        "path": path,
        "video_id": split.video_id,
        "skipped": False,
        "row": json.dumps(video_row, default=str),
        "fragments": fragments,
        "clips": len(clips_kept),
        "seconds": time.monotonic() - started,
    }


def clip_row(video_id: str, uri: str, clip: Clip) -> dict[str, Any]:
    """The clips-table row of one clip of the video."""
    plan = clip.plan
    return {
        "clip_id": clip_id(video_id, plan.start_s),
        "video_id": video_id,
        "uri": uri,
        "clip_index": plan.index,
        "start_s": plan.start_s,
        "end_s": plan.end_s,
        "start_frame": plan.start_frame,
        "end_frame": plan.end_frame,
        "num_frames": clip.num_frames,
        "fps": clip.fps,
        "width": clip.width,
        "height": clip.height,
        "codec": clip.codec,
        "size_bytes": len(clip.data),
        "video": clip.data,
        "thumbnail": clip.thumbnail,
        "crop_box": None if clip.crop_box is None else clip.crop_box.as_dict(),
    }


def _video_row(split: VideoSplit, uri: str, num_clips: int) -> dict[str, Any]:
    probe = split.probe
    base = probe.as_row() if probe is not None else {}
    return {
        "video_id": split.video_id,
        "uri": uri,
        "size_bytes": base.get("size_bytes", 0),
        "container": base.get("container", ""),
        "codec": base.get("codec", ""),
        "width": base.get("width", 0),
        "height": base.get("height", 0),
        "rotation": base.get("rotation", 0),
        "nominal_fps": base.get("nominal_fps", 0.0),
        "avg_fps": base.get("avg_fps", 0.0),
        "is_vfr": base.get("is_vfr", False),
        "duration_s": base.get("duration_s", 0.0),
        "num_frames": base.get("num_frames", 0),
        "has_audio": base.get("has_audio", False),
        "boundaries": [b.as_dict() for b in split.boundaries],
        "num_clips": num_clips,
        "status": split.status,
        "error": split.error,
        "pipeline_version": pipeline_version(),
        "processed_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def scan_one(path: str, cfg: SplitConfig) -> dict[str, Any]:
    """Worker side of --scenes-only: boundaries of one file, no clips."""
    use_cpus(cfg.num_cpus)
    split = VideoSplit(path, cfg, scenes_only=True)
    for _ in split.clips():
        pass
    probe = split.probe
    return {
        "entry": json.dumps(
            {
                "path": path,
                "status": split.status,
                "error": split.error,
                "fps": probe.nominal_fps if probe else 0.0,
                "num_frames": probe.num_frames if probe else 0,
                "boundaries": [b.as_dict() for b in split.boundaries],
            }
        )
    }

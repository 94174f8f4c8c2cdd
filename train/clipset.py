"""Write a small captioned `clips` table straight from footage files.

The split and caption stages produce the real table; this cuts named frame ranges out of files
(media.read_clip, resize, media.encode_mp4) and writes rows in the store's clips schema plus a caption
column, so the trainer's tests and benchmark can run on real footage without the whole pipeline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from media import MediaError, encode_mp4, read_clip
from store import CLIPS, ROW_ID, Store


@dataclass(frozen=True)
class ClipSpec:
    """One training clip from a file: its frames and caption."""

    path: Path
    start_frame: int
    num_frames: int
    caption: str


def read_frames(path: Path, start_frame: int, num_frames: int) -> tuple[list[np.ndarray], float]:
    """RGB frames [start_frame, start_frame + num_frames) in decoding order, and the stream's fps."""
    try:
        clip = read_clip(path, indices=range(start_frame, start_frame + num_frames))
    except MediaError as err:
        raise ValueError(f"{path}: {err} (asked for frames {start_frame}+{num_frames})") from err
    return list(clip.frames), clip.nominal_fps


def _resize(frame: np.ndarray, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    height = max(2, round(h * width / w / 2) * 2)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def write_clipset(store: Store, specs: list[ClipSpec], width: int = 128) -> pa.Table:
    """Append one clip per spec (resized to `width`, even height) and add a `caption` column."""
    rows = []
    for index, spec in enumerate(specs):
        frames, fps = read_frames(spec.path, spec.start_frame, spec.num_frames)
        frames = [_resize(f, width) for f in frames]
        data = encode_mp4(frames, fps, crf=18, preset="veryfast")
        video_id = hashlib.sha1(spec.path.read_bytes()).hexdigest()[:16]
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR))
        rows.append(
            {
                "clip_id": f"{video_id}_{spec.start_frame / fps:09.3f}",
                "video_id": video_id,
                "uri": str(spec.path),
                "clip_index": index,
                "start_s": spec.start_frame / fps,
                "end_s": (spec.start_frame + spec.num_frames) / fps,
                "start_frame": spec.start_frame,
                "end_frame": spec.start_frame + spec.num_frames,
                "num_frames": spec.num_frames,
                "fps": fps,
                "width": frames[0].shape[1],
                "height": frames[0].shape[0],
                "codec": "h264",
                "size_bytes": len(data),
                "video": data,
                "thumbnail": jpeg.tobytes() if ok else b"",
                "crop_box": None,  # generated at its own size: nothing cropped
            }
        )
    table = pa.Table.from_pylist(rows)
    store.append(CLIPS, table)
    # add_columns is keyed by the clips' stable row ids: read back those of the rows just appended.
    captions = pa.table({"clip_id": table.column("clip_id"), "caption": [s.caption for s in specs]})
    ids = pa.Table.from_batches(store.scan(CLIPS, ["clip_id"]))
    keyed = captions.join(ids, "clip_id", join_type="inner").select([ROW_ID, "clip_id", "caption"])
    store.add_columns(keyed, stage="caption", config={"source": "clipset"})
    return table

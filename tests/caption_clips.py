"""Real H.264 clips for the caption tests: slow pans over photographs shipped with scikit-image,
and rows for a store's clips table holding them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from media import VideoWriter

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def pan_clip(
    image: np.ndarray, num_frames: int = 24, size: tuple[int, int] = (160, 96), fps: int = 12
) -> bytes:
    """An H.264 MP4 of a window panning across `image` (width, height = size)."""
    width, height = size
    image = image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    max_x, max_y = image.shape[1] - width, image.shape[0] - height
    writer = VideoWriter(width, height, fps)
    for i in range(num_frames):
        x = int(max_x * i / max(1, num_frames - 1))
        y = int(max_y * i / max(1, num_frames - 1) / 3)
        writer.add(np.ascontiguousarray(image[y : y + height, x : x + width]))
    return writer.finish()


def photo_clips(copies: int = 1) -> dict[str, bytes]:
    """clip_id -> MP4 bytes: `copies` clips per photo (24 frames, 2 s, 160x96)."""
    import skimage.data

    return {
        f"clip{i}-{name}": pan_clip(getattr(skimage.data, name)()) for i in range(copies) for name in PHOTOS
    }


def clips_rows(clips: dict[str, bytes]) -> pa.Table:
    """Rows for the store's clips table (the split stage's columns) holding the given clips."""
    from store import CLIPS_SCHEMA

    n = len(clips)
    columns = {
        "clip_id": list(clips),
        "video_id": [f"video-{i}" for i in range(n)],
        "uri": [f"memory://{cid}.mp4" for cid in clips],
        "clip_index": [0] * n,
        "start_s": [0.0] * n,
        "end_s": [2.0] * n,
        "start_frame": [0] * n,
        "end_frame": [24] * n,
        "num_frames": [24] * n,
        "fps": [12.0] * n,
        "width": [160] * n,
        "height": [96] * n,
        "codec": ["h264"] * n,
        "size_bytes": [len(b) for b in clips.values()],
        "video": list(clips.values()),
        "thumbnail": [b""] * n,
        "crop_box": [None] * n,
    }
    return pa.table(columns, schema=CLIPS_SCHEMA)

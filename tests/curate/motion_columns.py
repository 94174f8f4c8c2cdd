"""Score clip files' motion and camera columns in this process; print them as exact reprs (JSON).

Used by test_camera.py in fresh subprocesses, to show a clip's scores do not depend on the process,
OpenCV's thread count or the order clips are scored in.

    python motion_columns.py THREADS CLIP.mp4 [CLIP.mp4 ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

from curate.config import CameraConfig, FrameSamplingConfig, MotionConfig
from curate.frames import decode_clip
from curate.motion import MotionScorer


def main() -> None:
    threads, *paths = sys.argv[1:]
    cv2.setNumThreads(int(threads))
    motion = MotionConfig()
    scorer = MotionScorer(motion, CameraConfig())  # one scorer for every clip, as a score task has
    columns = {}
    for path in paths:
        frames = decode_clip(
            Path(path).read_bytes(),
            FrameSamplingConfig(),
            motion_width=motion.width,
            motion_run_length=motion.run_length,
            motion_points=motion.points,
        )
        motion_scores, camera_scores = scorer.measure(frames)
        assert camera_scores is not None
        columns[Path(path).name] = {
            k: repr(v) for k, v in (vars(motion_scores) | vars(camera_scores)).items()
        }
    print(json.dumps(columns))


if __name__ == "__main__":
    main()

"""Benchmark of the camera-motion scores: what they add to the score job, next to a plain decode of the clip.

The camera model reuses the motion scorer's flow fields (no second decode, no second flow), but needs
DIS to stop one pyramid level finer: level 1 instead of the ultrafast preset's 2, with its 8 px
patches side by side (stride 8, not the preset's 4), 6 gradient-descent steps a patch instead of
12, and no zero initial field (what score.motion.dis_finest_scale, dis_patch_stride and
dis_gradient_iterations pick when the camera runs). It then fits a similarity per frame pair on an
8 px grid. Measured in one process on one thread (one Ray CPU slot), every clip, interleaved
repeats, medians over rounds:

- plain_decode: every frame of the clip decoded (the baseline, as bench/score.py measures it);
- motion_before: the motion scorer without the camera (DIS ultrafast to level 2);
- motion_finer: the motion scorer with the camera's finer flow, no camera;
- motion_camera: the finer flow plus the camera model (what the score job now runs).

Added cost = motion_camera - motion_before, over plain_decode; target <= 0.1. The decode grows with
frames x pixels, the camera work is fixed per clip (points x run pairs flow fields of the small grey
frames plus one fit over them all), so short, small clips are the worst case. On the sample's 2 s
shots the camera's flow adds ~0.035x and the rest ~0.055x: under a hundred numpy and OpenCV calls
a clip, each of whose overhead counts, which is why curate/camera.py fits every pair of a clip at
once and reads texture in one call. On a loaded machine the ratio moves by +-0.01 between runs:
compare runs made together, with --repeats 7 or more.

Clips: the built-in sample footage's shots (2 s, 320x180) and, when ../shared/footage is present,
5 s of two real single-shot files scaled to a 360-pixel short side (what the split writes).
Writes bench/results/camera.json with the load average and prints a markdown table.

    python bench/camera.py [--repeats N] [--no-shared]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.config import CameraConfig, FrameSamplingConfig, MotionConfig  # noqa: E402
from curate.frames import ClipFrames, decode_clip  # noqa: E402
from curate.motion import (  # noqa: E402
    CAMERA_FINEST_SCALE,
    CAMERA_GRADIENT_ITERATIONS,
    CAMERA_PATCH_STRIDE,
    MotionScorer,
)
from media import decode_check, encode_mp4, read_clip  # noqa: E402
from pipelines.sample_footage import load_ground_truth, write_sample_footage  # noqa: E402

SHARED = REPO.parent / "shared" / "footage"
SHARED_FILES = ("singleshot/bigbuckbunny.mp4", "singleshot/flower.mp4")
RESULTS = REPO / "bench" / "results" / "camera.json"
TARGET = 0.1  # added cost / plain decode, at most


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def encode(frames: list[np.ndarray], fps: float) -> bytes:
    """H.264 MP4 bytes as the split writes clips (crf 23, veryfast, one thread)."""
    return encode_mp4(frames, round(fps), crf=23, preset="veryfast")


def even_short_side(short_side: int) -> Callable[[int, int], tuple[int, int]]:
    """The short side scaled to `short_side` when longer, both sides even (4:2:0)."""

    def rule(width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, short_side / min(width, height)) if short_side else 1.0
        return round(width * scale) // 2 * 2, round(height * scale) // 2 * 2

    return rule


def read_frames(
    path: Path, seconds: float | None = None, short_side: int = 0
) -> tuple[list[np.ndarray], float]:
    clip = read_clip(path, size=even_short_side(short_side))
    frames = clip.frames if seconds is None else clip.frames[clip.times_s < seconds]
    return list(frames), clip.nominal_fps


def clips(work: Path, use_shared: bool) -> dict[str, dict[str, bytes]]:
    """{group: {clip name: MP4 bytes}}: the sample footage's shots, and real footage when present."""
    sample: dict[str, bytes] = {}
    for video in write_sample_footage(work):
        frames, fps = read_frames(video)
        for shot in load_ground_truth(video)["shots"]:
            sample[shot["label"]] = encode(frames[shot["start_frame"] : shot["end_frame"] + 1], fps)
    groups = {"sample 2 s 320x180": sample}
    shared = [SHARED / f for f in SHARED_FILES if (SHARED / f).is_file()] if use_shared else []
    if shared:
        groups["real 5 s 360p"] = {
            p.name: encode(*read_frames(p, seconds=5.0, short_side=360)) for p in shared
        }
    return groups


def plain_decode(data: bytes) -> int:
    return decode_check(data, threads=1).frames


def measure(blobs: list[bytes], repeats: int) -> dict[str, Any]:
    motion = MotionConfig()
    decoded: list[ClipFrames] = [
        decode_clip(
            b,
            FrameSamplingConfig(decode_threads=1),
            motion_width=motion.width,
            motion_run_length=motion.run_length,
            motion_points=motion.points,
        )
        for b in blobs
    ]
    before = MotionScorer(motion)
    finer = MotionScorer(
        motion.model_copy(
            update={
                "dis_finest_scale": CAMERA_FINEST_SCALE,
                "dis_patch_stride": CAMERA_PATCH_STRIDE,
                "dis_gradient_iterations": CAMERA_GRADIENT_ITERATIONS,
            }
        )
    )
    camera = MotionScorer(motion, CameraConfig())
    measures: dict[str, Callable[[int], Any]] = {
        "plain_decode": lambda i: plain_decode(blobs[i]),
        "motion_before": lambda i: before.measure(decoded[i]),
        "motion_finer": lambda i: finer.measure(decoded[i]),
        "motion_camera": lambda i: camera.measure(decoded[i]),
    }
    for fn in measures.values():  # warm-up: first calls allocate DIS buffers and grids
        fn(0)
    seconds = {name: np.zeros(repeats) for name in measures}
    for r in range(repeats):
        for name, fn in measures.items():
            start = time.perf_counter()
            for i in range(len(blobs)):
                fn(i)
            seconds[name][r] = time.perf_counter() - start
    med = {name: float(np.median(s)) for name, s in seconds.items()}
    plain = med["plain_decode"]
    added = med["motion_camera"] - med["motion_before"]
    return {
        "clips": len(blobs),
        "frames_decoded": int(sum(c.frames_decoded for c in decoded)),
        "size": sorted({f"{c.width}x{c.height}" for c in decoded}),
        "ms_per_clip": {name: 1e3 * s / len(blobs) for name, s in med.items()},
        "seconds_all": {name: [round(float(x), 4) for x in s] for name, s in seconds.items()},
        "finer_flow_over_plain_decode": (med["motion_finer"] - med["motion_before"]) / plain,
        "camera_fit_over_plain_decode": (med["motion_camera"] - med["motion_finer"]) / plain,
        "added_over_plain_decode": added / plain,
        "within_target": added / plain <= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-shared", action="store_true", help="skip ../shared/footage")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one Ray CPU slot, as the score job's decode task (use_cpus)
    with tempfile.TemporaryDirectory() as tmp:
        groups = clips(Path(tmp), use_shared=not args.no_shared)
    load_before = load()
    results = {group: measure(list(blobs.values()), args.repeats) for group, blobs in groups.items()}
    record = {
        "bench": "camera",
        "target_added_over_plain_decode": TARGET,
        "repeats": args.repeats,
        "load_before": load_before,
        "load_after": load(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "physical_limit": "the camera work is fixed per clip (8 flow fields of 128x72 grey frames at DIS "
        "level 1, stride 8, + one fit of 8 similarities), the decode grows with frames x pixels: short small "
        "clips are the worst case",
        "groups": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"load average {load_before} -> {record['load_after']} ({record['cpus']} CPUs); {RESULTS}")
    print()
    print(
        "| clips | plain decode ms/clip | motion before | finer flow | + camera | added / decode | target |"
    )
    print("|---|---|---|---|---|---|---|")
    for group, r in results.items():
        ms = r["ms_per_clip"]
        print(
            f"| {group} ({r['clips']}) | {ms['plain_decode']:.1f} | {ms['motion_before']:.2f} | "
            f"{ms['motion_finer']:.2f} | {ms['motion_camera']:.2f} | {r['added_over_plain_decode']:.3f} | "
            f"{'ok' if r['within_target'] else 'OVER'} (<= {TARGET}) |"
        )


if __name__ == "__main__":
    main()

"""Benchmark of the split stage against a plain decode and the `scenedetect` command line.

On the same files in one run: (a) a plain threaded PyAV decode of every frame, (b) the
`scenedetect` CLI with default settings (detect-adaptive and detect-content), (c) reelforge's
detection alone and the whole per-file split (probe + detection + clip encoding + verification).
Reports wall time, frames/s, ratios to (a) and cut accuracy (precision/recall/F1, a match within
±2 frames) against ground truth, then peak memory of a split worker on a generated 10 s and
10 min video. Writes bench/results/split.json and prints a table.

    python bench/split.py [--quick]   # --quick: 1 min instead of 10 min for the memory check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.clips import VideoSplit  # noqa: E402
from curate.config import SplitConfig  # noqa: E402
from curate.scenes import scan_file  # noqa: E402
from pipelines.sample_footage import write_sample_footage  # noqa: E402

SHARED = REPO.parent / "shared" / "footage"
RESULTS = REPO / "bench" / "results" / "split.json"
SCENEDETECT = Path(sys.executable).with_name("scenedetect")


def ground_truth() -> list[dict]:
    """(file, hard-cut seconds, nominal fps) for every file with ground truth."""
    items = []
    sample_dir = Path(tempfile.mkdtemp(prefix="rf-bench-split-"))
    for video in write_sample_footage(sample_dir):
        truth = json.loads(Path(f"{video}.gt.json").read_text())
        items.append(
            {"file": str(video), "name": video.name, "cuts_s": truth["cuts_s"], "fps": truth["nominal_fps"]}
        )
    multishot = SHARED / "multishot"
    if multishot.is_dir():
        for gt in sorted(multishot.glob("*.gt.json")):
            truth = json.loads(gt.read_text())
            if truth.get("ground_truth_kind", "").startswith("DERIVED"):
                continue
            hard = truth["cuts_seconds"] if "hard_cuts_frames" not in truth else []
            items.append(
                {
                    "file": str(gt.with_name(truth["file"])),
                    "name": truth["file"],
                    "cuts_s": hard,
                    "fps": truth["fps"],
                }
            )
    return items


def score(found_s: list[float], truth_s: list[float], fps: float) -> dict[str, float]:
    """Precision/recall/F1 with one-to-one matching within ±2 frames (in seconds, so VFR is fair)."""
    tolerance = 2.0 / fps + 1e-6
    unmatched = list(truth_s)
    hits = 0
    for t in found_s:
        best = min(unmatched, key=lambda u: abs(u - t), default=None)
        if best is not None and abs(best - t) <= tolerance:
            unmatched.remove(best)
            hits += 1
    precision = hits / len(found_s) if found_s else 1.0
    recall = hits / len(truth_s) if truth_s else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": hits,
        "fp": len(found_s) - hits,
        "fn": len(truth_s) - hits,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def plain_decode(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def scenedetect_cli(path: str, detector: str, out_dir: Path) -> list[float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(SCENEDETECT), "-q", "-i", path, "-o", str(out_dir), detector, "list-scenes", "-q"],
        check=True,
        capture_output=True,
    )
    csv = next(out_dir.glob("*-Scenes.csv"))
    first = csv.read_text().splitlines()[0].split(",")[1:]
    for f in out_dir.iterdir():
        f.unlink()
    return [_timecode_seconds(t) for t in first if t.strip()]


def _timecode_seconds(text: str) -> float:
    h, m, s = text.strip().split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def ours_detect(path: str, cfg: SplitConfig) -> list[float]:
    return [b.seconds for b in scan_file(path, cfg.detect).boundaries if b.kind == "cut"]


def ours_split(path: str, cfg: SplitConfig) -> list[float]:
    job = VideoSplit(path, cfg)
    for _ in job.clips():
        pass
    return [b.seconds for b in job.boundaries if b.kind == "cut"]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def accuracy_and_speed(items: list[dict], cfg: SplitConfig) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="rf-bench-sd-"))
    methods = [
        "plain_decode",
        "scenedetect_adaptive",
        "scenedetect_content",
        "reelforge_detect",
        "reelforge_split",
    ]
    per_file = []
    for item in items:
        path = item["file"]
        frames = plain_decode(path)  # warm the page cache so no method pays the first read
        row = {"file": item["name"], "frames": frames}
        row["plain_decode"] = {"seconds": timed(plain_decode, path)[0]}
        for name, detector in (
            ("scenedetect_adaptive", "detect-adaptive"),
            ("scenedetect_content", "detect-content"),
        ):
            seconds, cuts = timed(scenedetect_cli, path, detector, scratch)
            row[name] = {"seconds": seconds, "cuts_s": cuts, **score(cuts, item["cuts_s"], item["fps"])}
        for name, fn in (("reelforge_detect", ours_detect), ("reelforge_split", ours_split)):
            seconds, cuts = timed(fn, path, cfg)
            row[name] = {"seconds": seconds, "cuts_s": cuts, **score(cuts, item["cuts_s"], item["fps"])}
        per_file.append(row)
        print(f"  {item['name']}: " + ", ".join(f"{m} {row[m]['seconds']:.2f}s" for m in methods), flush=True)
    total_frames = sum(r["frames"] for r in per_file)
    totals = {}
    base = sum(r["plain_decode"]["seconds"] for r in per_file)
    for m in methods:
        seconds = sum(r[m]["seconds"] for r in per_file)
        entry = {"seconds": seconds, "fps": total_frames / seconds, "x_plain_decode": seconds / base}
        if m != "plain_decode":
            tp, fp, fn = (sum(r[m][k] for r in per_file) for k in ("tp", "fp", "fn"))
            p = tp / (tp + fp) if tp + fp else 1.0
            rc = tp / (tp + fn) if tp + fn else 1.0
            entry.update(
                {
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                    "precision": p,
                    "recall": rc,
                    "f1": 2 * p * rc / (p + rc) if p + rc else 0.0,
                }
            )
        totals[m] = entry
    cli_default = totals["scenedetect_adaptive"]  # the CLI's default detector is detect-adaptive
    totals["reelforge_detect"]["speedup_vs_scenedetect_default"] = (
        cli_default["seconds"] / totals["reelforge_detect"]["seconds"]
    )
    totals["reelforge_detect"]["speedup_vs_scenedetect_content"] = (
        totals["scenedetect_content"]["seconds"] / totals["reelforge_detect"]["seconds"]
    )
    return {"frames": total_frames, "files": per_file, "totals": totals}


# ---- memory: peak RSS of one split worker vs video length --------------------------------------------------


def write_long_video(path: Path, seconds: int, fps: int = 25, size: tuple[int, int] = (320, 180)) -> None:
    """Moving noise texture with a new colour scheme every 4 s (a shot change), H.264."""
    rng = np.random.default_rng(0)
    w, h = size
    texture = rng.integers(0, 255, (h, w * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * fps):
            shot = i // (4 * fps)
            shift = (i * 3) % w
            image = texture[:, shift : shift + w]
            image = (
                image // 2
                + np.array([(shot * 70) % 256, (shot * 130) % 256, (shot * 30) % 256], np.uint8) // 2
            )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image.astype(np.uint8)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


_WORKER = """
import json, resource, sys, time
from pipelines.jobs.split import split_one
from store import Store, CLIPS
from curate.config import SplitConfig
store = Store(sys.argv[2]); store.create(CLIPS)
start = time.perf_counter()
result = split_one(sys.argv[1], SplitConfig(), store.clips_uri, frozenset())
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "clips": result["clips"], "seconds": time.perf_counter() - start,
                  "fragments": len(result["fragments"])}))
"""


def worker_memory(long_seconds: int) -> list[dict]:
    scratch = Path(tempfile.mkdtemp(prefix="rf-bench-mem-"))
    rows = []
    for seconds in (10, long_seconds):
        video = scratch / f"generated_{seconds}s.mp4"
        write_long_video(video, seconds)
        out = subprocess.run(
            [sys.executable, "-c", _WORKER, str(video), str(scratch / f"store_{seconds}")],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        row = {
            "video_s": seconds,
            "bytes": video.stat().st_size,
            **json.loads(out.stdout.strip().splitlines()[-1]),
        }
        rows.append(row)
        print(
            f"  worker on {seconds} s: peak RSS {row['peak_rss_mb']:.0f} MB, {row['clips']} clips, "
            f"{row['seconds']:.1f} s",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 min instead of 10 min for the memory check")
    args = parser.parse_args()
    cfg = SplitConfig()
    items = ground_truth()
    print(f"split benchmark on {len(items)} files with ground truth")
    speed = accuracy_and_speed(items, cfg)
    memory = worker_memory(60 if args.quick else 600)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "av": av.__version__},
        "config": cfg.model_dump(mode="json"),
        **speed,
        "worker_memory": memory,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"written: {RESULTS.relative_to(REPO)}")


def print_table(result: dict) -> None:
    totals = result["totals"]
    print(f"\n{result['frames']} frames in {len(result['files'])} files")
    print(f"{'method':24s} {'seconds':>8s} {'frames/s':>9s} {'x decode':>9s} {'P':>6s} {'R':>6s} {'F1':>6s}")
    for name, t in totals.items():
        acc = (
            f"{t['precision']:6.3f} {t['recall']:6.3f} {t['f1']:6.3f}"
            if "f1" in t
            else f"{'':6s} {'':6s} {'':6s}"
        )
        print(f"{name:24s} {t['seconds']:8.2f} {t['fps']:9.0f} {t['x_plain_decode']:9.2f} {acc}")
    d = totals["reelforge_detect"]
    print(
        f"reelforge detection is {d['speedup_vs_scenedetect_default']:.2f}x faster than `scenedetect` default "
        f"(detect-adaptive), {d['speedup_vs_scenedetect_content']:.2f}x than detect-content"
    )
    for row in result["worker_memory"]:
        print(
            f"split worker, {row['video_s']:4d} s video: peak RSS {row['peak_rss_mb']:.0f} MB ({row['clips']} clips)"
        )


if __name__ == "__main__":
    main()

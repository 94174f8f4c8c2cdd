"""Peak memory of the split and score jobs' Ray workers on a short and a long 1080p video.

Memory must not grow with video length: the long input goes through the same jobs as the short one
and the peak RSS of each kind of worker is compared. Inputs are made cheaply: ~10 s of 1080p H.264
is encoded once with PyAV/libx264 (a few shots of a panning textured picture), and the long video is
that clip's packets remuxed again and again with shifted timestamps (seconds, not an encode).

Each job runs as `reelforge split|score` in a subprocess with its own local Ray; a thread polls the
RSS of every process under it (psutil) and keeps the peak per worker role (by Ray process title).
Scoring uses the model-free scorers (motion, quality, frame-signature dedup); model actors hold
constant weights whatever the video length. Writes bench/results/memory.json and prints a table.

    python bench/memory.py                       # 10 s and 30 min of 1080p at --fps 4
    python bench/memory.py --long-minutes 5      # a quicker check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from media import VideoWriter, remux  # noqa: E402
from media.decode import open_input  # noqa: E402
from media.frames import stream_duration  # noqa: E402
from store import Store  # noqa: E402

RESULTS = REPO / "bench" / "results" / "memory.json"
WIDTH, HEIGHT = 1920, 1080
SHOT_S = 5.0  # two shots in the 10 s unit (20 frames at 4 fps, over the detector's 15-frame minimum)

SCORE_SET = [
    "score.aesthetic.enabled=false",
    "score.embedding.enabled=false",
    "score.ocr.enabled=false",
    "score.dedup.signature=frame_signature",
]


def encode_unit(path: Path, seconds: float, fps: int) -> None:
    """`seconds` of 1080p H.264: shots of a textured picture panning 4 px a frame, hard cuts between."""
    rng = np.random.default_rng(0)
    frames_per_shot = round(SHOT_S * fps)
    writer = VideoWriter(
        WIDTH,
        HEIGHT,
        fps,
        crf=30,
        preset="ultrafast",
        gop=frames_per_shot,
        threads=0,  # libx264's own thread count: this is input making, not a measured step
        path=path,
        codec_options={"bf": "0"},
    )
    for shot in range(round(seconds / SHOT_S)):
        small = rng.integers(
            0, 256, size=(HEIGHT // 16, (WIDTH + 4 * frames_per_shot) // 16, 3), dtype=np.uint8
        )
        picture = cv2.resize(small, (WIDTH + 4 * frames_per_shot, HEIGHT), interpolation=cv2.INTER_CUBIC)
        picture = picture // 2 + np.array([60 * shot % 256, 90, 200 - 40 * shot % 200], np.uint8) // 2
        for i in range(frames_per_shot):
            writer.add(np.ascontiguousarray(picture[:, 4 * i : 4 * i + WIDTH]))
    writer.finish()


def remux_repeated(unit: Path, path: Path, repeats: int) -> None:
    """The unit's packets `repeats` times, timestamps shifted by the unit's duration each time."""
    remux(unit, path, loops=repeats)


class PeakRss(threading.Thread):
    """Peak RSS per process role under a root process, polled every `interval_s`."""

    def __init__(self, root_pid: int, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self._halt = threading.Event()

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid == self.root_pid:
            return "driver"
        with contextlib.suppress(psutil.Error, IndexError):
            title = proc.cmdline()[0]
            if title.startswith("ray::"):
                return title.split(".__init__")[0]
            return "ray-system" if "ray" in " ".join(proc.cmdline()[:3]) else Path(title).name
        return "other"

    def run(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.root_pid)
            while not self._halt.is_set():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    break
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        rss = proc.memory_info().rss
                        role = self._role(proc)
                        self.peaks[role] = max(self.peaks.get(role, 0), rss)
                self._halt.wait(self.interval_s)

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join(timeout=10)
        return self.peaks


def run_job(args: list[str], log: Path) -> dict:
    start = time.perf_counter()
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        monitor = PeakRss(proc.pid)
        monitor.start()
        code = proc.wait()
        peaks = monitor.stop()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)  # what is left of the job's own Ray
    if code != 0:
        raise RuntimeError(f"reelforge {args[0]} failed ({code}); see {log}")
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": {k: v / 2**20 for k, v in sorted(peaks.items())},
    }


def worker_peak(peaks: dict[str, float], prefixes: tuple[str, ...]) -> float:
    return max((v for k, v in peaks.items() if k.startswith(prefixes)), default=0.0)


def measure(video: Path, work: Path, label: str) -> dict:
    root = work / f"store_{label}"
    ray_tmp = tempfile.mkdtemp(prefix="rfm-")
    common = ["--config", "demo", "--root", str(root), "--set", f"ray.temp_dir={ray_tmp}"]
    scores = [a for s in SCORE_SET for a in ("--set", s)]
    log = work / f"{label}.log"
    try:
        split = run_job(["split", *common, str(video)], log)
        print(f"{label}: split {split}", flush=True)  # partial results survive an interrupted run
        score = run_job(["score", *common, *scores], log)
        print(f"{label}: score {score}", flush=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    clips = Store(root).read_clips(columns=["clip_id"]).num_rows
    with open_input(video) as c:
        duration = stream_duration(c, c.streams.video[0])
    return {
        "label": label,
        "video_s": duration,
        "size_mb": video.stat().st_size / 2**20,
        "clips": clips,
        "split": split,
        "score": score,
        "split_worker_peak_mb": worker_peak(split["peak_rss_mb"], ("ray::Map(task)", "ray::IDLE")),
        "score_worker_peak_mb": worker_peak(score["peak_rss_mb"], ("ray::MapBatches", "ray::IDLE")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument(
        "--fps", type=int, default=4, help="frame rate of both inputs (1080p frames either way)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for inputs and stores (default: a temp dir)"
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rf-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    short = work / "short_10s.mp4"
    encode_unit(short, 10.0, args.fps)
    long_video = work / f"long_{args.long_minutes:g}min.mp4"
    remux_repeated(short, long_video, max(1, round(args.long_minutes * 60 / 10)))
    make_s = time.perf_counter() - t0
    rows = [measure(short, work, "short"), measure(long_video, work, "long")]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "inputs": {"resolution": f"{WIDTH}x{HEIGHT}", "fps": args.fps, "generate_s": make_s},
        "runs": rows,
        "ratio_long_vs_short": {
            "split_worker": rows[1]["split_worker_peak_mb"] / rows[0]["split_worker_peak_mb"],
            "score_worker": rows[1]["score_worker_peak_mb"] / rows[0]["score_worker_peak_mb"],
            "split_driver": rows[1]["split"]["peak_rss_mb"]["driver"]
            / rows[0]["split"]["peak_rss_mb"]["driver"],
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def print_table(result: dict) -> None:
    print(
        f"\npeak RSS (MiB), {result['inputs']['resolution']} at {result['inputs']['fps']} fps, "
        f"inputs made in {result['inputs']['generate_s']:.1f} s"
    )
    print(
        f"{'input':>10} {'size MB':>8} {'clips':>6} {'split worker':>13} {'split driver':>13} "
        f"{'score worker':>13} {'split s':>8} {'score s':>8}"
    )
    for r in result["runs"]:
        print(
            f"{r['video_s']:>9.0f}s {r['size_mb']:>8.1f} {r['clips']:>6} {r['split_worker_peak_mb']:>13.0f} "
            f"{r['split']['peak_rss_mb']['driver']:>13.0f} {r['score_worker_peak_mb']:>13.0f} "
            f"{r['split']['seconds']:>8.1f} {r['score']['seconds']:>8.1f}"
        )
    ratio = result["ratio_long_vs_short"]
    print(
        f"long / short: split worker x{ratio['split_worker']:.2f}, score worker x{ratio['score_worker']:.2f}, "
        f"split driver x{ratio['split_driver']:.2f}"
    )


if __name__ == "__main__":
    main()

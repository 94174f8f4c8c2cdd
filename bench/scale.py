"""Scaling benchmark: split + score throughput with 1 vs 2 Ray workers on the same input, in one run.

Each worker count runs in a fresh subprocess with a local Ray of that many CPUs. Every task is sized to
one CPU and one decoder thread, so the worker count is the parallelism and the speed-up is honest on a
2-core machine. Score runs its CPU-bound part (decode, motion, technical quality); the model actors
are benchmarked by bench/score.py. Ray start-up is excluded (Ray is started before the clock starts).

Input: the built-in sample footage re-encoded at several quality settings, so every file has its own
content hash (the split job would otherwise skip identical bytes) while the work per file stays the same.

    python -m bench.scale [--copies 3] [--workers 1 2]
Writes bench/results/scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "scale.json"

OVERRIDES = [
    "split.num_cpus=1",
    "split.detect.decode_threads=1",
    "score.clip.allow_random_weights=true",
    "score.aesthetic.enabled=false",
    "score.embedding.enabled=false",
    "score.ocr.enabled=false",
    "score.dedup.enabled=false",
    "score.decode_num_cpus=1",
    "score.decode_batch_size=2",
    "score.frames.decode_threads=1",
]

# Runs in the subprocess: Ray first, then the two jobs timed on their own.
WORKER = """
import json, sys, time
from pipelines.config import load_config
from pipelines.jobs.score import run_score
from pipelines.jobs.split import run_split
from pipelines.runtime import init_ray
root, footage, cpus, *overrides = sys.argv[1:]
cfg = load_config("demo", [f"store.root={root}", f"ray.num_cpus={cpus}", *overrides])
init_ray(cfg.ray)
t0 = time.perf_counter(); split = run_split(cfg, [footage], progress=False); t1 = time.perf_counter()
score = run_score(cfg, progress=False); t2 = time.perf_counter()
print(json.dumps({"files": split.ok, "clips": split.clips, "scored": score.scored,
                  "split_s": t1 - t0, "score_s": t2 - t1}))
"""


def make_input(out: Path, copies: int) -> Path:
    """The sample footage re-encoded `copies` times (crf varies), as distinct H.264 MP4 files."""
    from pipelines.sample_footage import write_sample_footage

    source = out / "source"
    videos = write_sample_footage(source)
    footage = out / "footage"
    footage.mkdir(parents=True)
    for copy in range(copies):
        for video in videos:
            _reencode(video, footage / f"{video.stem}-{copy}.mp4", crf=18 + copy)
    return footage


def _reencode(src: Path, dst: Path, crf: int) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        in_stream = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
        stream.time_base = in_stream.time_base
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in inp.decode(in_stream):
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def run_workers(footage: Path, workers: int, scratch: Path) -> dict:
    root = scratch / f"store-{workers}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(root), str(footage), str(workers), *OVERRIDES],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{workers} worker run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["workers"] = workers
    result["process_s"] = time.perf_counter() - started
    result["split_files_per_s"] = result["files"] / result["split_s"]
    result["score_clips_per_s"] = result["scored"] / result["score_s"]
    result["total_s"] = result["split_s"] + result["score_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=3, help="re-encoded copies of the sample footage")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rf-scale-") as tmp:
        scratch = Path(tmp)
        footage = make_input(scratch, args.copies)
        runs = [run_workers(footage, n, scratch) for n in args.workers]
    base = runs[0]
    for run in runs:
        run["split_speedup"] = base["split_s"] / run["split_s"]
        run["score_speedup"] = base["score_s"] / run["score_s"]
        run["total_speedup"] = base["total_s"] / run["total_s"]
    report = {
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "overrides": OVERRIDES,
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print("| workers | files | clips | split s | files/s | score s | clips/s | split x | score x | total x |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['workers']} | {r['files']} | {r['clips']} | {r['split_s']:.1f} | {r['split_files_per_s']:.2f} | "
            f"{r['score_s']:.1f} | {r['score_clips_per_s']:.2f} | {r['split_speedup']:.2f} | "
            f"{r['score_speedup']:.2f} | {r['total_speedup']:.2f} |"
        )
    print(f"load average during the run: {report['load_average']}; results: {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

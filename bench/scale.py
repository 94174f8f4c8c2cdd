"""Scaling benchmark: split + score throughput with 1 vs 2 Ray workers on the same input, in one run.

Each worker count runs in a fresh subprocess with a local Ray of that many CPUs. Every task is sized to
one CPU and one decoder thread, so the worker count is the parallelism and the speed-up is honest on a
2-core machine. Score runs its CPU-bound part (decode, motion, technical quality); the model actors
are benchmarked by bench/score.py. Ray start-up is excluded (Ray is started before the clock starts),
and so is the creation of Ray Data's cluster-wide actors (its stats actor and autoscaling
coordinator, made by the first dataset on a cluster and kept for every later job): in a fresh
driver they delayed the first split task by ~2 s, the second job's first task started after 0.07 s.
Everything else a job does (planning, worker start and imports, commits) is inside the times.

Input: a folder of videos (default: the built-in sample footage), each remuxed `--copies` times with
its own metadata tag, so every copy has its own content hash (the split job skips identical bytes)
while the decode and encode work per copy stays exactly the same. Each copy plays its source
`--loops` times back to back: the sample files last 3-10 s, and a task that short measures Ray's
per-task cost more than the stage (real inputs run minutes per file).

The same split work also runs without Ray, as 1 and 2 plain processes over halves of the files
("plain x"): the speed-up this machine gives two copies of that work at all, the ceiling for Ray's.

`--compare-reservation` adds runs with Ray Data's per-operator resource reservation switched on
(`ray.reserve_operator_resources=true`, Ray's own default), which is what held 2 workers to ~1.2x.

    python -m bench.scale [--footage DIR] [--copies 4] [--loops 4] [--workers 1 2] [--compare-reservation]
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
    "score.frames.decode_threads=1",
]
RESERVATION_ON = "ray.reserve_operator_resources=true"

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
import ray
ray.data.range(1).materialize()  # Ray Data's cluster-wide actors exist before the clock, as on a running cluster
t0 = time.perf_counter(); split = run_split(cfg, [footage], progress=False); t1 = time.perf_counter()
score = run_score(cfg, progress=False); t2 = time.perf_counter()
print(json.dumps({"files": split.ok, "failed": split.failed, "clips": split.clips, "scored": score.scored,
                  "footage_s": split.footage_s, "split_s": t1 - t0, "score_s": t2 - t1}))
"""

# The same split work without Ray, in one plain process per worker over its share of the files: the
# machine's own ceiling for running that work twice at once (two vCPUs can share more than a core).
PLAIN = """
import sys
from pipelines.config import load_config
from pipelines.jobs.split import split_one
from pipelines.store import CLIPS, VIDEOS, Store
root, count, *rest = sys.argv[1:]
overrides, paths = rest[: int(count)], rest[int(count):]
cfg = load_config("demo", [f"store.root={root}", *overrides])
store = Store(root)
store.root.mkdir(parents=True, exist_ok=True)
store.create(VIDEOS)
store.create(CLIPS)
for path in paths:
    split_one(path, cfg.split, store.clips_uri, frozenset())
"""


def make_input(out: Path, footage: Path | None, copies: int, loops: int) -> Path:
    """`copies` remuxed copies of every video in `footage` (default: fresh sample footage)."""
    if footage is None:
        from pipelines.sample_footage import write_sample_footage

        videos = write_sample_footage(out / "source")
    else:
        videos = sorted(p for p in footage.iterdir() if p.suffix.lower() in (".mp4", ".webm", ".mkv", ".mov"))
    folder = out / "footage"
    folder.mkdir(parents=True)
    for copy in range(copies):
        for video in videos:
            dst = folder / f"{video.stem}-{copy}{video.suffix}"
            _remux(video, dst, tag=f"reelforge bench copy {copy}", loops=loops)
    return folder


def _remux(src: Path, dst: Path, tag: str, loops: int) -> None:
    """The video stream's packets, unchanged and played `loops` times back to back (timestamps
    shifted), into a new file whose metadata carries `tag`."""
    with av.open(str(dst), "w") as out:
        out.metadata["comment"] = tag
        stream = None
        offset = 0
        for _ in range(loops):
            end = offset
            with av.open(str(src)) as inp:
                in_stream = inp.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(in_stream)
                for packet in inp.demux(in_stream):
                    if packet.dts is None or packet.pts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + (packet.duration or 1))
                    packet.stream = stream
                    out.mux(packet)
            offset = end


def run_workers(footage: Path, workers: int, scratch: Path, extra: list[str]) -> dict:
    root = scratch / f"store-{workers}-{len(extra)}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(root), str(footage), str(workers), *OVERRIDES, *extra],
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
    result["reservation"] = bool(extra)
    result["process_s"] = time.perf_counter() - started
    result["split_files_per_s"] = result["files"] / result["split_s"]
    result["score_clips_per_s"] = result["scored"] / result["score_s"]
    result["total_s"] = result["split_s"] + result["score_s"]
    return result


def plain_processes(footage: Path, workers: int, scratch: Path) -> float:
    """Seconds for `workers` plain processes to split every file (largest first, dealt round-robin)."""
    files = sorted(footage.iterdir(), key=lambda p: p.stat().st_size, reverse=True)
    split_overrides = [o for o in OVERRIDES if o.startswith("split.")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PLAIN,
                str(scratch / f"plain-{workers}-{i}"),
                str(len(split_overrides)),
                *split_overrides,
                *map(str, files[i::workers]),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"plain split with {workers} processes failed:\n{err.decode()[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--footage", type=Path, default=None, help="folder of videos (default: sample footage)"
    )
    parser.add_argument("--copies", type=int, default=4, help="remuxed copies of every input video")
    parser.add_argument(
        "--loops", type=int, default=4, help="each copy plays its source this many times (longer files)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--compare-reservation", action="store_true", help="also run with Ray Data's reservation on"
    )
    args = parser.parse_args()
    settings = [[]] + ([[RESERVATION_ON]] if args.compare_reservation else [])
    with tempfile.TemporaryDirectory(prefix="rf-scale-") as tmp:
        scratch = Path(tmp)
        footage = make_input(scratch, args.footage, args.copies, args.loops)
        runs = [run_workers(footage, n, scratch, extra) for extra in settings for n in args.workers]
        plain = {n: plain_processes(footage, n, scratch) for n in args.workers}
    for run in runs:
        base = next(
            r for r in runs if r["workers"] == args.workers[0] and r["reservation"] == run["reservation"]
        )
        run["split_speedup"] = base["split_s"] / run["split_s"]
        run["score_speedup"] = base["score_s"] / run["score_s"]
        run["total_speedup"] = base["total_s"] / run["total_s"]
        run["plain_split_s"] = plain[run["workers"]]
        run["plain_split_speedup"] = plain[args.workers[0]] / plain[run["workers"]]
    report = {
        "input": str(args.footage or "built-in sample footage"),
        "copies": args.copies,
        "loops": args.loops,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "overrides": OVERRIDES,
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"input: {report['input']}, {args.copies} copies x {args.loops} loops: {runs[0]['files']} files, "
        f"{runs[0]['footage_s']:.0f} s of footage"
    )
    print(
        "| workers | reservation | files | clips | split s | files/s | score s | clips/s "
        "| split x | score x | total x | plain split s | plain x |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['workers']} | {'on' if r['reservation'] else 'off'} | {r['files']} | {r['clips']} "
            f"| {r['split_s']:.1f} | {r['split_files_per_s']:.2f} | {r['score_s']:.1f} "
            f"| {r['score_clips_per_s']:.2f} | {r['split_speedup']:.2f} | {r['score_speedup']:.2f} "
            f"| {r['total_speedup']:.2f} | {r['plain_split_s']:.1f} | {r['plain_split_speedup']:.2f} |"
        )
    print(f"load average after the run: {report['load_average']}; results: {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

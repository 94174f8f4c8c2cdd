"""Benchmark of the split stage against its physical limit and against PySceneDetect.

Files: real footage from ../shared/footage (the ground-truth files of multishot/ for accuracy)
plus minutes-long files made from all of it (every shared file decoded, scaled to 640x360 and
1280x720 and concatenated into one H.264 stream each), which are what the speed ratios use.

Methods, all on the same files in the same run, in rounds (the median is reported; a loaded
machine moves single rounds by 2x; plain decode and detection run as PAIRS adjacent pairs per
file and round, in alternating order, and their ratio is the median over rounds and pairs):
  plain_decode          PyAV decode of every frame, no conversion, with a split task's decoder
                        threads (one per CPU of the task: split.num_cpus): detection's floor
  reelforge_detect      `scan_file`: decode + detection (content + fades), the `--scenes-only` work
  *_auto_threads        the two above with libavcodec's own thread count (a thread per core of
                        the machine, plus one), which split tasks used before: reported beside them
  pyscenedetect_api     PySceneDetect in-process (`scenedetect.detect`, ContentDetector, same
                        threshold and min_scene_len as reelforge, its default OpenCV backend)
  pyscenedetect_cli     the `scenedetect` command line, same detector and parameters; its start-up
                        (interpreter, imports, open) removed by differencing a run on the whole
                        file and a run stopped after 2 s of it
  codec_work            the split's floor: one threaded decode of the source plus one libx264
                        encode of exactly the split's kept frames at the split's size and
                        settings (scaled in swscale, fed as decoded frames)
  codec_work_via_rgb    the same fed through RGB, as the split fed its encoders before it fed them
                        4:2:0 frames straight from swscale
  reelforge_split       the whole per-file split (header probe, one pass of detection and
                        extraction, verification), as a split worker runs it
In-process methods run once on a short file before timing (imports, first open), with OpenCV's
thread pool sized to one worker's CPUs as the split's workers size it; per-file costs stay in
(they are part of the work). Wall and CPU seconds are both kept: CPU seconds (all threads
of the process, or of the child) are what a loaded machine distorts least, and clips per CPU
second is the split's clips/s per core. Accuracy: precision/recall/F1 of hard cuts within
±2 frames on the ground-truth files. Then the peak memory of one split worker on a generated
10 s and 10 min video. Writes bench/results/split.json and prints a table.

    python bench/split.py [--quick] [--rounds N] [--long-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.scenes import scan_file  # noqa: E402
from curate.split_config import SplitConfig  # noqa: E402
from curate.split_file import VideoSplit  # noqa: E402
from media import VideoWriter  # noqa: E402
from media.decode import Deadline, DecodedFrame, DecodeStats, iter_frames, open_input, use_cpus  # noqa: E402

SHARED = REPO.parent / "shared" / "footage"
RESULTS = REPO / "bench" / "results" / "split.json"
SCENEDETECT = Path(sys.executable).with_name("scenedetect")
CACHE = Path(tempfile.gettempdir()) / "reelforge-bench-split"
SIZES = ((640, 360), (1280, 720))


# ---- footage -----------------------------------------------------------------------------------------


def ground_truth_files() -> list[dict[str, Any]]:
    """Shared multishot files with hard-cut ground truth (derived truths left out)."""
    items = []
    for gt in sorted((SHARED / "multishot").glob("*.gt.json")):
        truth = json.loads(gt.read_text())
        if truth.get("ground_truth_kind", "").startswith("DERIVED") or "hard_cuts_frames" in truth:
            continue
        items.append(
            {"file": str(gt.with_name(truth["file"])), "cuts_s": truth["cuts_seconds"], "fps": truth["fps"]}
        )
    return items


def long_file(size: tuple[int, int], seconds: float) -> Path:
    """Every shared video, scaled to cover `size`, concatenated until `seconds` (cached)."""
    width, height = size
    out = CACHE / f"shared_concat_{width}x{height}_{seconds:g}s.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in SHARED.rglob("*") if p.suffix in (".mp4", ".webm", ".mov", ".ts", ".avi"))
    sources = [p for p in sources if "broken" not in p.parts]
    writer = VideoWriter(
        width, height, 25, crf=20, preset="veryfast", threads=0, path=out.with_suffix(".tmp.mp4")
    )
    scaler = VideoReformatter()
    while writer.frames < seconds * 25:
        for source in sources:
            try:
                with open_input(source) as container:
                    for item in iter_frames(container, DecodeStats(), Deadline(None), threads=0):
                        assert isinstance(item, DecodedFrame)
                        frame = scaler.reformat(item.frame, width=width, height=height, format="yuv420p")
                        writer.add(frame)
                        if writer.frames >= seconds * 25:
                            break
            except av.FFmpegError:
                continue
            if writer.frames >= seconds * 25:
                break
    writer.finish()
    out.with_suffix(".tmp.mp4").rename(out)
    return out


# ---- methods -----------------------------------------------------------------------------------------


def plain_decode(path: str, cfg: SplitConfig) -> dict[str, Any]:
    with open_input(path) as container:
        frames = sum(
            1 for _ in iter_frames(container, DecodeStats(), Deadline(None), threads=cfg.decode_threads())
        )
    return {"frames": frames}


def reelforge_detect(path: str, cfg: SplitConfig) -> dict[str, Any]:
    scan = scan_file(path, cfg.detect, threads=cfg.decode_threads())
    return {"frames": scan.num_frames, "cuts_s": [b.seconds for b in scan.boundaries if b.kind == "cut"]}


def pyscenedetect_api(path: str, cfg: SplitConfig) -> dict[str, Any]:
    from scenedetect import ContentDetector, detect

    detector = ContentDetector(
        threshold=cfg.detect.content.threshold, min_scene_len=cfg.detect.min_scene_frames
    )
    scenes = detect(path, detector)
    return {"cuts_s": [start.seconds for start, _ in scenes[1:]]}


def pyscenedetect_cli(path: str, cfg: SplitConfig, end_s: float | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out_dir:
        command = [str(SCENEDETECT), "-q", "-i", path, "-o", out_dir]
        if end_s is not None:
            command += ["time", "--end", f"{end_s}s"]
        command += [
            "detect-content", "-t", str(cfg.detect.content.threshold), "-m", str(cfg.detect.min_scene_frames),
            "list-scenes", "-q",
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        csv = next(Path(out_dir).glob("*-Scenes.csv"))
        first = csv.read_text().splitlines()[0].split(",")[1:]
    return {"cuts_s": [_timecode_seconds(t) for t in first if t.strip()]}


def _timecode_seconds(text: str) -> float:
    h, m, s = text.strip().split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def reelforge_split(path: str, cfg: SplitConfig) -> dict[str, Any]:
    job = VideoSplit(path, cfg)
    clips = list(job.clips())
    plans = [(c.plan.start_frame, c.plan.end_frame) for c in clips]
    return {
        "clips": len(clips),
        "copied": sum(c.stream_copied for c in clips),
        "plans": plans,
        "cuts_s": [b.seconds for b in job.boundaries if b.kind == "cut"],
    }


def codec_work(
    path: str, cfg: SplitConfig, plans: list[tuple[int, int]], via_rgb: bool = False
) -> dict[str, Any]:
    """One threaded decode + one encode of the kept frames (the split's size and x264 settings).

    `via_rgb` feeds the encoder as the split did until it fed 4:2:0 frames (scaled to RGB, then
    converted back to 4:2:0 by the encoder's input conversion): what that round trip cost."""
    from curate.clip_output import output_geometry

    extract = cfg.extract
    scaler = VideoReformatter()
    starts = dict(plans)
    writer: VideoWriter | None = None
    end = -1
    with open_input(path) as container:
        stream = container.streams.video[0]
        g = output_geometry(stream.codec_context.width, stream.codec_context.height, 0, extract)
        for item in iter_frames(container, DecodeStats(), Deadline(None), threads=cfg.decode_threads()):
            assert isinstance(item, DecodedFrame)
            if writer is not None and item.index >= end:
                writer.finish()
                writer = None
            if item.index in starts:
                end = starts[item.index]
                writer = VideoWriter(g.width, g.height, 25, crf=extract.crf, preset=extract.preset, threads=1)
            if writer is not None:
                frame = scaler.reformat(
                    item.frame,
                    width=g.width,
                    height=g.height,
                    format="rgb24" if via_rgb else "yuv420p",
                    interpolation="AREA",
                    threads=1,
                )
                writer.add(frame.to_ndarray() if via_rgb else frame)
    if writer is not None:
        writer.finish()
    return {"clips": len(plans)}


def measured(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {**result, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu + child_cpu}


# ---- accuracy ----------------------------------------------------------------------------------------


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
    return {"tp": hits, "fp": len(found_s) - hits, "fn": len(truth_s) - hits, "f1": f1}


def accuracy(cfg: SplitConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    items = ground_truth_files()
    for name, fn in (
        ("reelforge_detect", reelforge_detect),
        ("pyscenedetect_api", pyscenedetect_api),
        ("pyscenedetect_cli", pyscenedetect_cli),
    ):
        tp = fp = fn_ = 0
        for item in items:
            s = score(fn(item["file"], cfg)["cuts_s"], item["cuts_s"], item["fps"])
            tp, fp, fn_ = tp + s["tp"], fp + s["fp"], fn_ + s["fn"]
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn_) if tp + fn_ else 1.0
        out[name] = {
            "tp": tp,
            "fp": fp,
            "fn": fn_,
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
        }
    return {"files": [Path(i["file"]).name for i in items], "methods": out}


# ---- speed -------------------------------------------------------------------------------------------


def speed(files: list[Path], cfg: SplitConfig, rounds: int) -> dict[str, Any]:
    # OpenCV's pool sized to one task's CPUs, as split and scan workers size it (pipelines/jobs/split.py),
    # so the in-process methods run as a worker runs them.
    use_cpus(cfg.num_cpus)
    auto = cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"decode_threads": 0})})
    warm = ground_truth_files()[0]["file"]
    for fn in (plain_decode, reelforge_detect, pyscenedetect_api, reelforge_split):
        fn(warm, cfg)
    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        for path in map(str, files):
            row: dict[str, Any] = {"round": r, "file": Path(path).name, "loadavg": os.getloadavg()[0]}
            for suffix, config in (("", cfg), ("_auto_threads", auto)):
                pairs = detection_pairs(path, config)
                row[f"detection_pairs{suffix}"] = pairs
                for method in ("plain_decode", "reelforge_detect"):
                    row[f"{method}{suffix}"] = {
                        "frames": pairs[0][method]["frames"],
                        **{k: statistics.median(p[method][k] for p in pairs) for k in ("wall_s", "cpu_s")},
                    }
            row["pyscenedetect_api"] = measured(pyscenedetect_api, path, cfg)
            whole = measured(pyscenedetect_cli, path, cfg)
            start = measured(pyscenedetect_cli, path, cfg, 2.0)
            frames = row["plain_decode"]["frames"]
            # Steady state: the whole file minus a run stopped after 2 s (start-up and 2 s of work),
            # scaled back to the whole file.
            scale = frames / max(1, frames - 50)
            row["pyscenedetect_cli"] = {
                "wall_s": (whole["wall_s"] - start["wall_s"]) * scale,
                "cpu_s": (whole["cpu_s"] - start["cpu_s"]) * scale,
                "startup_wall_s": start["wall_s"],
            }
            split = measured(reelforge_split, path, cfg)
            row["reelforge_split"] = {k: v for k, v in split.items() if k not in ("plans", "cuts_s")}
            row["codec_work"] = measured(codec_work, path, cfg, split["plans"])
            row["codec_work_via_rgb"] = measured(codec_work, path, cfg, split["plans"], True)
            rows.append(row)
            print(
                f"  round {r} {row['file']}: "
                + ", ".join(f"{m} {row[m]['wall_s']:.2f}s" for m in METHODS)
                + f" (load {row['loadavg']:.1f})",
                flush=True,
            )
    return {"rows": rows, "summary": summarize(rows)}


# Adjacent runs of plain decode and detection per file and round. The machine's speed drifts by
# up to 1.6x between rounds here, and the ratio of two runs seconds apart drifts far less.
PAIRS = 3


def detection_pairs(path: str, cfg: SplitConfig) -> list[dict[str, dict[str, Any]]]:
    """PAIRS adjacent runs of plain decode and detection, the order alternating (neither method
    always runs second)."""
    pairs = []
    for k in range(PAIRS):
        order = (plain_decode, reelforge_detect) if k % 2 == 0 else (reelforge_detect, plain_decode)
        runs = {fn.__name__: measured(fn, path, cfg) for fn in order}
        pairs.append({name: {k: v for k, v in m.items() if k != "cuts_s"} for name, m in runs.items()})
    return pairs


METHODS = (
    "plain_decode",
    "reelforge_detect",
    "plain_decode_auto_threads",
    "reelforge_detect_auto_threads",
    "pyscenedetect_api",
    "pyscenedetect_cli",
    "codec_work",
    "codec_work_via_rgb",
    "reelforge_split",
)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, the median over rounds of the totals over files; ratios within each round (for
    detection, within each round and pair)."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_round.setdefault(row["round"], []).append(row)
    totals = []
    for rs in by_round.values():
        t = {m: {k: sum(r[m][k] for r in rs) for k in ("wall_s", "cpu_s")} for m in METHODS}
        t["clips"] = sum(r["reelforge_split"]["clips"] for r in rs)
        t["frames"] = sum(r["plain_decode"]["frames"] for r in rs)
        t["loadavg"] = max(r["loadavg"] for r in rs)
        totals.append(t)

    def median(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(t) for t in totals)

    out: dict[str, Any] = {"rounds": len(totals), "frames": totals[0]["frames"], "clips": totals[0]["clips"]}
    out["max_loadavg"] = max(t["loadavg"] for t in totals)
    for m in METHODS:
        out[m] = {k: median(lambda t, m=m, k=k: t[m][k]) for k in ("wall_s", "cpu_s")}
    for clock in ("wall_s", "cpu_s"):
        for suffix in ("", "_auto_threads"):
            # Pair k of every file in a round, summed over the files: one ratio per round and pair.
            ratios = [
                sum(r[f"detection_pairs{suffix}"][k]["reelforge_detect"][clock] for r in rs)
                / sum(r[f"detection_pairs{suffix}"][k]["plain_decode"][clock] for r in rs)
                for rs in by_round.values()
                for k in range(PAIRS)
            ]
            out[f"detect_x_plain_decode{suffix}_{clock}"] = statistics.median(ratios)
            out[f"detect_x_plain_decode{suffix}_{clock}_range"] = (min(ratios), max(ratios))
        for base in ("codec_work", "codec_work_via_rgb"):
            out[f"split_x_{base}_{clock}"] = median(
                lambda t, b=base, c=clock: t["reelforge_split"][c] / t[b][c]
            )
        for other in ("pyscenedetect_api", "pyscenedetect_cli"):
            out[f"{other}_x_reelforge_detect_{clock}"] = median(
                lambda t, o=other, c=clock: t[o][c] / t["reelforge_detect"][c]
            )
    out["split_clips_per_cpu_s"] = median(lambda t: t["clips"] / t["reelforge_split"]["cpu_s"])
    return out


# ---- memory: peak RSS of one split worker vs video length --------------------------------------------


def write_long_video(path: Path, seconds: int, fps: int = 25, size: tuple[int, int] = (320, 180)) -> None:
    """Moving noise texture with a new colour scheme every 4 s (a shot change), H.264."""
    rng = np.random.default_rng(0)
    w, h = size
    texture = rng.integers(0, 255, (h, w * 2, 3), dtype=np.uint8)
    writer = VideoWriter(w, h, fps, crf=28, preset="ultrafast", path=path)
    for i in range(seconds * fps):
        shot = i // (4 * fps)
        shift = (i * 3) % w
        tint = np.array([(shot * 70) % 256, (shot * 130) % 256, (shot * 30) % 256], np.uint8) // 2
        writer.add(np.ascontiguousarray(texture[:, shift : shift + w] // 2 + tint))
    writer.finish()


_WORKER = """
import json, resource, sys, time
from pipelines.jobs.split_worker import split_one
from store import Store, CLIPS
from curate.split_config import SplitConfig
store = Store(sys.argv[2]); store.create(CLIPS)
start = time.perf_counter()
result = split_one(sys.argv[1], SplitConfig(), store.clips_uri, frozenset())
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "clips": result["clips"], "seconds": time.perf_counter() - start,
                  "fragments": len(result["fragments"])}))
"""


def worker_memory(long_seconds: int) -> list[dict[str, Any]]:
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
            f"  worker on {seconds} s: peak RSS {row['peak_rss_mb']:.0f} MB, {row['clips']} clips", flush=True
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round on 30 s files, 1 min memory check")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long-seconds", type=float, default=120.0, help="length of the concatenated files")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"bench/split.py needs the shared footage beside the checkout ({SHARED.name} is absent)")
    rounds, seconds = (1, 30.0) if args.quick else (args.rounds, args.long_seconds)
    cfg = SplitConfig()
    print("making the long files (cached)", flush=True)
    files = [long_file(size, seconds) for size in SIZES]
    print(f"split benchmark: {rounds} round(s) on {len(files)} files of {seconds:g} s", flush=True)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "av": av.__version__},
        "loadavg_start": os.getloadavg(),
        "config": cfg.model_dump(mode="json"),
        "speed": speed(files, cfg, rounds),
        "accuracy": accuracy(cfg),
        "worker_memory": worker_memory(60 if args.quick else 600),
        "loadavg_end": os.getloadavg(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"written: {RESULTS.relative_to(REPO)}")


def print_table(result: dict[str, Any]) -> None:
    s = result["speed"]["summary"]
    print(
        f"\n{s['frames']} frames, {s['clips']} clips per round; median of {s['rounds']} round(s); "
        f"load average up to {s['max_loadavg']:.1f} on {result['machine']['cpus']} CPUs"
    )
    print(f"{'method':30s} {'wall s':>8s} {'cpu s':>8s} {'frames/cpu s':>13s}")
    for m in METHODS:
        print(f"{m:30s} {s[m]['wall_s']:8.2f} {s[m]['cpu_s']:8.2f} {s['frames'] / s[m]['cpu_s']:13.0f}")
    for clock in ("wall_s", "cpu_s"):
        print(
            f"[{clock[:-2]}] detection / plain decode {s[f'detect_x_plain_decode_{clock}']:.2f}x "
            f"({s[f'detect_x_plain_decode_{clock}_range'][0]:.2f}-{s[f'detect_x_plain_decode_{clock}_range'][1]:.2f} "
            f"over {s['rounds'] * PAIRS} adjacent pairs; target <= 1.15; "
            f"{s[f'detect_x_plain_decode_auto_threads_{clock}']:.2f}x with libavcodec's thread count), "
            f"split / codec work {s[f'split_x_codec_work_{clock}']:.2f}x (target <= 1.2; "
            f"{s[f'split_x_codec_work_via_rgb_{clock}']:.2f}x with the RGB round trip), "
            f"PySceneDetect API {s[f'pyscenedetect_api_x_reelforge_detect_{clock}']:.2f}x and CLI "
            f"{s[f'pyscenedetect_cli_x_reelforge_detect_{clock}']:.2f}x reelforge detection's time"
        )
    print(f"split: {s['split_clips_per_cpu_s']:.2f} clips per CPU second (clips/s per core)")
    for name, a in result["accuracy"]["methods"].items():
        print(f"accuracy {name:20s} P {a['precision']:.3f} R {a['recall']:.3f} F1 {a['f1']:.3f}")
    for row in result["worker_memory"]:
        print(
            f"split worker, {row['video_s']:4d} s video: peak RSS {row['peak_rss_mb']:.0f} MB ({row['clips']} clips)"
        )


if __name__ == "__main__":
    main()

"""Benchmark of the score stage: every scorer's speed, its cost next to a plain decode, pipeline overhead.

All in one run on the same clips, cut by the real split job from the built-in sample footage (plus
two files of ../shared/footage when present):

1. CPU side, in-process on one thread (one Ray CPU slot), every clip, interleaved repeats:
   a plain PyAV decode of every frame (the baseline), the score job's own decode variants (sampled
   RGB frames; plus the small grey runs optical flow needs; plus the codec's motion vectors), then
   each CPU scorer on the pre-decoded frames (motion DIS / Farneback / codec MVs, quality, and the
   resize/crop that prepares the model inputs). Target: motion + quality <= 0.3x the plain decode.
2. Model scorers (image tower with random weights + aesthetic head + embedding; EasyOCR detector) on
   the same pre-decoded inputs, same batch size and torch threads, three ways: the stage called
   directly in a loop ("bare"), the same stage class as a Ray Data actor in map_batches with the
   job's arguments ("pipeline"), and, for the image tower, `run_score` end to end with only it enabled.
   Steady state excludes the first batch (actor start-up, model load, first-call warm-up); raw
   numbers include everything. Target: pipeline aesthetic throughput >= 0.9x the bare model's.

Writes bench/results/score.json (with the load average: timings on a shared machine are noisy) and
prints markdown tables.

    python bench/score.py [--quick] [--repeats N] [--model-clips N] [--model-batch N] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.config import FrameSamplingConfig, ImageTowerConfig, OcrConfig, ScoreConfig  # noqa: E402
from curate.frames import ClipFrames, decode_clip, tower_input  # noqa: E402
from curate.image_tower import ImageTowerStage, tower_input_size  # noqa: E402
from curate.motion import MotionScorer  # noqa: E402
from curate.ocr import TextAreaStage, ocr_input  # noqa: E402
from curate.quality import QualityScorer  # noqa: E402
from media import decode_check, read_clip  # noqa: E402
from pipelines.config import PipelineConfig, parse_config  # noqa: E402
from pipelines.jobs.score import run_score  # noqa: E402
from pipelines.jobs.split import run_split  # noqa: E402
from pipelines.sample_footage import write_sample_footage  # noqa: E402
from store import CLIPS, CLIPS_SCHEMA, ROW_ID, ClipReader, Store  # noqa: E402

SHARED = REPO.parent / "shared" / "footage"
# Real single-shot footage (720p and 540p, ~5 s): clips as long as real ones, unlike the 2 s sample shots.
SHARED_FILES = ("singleshot/bigbuckbunny.mp4", "singleshot/flower.mp4")
RESULTS = REPO / "bench" / "results" / "score.json"
MOTION_QUALITY_TARGET = 0.3  # (motion + quality) / plain decode, at most
PIPELINE_TARGET = 0.9  # pipeline / bare aesthetic throughput, at least


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- clips ---------------------------------------------------------------------------------------
def build_store(work: Path, use_shared: bool, ray_temp: str) -> tuple[PipelineConfig, dict[str, Any]]:
    """Split the sample footage (and a couple of shared files) into a store with the real split job."""
    paths = [str(p) for p in write_sample_footage(work / "footage")]
    shared = [SHARED / f for f in SHARED_FILES] if use_shared else []
    paths += [str(p) for p in shared if p.is_file()]
    config = parse_config(
        {
            "store": {"root": str(work / "store")},
            "ray": {"num_cpus": os.cpu_count() or 1, "temp_dir": ray_temp},
        }
    )
    started = time.perf_counter()
    summary = run_split(config, paths=paths, progress=False)
    info = {
        "files": [Path(p).name for p in paths],
        "clips": summary.clips,
        "failed_files": summary.failed,
        "split_seconds": round(time.perf_counter() - started, 2),
    }
    return config, info


def read_clips(store: Store, sample_dir: Path) -> tuple[dict[str, bytes], dict[str, list[int]]]:
    """Clip bytes by clip_id, and clip positions grouped by source: all, generated sample, shared."""
    work = store.work_list(columns=("clip_id", "uri"))
    table = work.rows.sort_by("clip_id")
    ids = table["clip_id"].to_pylist()
    blobs = dict(
        zip(ids, ClipReader.at(store.root, work.version).blobs(table[ROW_ID].to_pylist()), strict=True)
    )
    sample = [i for i, uri in enumerate(table["uri"].to_pylist()) if Path(uri).parent == sample_dir]
    shared = [i for i in range(len(ids)) if i not in set(sample)]
    groups = {"all": list(range(len(ids))), "sample": sample, "shared": shared} if shared else {"all": sample}
    return {cid: blobs[cid] for cid in ids}, groups


def subset_store(source: Store, root: Path, clip_ids: list[str]) -> Store:
    """A new store holding only `clip_ids` (blob bytes copied), for an end-to-end run on those clips."""
    columns = [n for n in CLIPS_SCHEMA.names if n != "video"]
    work = source.work_list(columns=columns)
    rows = work.rows.filter(pc.is_in(work.rows["clip_id"], value_set=pa.array(clip_ids, pa.string())))
    blobs = ClipReader.at(source.root, work.version).blobs(rows[ROW_ID].to_pylist())
    table = rows.drop_columns([ROW_ID]).append_column("video", pa.array(blobs, pa.large_binary()))
    store = Store(root)
    store.create(CLIPS)
    store.append(CLIPS, table)
    return store


# ---- CPU side ------------------------------------------------------------------------------------
def plain_decode(data: bytes, threads: int, rgb: bool = False) -> int:
    """Decode every frame (as the job does: one stream, `threads` decoder threads), with `rgb` each
    converted to RGB and kept (`media.read_clip`); count them."""
    if rgb:
        return len(read_clip(data, threads=threads).frames)
    return decode_check(data, threads=threads).frames


def timed_repeats(
    measures: dict[str, Callable[[int], Any]], n_clips: int, repeats: int
) -> dict[str, np.ndarray]:
    """(repeats, clips) seconds per measure and clip; rounds interleaved so load swings hit all alike."""
    seconds = {name: np.zeros((repeats, n_clips)) for name in measures}
    for r in range(repeats):
        for name, fn in measures.items():
            for i in range(n_clips):
                start = time.perf_counter()
                fn(i)
                seconds[name][r, i] = time.perf_counter() - start
    return seconds


def cpu_section(
    blobs: list[bytes],
    groups: dict[str, list[int]],
    cfg: ScoreConfig,
    threads: int,
    repeats: int,
    tower_size: int,
) -> dict[str, Any]:
    """Every measure on every clip; totals per clip group (median over rounds) and their ratios."""
    frames_cfg = cfg.frames
    mcfg = cfg.motion
    decoded = [
        decode_clip(
            b,
            frames_cfg,
            motion_width=mcfg.width,
            motion_run_length=mcfg.run_length,
            motion_points=mcfg.points,
        )
        for b in blobs
    ]
    with_mvs = [decode_clip(b, frames_cfg, codec_motion_vectors=True) for b in blobs]
    dis = MotionScorer(mcfg)
    farneback = MotionScorer(mcfg.model_copy(update={"method": "farneback"}))
    codec_mvs = MotionScorer(mcfg.model_copy(update={"method": "codec_mvs"}))
    quality = QualityScorer(cfg.quality)
    threads_decode = frames_cfg.decode_threads
    measures: dict[str, Callable[[int], Any]] = {
        "plain_decode": lambda i: plain_decode(blobs[i], threads_decode),
        "plain_decode_rgb": lambda i: plain_decode(blobs[i], threads_decode, rgb=True),
        "decode_sampled": lambda i: decode_clip(blobs[i], frames_cfg),
        "decode_sampled_flow_runs": lambda i: decode_clip(
            blobs[i],
            frames_cfg,
            motion_width=mcfg.width,
            motion_run_length=mcfg.run_length,
            motion_points=mcfg.points,
        ),
        "decode_sampled_mvs": lambda i: decode_clip(blobs[i], frames_cfg, codec_motion_vectors=True),
        "motion_dis": lambda i: dis(decoded[i]),
        "motion_farneback": lambda i: farneback(decoded[i]),
        "motion_codec_mvs": lambda i: codec_mvs(with_mvs[i]),
        "quality": lambda i: quality(decoded[i].frames),
        "tower_input": lambda i: tower_input(decoded[i].frames, tower_size),
        "ocr_input": lambda i: ocr_input(decoded[i].frames, cfg.ocr.frames, cfg.ocr.max_side),
    }

    def frames_of(name: str, c: ClipFrames, m: ClipFrames) -> int:
        if name.startswith(("plain_decode", "decode_")):
            return c.frames_decoded
        if name.startswith("motion_"):
            return (
                m.codec_motion.magnitude_px.size
                if name == "motion_codec_mvs" and m.codec_motion
                else sum(r.shape[0] for r in c.motion_runs)
            )
        if name == "ocr_input":
            return min(cfg.ocr.frames, c.frames.shape[0])
        if name == "quality":
            return min(cfg.quality.frames, c.frames.shape[0])
        return c.frames.shape[0]

    load_before = load()
    seconds = timed_repeats(measures, len(blobs), repeats)
    out: dict[str, Any] = {
        "threads": threads,
        "repeats": repeats,
        "load_before": load_before,
        "load_after": load(),
        "groups": {},
    }
    for group, idx in groups.items():
        if not idx:
            continue
        rows = {}
        for name, secs in seconds.items():
            totals = secs[:, idx].sum(axis=1)
            med = float(np.median(totals))
            n_frames = sum(frames_of(name, decoded[i], with_mvs[i]) for i in idx)
            rows[name] = {
                "seconds": med,
                "seconds_all": [round(float(t), 4) for t in totals],
                "clips": len(idx),
                "frames": n_frames,
                "clips_per_s": len(idx) / med,
                "frames_per_s": n_frames / med,
            }
        plain = rows["plain_decode"]["seconds"]
        for row in rows.values():
            row["x_plain_decode"] = row["seconds"] / plain
        sec = {name: row["seconds"] for name, row in rows.items()}
        ratios = {
            # The target as the issue states it: the two CPU scorers' own time next to a plain decode.
            "motion_quality_over_plain_decode": (sec["motion_dis"] + sec["quality"]) / plain,
            # Everything the job adds over a plain decode for these two scorers: its decode (RGB of the
            # sampled frames, grey flow runs) plus both scorers.
            "job_added_dis_over_plain_decode": (
                sec["decode_sampled_flow_runs"] + sec["motion_dis"] + sec["quality"] - plain
            )
            / plain,
            "job_added_codec_mvs_over_plain_decode": (
                sec["decode_sampled_mvs"] + sec["motion_codec_mvs"] + sec["quality"] - plain
            )
            / plain,
        }
        decoded_frames = rows["plain_decode"]["frames"]
        out["groups"][group] = {
            "clips": len(idx),
            "frames_per_clip": decoded_frames / len(idx),
            "size": sorted({f"{decoded[i].width}x{decoded[i].height}" for i in idx}),
            "rows": rows,
            "ratios": ratios,
        }
    return out


# ---- model stages --------------------------------------------------------------------------------
def batches_of(items: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Items -> batches shaped like Ray Data numpy batches (tensor column, or a list when ragged)."""
    out = []
    for i in range(0, len(items), size):
        chunk = items[i : i + size]
        batch: dict[str, Any] = {}
        for key in chunk[0]:
            values = [row[key] for row in chunk]
            if not isinstance(values[0], np.ndarray):
                batch[key] = np.array(values, dtype=object)
            elif len({v.shape for v in values}) == 1:
                batch[key] = np.stack(values)
            else:
                batch[key] = values
        out.append(batch)
    return out


def steady(times: list[float], counts: list[int]) -> float | None:
    """Clips/s after the first batch, from per-batch durations; None with a single batch."""
    if len(times) < 2:
        return None
    return sum(counts[1:]) / sum(times[1:])


def run_bare(make_stage: Callable[[], Any], batches: list[dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    stage = make_stage()
    load_s = time.perf_counter() - start
    durations, counts = [], []
    for batch in batches:
        t = time.perf_counter()
        stage(batch)
        durations.append(time.perf_counter() - t)
        counts.append(len(batch["clip_id"]))
    clips = sum(counts)
    return {
        "model_load_s": load_s,
        "batch_seconds": [round(d, 3) for d in durations],
        "batch_clips": counts,
        "raw_clips_per_s": clips / (load_s + sum(durations)),
        "steady_clips_per_s": steady(durations, counts),
    }


def timed_stage(stage_cls: type) -> type:
    """The stage class, unchanged, plus each call's wall-clock start and end as two extra columns."""

    class Timed(stage_cls):
        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            start = time.time()
            out = super().__call__(batch)
            n = len(out["clip_id"])
            out["call_start"] = np.full(n, start)
            out["call_end"] = np.full(n, time.time())
            return out

    Timed.__name__ = Timed.__qualname__ = stage_cls.__name__
    return Timed


def run_pipeline(
    stage_cls: type, ctor_args: tuple, items: list[dict[str, Any]], batch_size: int, num_cpus: float
) -> dict[str, Any]:
    """The stage as a Ray Data actor with the job's map_batches arguments, fed the pre-decoded inputs.

    Ray Data may merge several calls' outputs into one block, so the driver cannot see batch timing;
    the calls' own timestamps (same machine clock) give it. Steady state runs from the end of the
    first call to the end of the last, gaps between calls (Ray's own overhead) included.
    """
    import ray

    start_wall = time.time()
    start = time.perf_counter()
    ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / batch_size))
    ds = ds.map_batches(
        timed_stage(stage_cls),
        fn_constructor_args=ctor_args,
        batch_format="numpy",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=num_cpus,
    )
    calls: dict[float, list[float]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for call_start, call_end in zip(batch["call_start"], batch["call_end"], strict=True):
            calls.setdefault(float(call_start), [float(call_end), 0])[1] += 1
    raw_s = time.perf_counter() - start
    spans = sorted((s, e, n) for s, (e, n) in calls.items())
    counts = [n for _, _, n in spans]
    clips = sum(counts)
    steady_s = spans[-1][1] - spans[0][1]
    return {
        "raw_seconds": raw_s,
        "first_call_start_s": spans[0][0] - start_wall,
        "call_seconds": [round(e - s, 3) for s, e, _ in spans],
        "gaps_between_calls_s": [round(b[0] - a[1], 4) for a, b in itertools.pairwise(spans)],
        "batch_clips": counts,
        "raw_clips_per_s": clips / raw_s,
        "steady_clips_per_s": sum(counts[1:]) / steady_s if len(spans) > 1 else None,
        "in_call_clips_per_s": steady([e - s for s, e, _ in spans], counts),
    }


def actor_threads(num_cpus: float) -> dict[str, Any]:
    """Torch threads a Ray actor with `num_cpus` gets (Ray sets OMP_NUM_THREADS from the request)."""
    import ray

    @ray.remote
    class ThreadProbe:
        def threads(self) -> dict[str, Any]:
            return {
                "torch_threads": torch.get_num_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            }

    probe = ThreadProbe.options(num_cpus=num_cpus).remote()
    found = ray.get(probe.threads.remote())
    ray.kill(probe)
    return found


def compare(
    name: str,
    make_stage: Callable[[], Any],
    stage_cls: type,
    ctor_args: tuple,
    items: list[dict[str, Any]],
    frames_per_clip: float,
    batch_size: int,
    num_cpus: float,
    repeats: int,
    bare_in_driver: bool,
) -> dict[str, Any]:
    """Bare loop and Ray Data actor on the same items, alternating, `repeats` times each.

    The reference bare loop runs in a plain Ray task with the actor's num_cpus: the same kind of
    process (thread settings, and the CPU share the OS gives Ray's workers on a busy machine) as the
    actor, so the ratio isolates what Ray Data adds. The same loop in this driver process is also
    reported when asked.
    """
    import ray

    batches = batches_of(items, batch_size)
    in_worker = ray.remote(num_cpus=num_cpus)(run_bare)
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "pipeline": [], "bare_driver": []}
    load_before = load()
    for _ in range(repeats):
        runs["bare"].append(ray.get(in_worker.remote(make_stage, batches)))
        runs["pipeline"].append(run_pipeline(stage_cls, ctor_args, items, batch_size, num_cpus))
        if bare_in_driver:
            runs["bare_driver"].append(run_bare(make_stage, batches))
    out: dict[str, Any] = {
        "clips": len(items),
        "frames_per_clip": frames_per_clip,
        "batch_size": batch_size,
        "load_before": load_before,
        "load_after": load(),
        "runs": runs,
    }
    for kind in ("raw", "steady"):
        key = f"{kind}_clips_per_s"
        bare = _median([r[key] for r in runs["bare"]])
        pipe = _median([r[key] for r in runs["pipeline"]])
        out[f"bare_{key}"] = bare
        out[f"pipeline_{key}"] = pipe
        out[f"{kind}_ratio"] = pipe / bare if bare and pipe else None
    # Model time inside the actor's calls alone: separates slower compute from Ray's gaps between calls.
    out["pipeline_in_call_clips_per_s"] = _median([r["in_call_clips_per_s"] for r in runs["pipeline"]])
    # What Ray Data itself costs in steady state (gaps between the actor's calls), immune to the load
    # swings between the bare and the pipeline runs that dominate steady_ratio on a busy machine.
    in_call, steady_rate = out["pipeline_in_call_clips_per_s"], out["pipeline_steady_clips_per_s"]
    out["steady_over_in_call"] = steady_rate / in_call if steady_rate and in_call else None
    out["bare_driver_steady_clips_per_s"] = _median([r["steady_clips_per_s"] for r in runs["bare_driver"]])
    print(
        f"  {name}: bare steady {_fmt(out['bare_steady_clips_per_s'])} clips/s, pipeline steady "
        f"{_fmt(out['pipeline_steady_clips_per_s'])} clips/s, ratio {_fmt(out['steady_ratio'], 3)}",
        flush=True,
    )
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def end_to_end(config: PipelineConfig, store: Store, cfg: ScoreConfig) -> dict[str, Any]:
    """`run_score` on the model clips with only the image-tower stage on (decode tasks feed the actor)."""
    only_tower = cfg.model_copy(
        update={
            "motion": cfg.motion.model_copy(update={"enabled": False}),
            "quality": cfg.quality.model_copy(update={"enabled": False}),
            "ocr": cfg.ocr.model_copy(update={"enabled": False}),
            "dedup": cfg.dedup.model_copy(update={"enabled": False}),
        }
    )
    job = config.model_copy(
        update={"score": only_tower, "store": config.store.model_copy(update={"root": store.root})}
    )
    load_before = load()
    summary = run_score(job, progress=False)
    return {
        "clips": summary.scored,
        "errors": summary.errors,
        "seconds": summary.seconds,
        "raw_clips_per_s": summary.scored / summary.seconds,
        "load_before": load_before,
        "load_after": load(),
    }


# ---- main ----------------------------------------------------------------------------------------
def main() -> None:  # noqa: PLR0915 — one benchmark read top to bottom: arguments, runs, the table
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sample footage only, 1 repeat, 4 model clips, no end-to-end run_score",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds of the CPU measures (default 3, quick 1)"
    )
    parser.add_argument("--model-repeats", type=int, default=1, help="bare/pipeline rounds per model stage")
    parser.add_argument(
        "--model-clips", type=int, default=None, help="clips fed to the model stages (default 8)"
    )
    parser.add_argument(
        "--model-batch",
        type=int,
        default=2,
        help="clips per model batch, bare and pipeline alike (small: several batches per run)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per measurement: OpenCV/torch in-process, num_cpus of the Ray actors",
    )
    parser.add_argument("--no-shared", action="store_true", help="do not add files from ../shared/footage")
    parser.add_argument("--no-ocr", action="store_true", help="skip the OCR model comparison")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    model_clips = args.model_clips or (4 if args.quick else 8)
    cpus = os.cpu_count() or 1
    if args.threads >= cpus:
        parser.error(f"--threads must leave a CPU for the job's decode tasks (this machine has {cpus})")

    import ray

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="rf-bench-score-"))
    ray_temp = tempfile.mkdtemp(prefix="rf-ray-")  # short: Ray's socket paths must stay under ~100 chars
    started = time.perf_counter()
    load_start = load()
    try:
        print("building the clips store with the split job ...", flush=True)
        config, clips_info = build_store(work, not (args.quick or args.no_shared), ray_temp)
        store = Store(config.store.root)
        # Ray Data's per-dataset progress logs would drown the output (set once Ray has configured them).
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        clips, groups = read_clips(store, work / "footage")
        cfg = ScoreConfig(
            frames=FrameSamplingConfig(decode_threads=args.threads),
            image_tower=ImageTowerConfig(
                allow_random_weights=True, batch_size=args.model_batch, num_cpus=args.threads
            ),
            ocr=OcrConfig(batch_size=args.model_batch, num_cpus=args.threads),
        )
        tower_size = tower_input_size(cfg.image_tower)
        print(f"{len(clips)} clips; CPU scorers ({repeats} rounds) ...", flush=True)
        cpu = cpu_section(list(clips.values()), groups, cfg, args.threads, repeats, tower_size)

        # Spread over the sorted ids, so shared footage is in the mix when present.
        spread = np.unique(
            np.linspace(0, len(clips) - 1, num=min(model_clips, len(clips))).round().astype(int)
        )
        model_ids = [list(clips)[i] for i in spread]
        decoded = {cid: decode_clip(clips[cid], cfg.frames) for cid in model_ids}
        tower_items = [
            {"clip_id": cid, "tower_pixels": tower_input(f.frames, tower_size)} for cid, f in decoded.items()
        ]
        ocr_items = [
            {"clip_id": cid, "ocr_frames": ocr_input(f.frames, cfg.ocr.frames, cfg.ocr.max_side)}
            for cid, f in decoded.items()
        ]
        threads_in_actor = actor_threads(args.threads)
        if threads_in_actor["torch_threads"] != args.threads:
            print(
                f"  note: a Ray actor with num_cpus={args.threads} runs torch with "
                f"{threads_in_actor['torch_threads']} threads",
                flush=True,
            )
        models: dict[str, Any] = {"actor_threads": threads_in_actor, "bare_threads": torch.get_num_threads()}
        print(f"model stages on {len(model_ids)} clips, batch {args.model_batch} ...", flush=True)
        models["aesthetic_embedding"] = compare(
            "aesthetic+embedding",
            lambda: ImageTowerStage(cfg),
            ImageTowerStage,
            (cfg,),
            tower_items,
            float(np.mean([i["tower_pixels"].shape[0] for i in tower_items])),
            args.model_batch,
            args.threads,
            args.model_repeats,
            bare_in_driver=not args.quick,
        )
        if not args.no_ocr:
            models["ocr"] = compare(
                "ocr",
                lambda: TextAreaStage(cfg.ocr),
                TextAreaStage,
                (cfg.ocr,),
                ocr_items,
                float(np.mean([i["ocr_frames"].shape[0] for i in ocr_items])),
                args.model_batch,
                args.threads,
                args.model_repeats,
                bare_in_driver=not args.quick,
            )
        if not args.quick:
            print("run_score end to end, image-tower stage only ...", flush=True)
            models["aesthetic_run_score"] = end_to_end(
                config, subset_store(store, work / "model_store", model_ids), cfg
            )
    finally:
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    aesthetic = models["aesthetic_embedding"]
    mq_ratio = cpu["groups"]["all"]["ratios"]["motion_quality_over_plain_decode"]
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": cpus,
            "torch": torch.__version__,
            "ray": ray.__version__,
            "av": av.__version__,
            "opencv": cv2.__version__,
            "load_average_1_5_15_start": load_start,
            "load_average_1_5_15_end": load(),
        },
        "args": vars(args) | {"repeats": repeats, "model_clips": model_clips},
        "clips": clips_info | {"scored": len(clips)},
        "score_config": cfg.model_dump(mode="json"),
        "image_tower": {
            "model": cfg.image_tower.resolved_model(),
            "weights": "random (allow_random_weights)",
            "input_size": tower_size,
        },
        "cpu": cpu,
        "models": models,
        "targets": {
            "motion_quality_over_plain_decode": {
                "value": mq_ratio,
                "at_most": MOTION_QUALITY_TARGET,
                "holds": mq_ratio <= MOTION_QUALITY_TARGET,
                "by_group": {
                    g: v["ratios"]["motion_quality_over_plain_decode"] for g, v in cpu["groups"].items()
                },
            },
            "aesthetic_pipeline_over_bare_steady": {
                "value": aesthetic["steady_ratio"],
                "at_least": PIPELINE_TARGET,
                "holds": aesthetic["steady_ratio"] is not None
                and aesthetic["steady_ratio"] >= PIPELINE_TARGET,
            },
        },
        "ray_data_steady_over_in_call": {
            name: models[name]["steady_over_in_call"]
            for name in ("aesthetic_embedding", "ocr")
            if name in models
        },
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print_tables(result)
    print(f"written: {RESULTS.relative_to(REPO)}")


def print_tables(result: dict[str, Any]) -> None:
    cpu = result["cpu"]
    print(
        f"\nload average (1/5/15 min) {result['machine']['load_average_1_5_15_start']} at start, "
        f"{result['machine']['load_average_1_5_15_end']} at end, {result['machine']['cpus']} CPUs; "
        f"{result['clips']['scored']} clips, {cpu['threads']} thread(s) per measurement\n"
    )
    for group, g in cpu["groups"].items():
        print(
            f"\n{group}: {g['clips']} clips, {g['frames_per_clip']:.0f} frames/clip, {', '.join(g['size'])}\n"
        )
        print(
            "| measure (in-process, pre-decoded input) | clips | frames | seconds | clips/s | frames/s | "
            "x plain decode |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in g["rows"].items():
            print(
                f"| {name} | {r['clips']} | {r['frames']} | {r['seconds']:.3f} | {r['clips_per_s']:.1f} | "
                f"{r['frames_per_s']:.0f} | {r['x_plain_decode']:.3f} |"
            )
    models = result["models"]
    print(
        "\n| model stage | clips | frames/clip | batch | bare clips/s (steady) | pipeline clips/s (steady) | "
        "steady ratio | pipeline in-call clips/s | bare in driver clips/s (steady) | "
        "bare clips/s (raw, incl. load) | pipeline clips/s (raw) | raw ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("aesthetic_embedding", "ocr"):
        if name not in models:
            continue
        m = models[name]
        fpc = m["frames_per_clip"]
        print(
            f"| {name} | {m['clips']} | {fpc:.0f} | {m['batch_size']} | {_fmt(m['bare_steady_clips_per_s'], 3)} "
            f"({_fmt(_times(m['bare_steady_clips_per_s'], fpc))} fr/s) | "
            f"{_fmt(m['pipeline_steady_clips_per_s'], 3)} | {_fmt(m['steady_ratio'], 3)} | "
            f"{_fmt(m['pipeline_in_call_clips_per_s'], 3)} | {_fmt(m['bare_driver_steady_clips_per_s'], 3)} | "
            f"{_fmt(m['bare_raw_clips_per_s'], 3)} | {_fmt(m['pipeline_raw_clips_per_s'], 3)} | "
            f"{_fmt(m['raw_ratio'], 3)} |"
        )
    if "aesthetic_run_score" in models:
        e = models["aesthetic_run_score"]
        bare = models["aesthetic_embedding"]["bare_raw_clips_per_s"]
        print(
            f"\nrun_score, image-tower stage only, end to end "
            "(decode tasks + actor + staging + Lance merge): "
            f"{e['clips']} clips in {e['seconds']:.1f} s = {e['raw_clips_per_s']:.3f} clips/s, "
            f"{e['raw_clips_per_s'] / bare:.3f}x the bare model's raw rate (incl. its load)"
        )
    print(
        "\nRay Data steady throughput over the same actor's in-call model throughput (1.0 = no overhead): "
        + ", ".join(f"{k} {_fmt(v, 3)}" for k, v in result["ray_data_steady_over_in_call"].items())
    )
    print("\n| target | value | limit | holds |")
    print("|---|---:|---:|---|")
    for name, t in result["targets"].items():
        limit = f"<= {t['at_most']}" if "at_most" in t else f">= {t['at_least']}"
        print(f"| {name} | {_fmt(t['value'], 3)} | {limit} | {'yes' if t['holds'] else 'NO'} |")
    print(
        "\n| clip group | (motion + quality) / plain decode | job adds over plain decode, DIS | "
        "job adds, codec MVs |"
    )
    print("|---|---:|---:|---:|")
    for group, g in cpu["groups"].items():
        r = g["ratios"]
        print(
            f"| {group} | {r['motion_quality_over_plain_decode']:.3f} | {r['job_added_dis_over_plain_decode']:.3f} | "
            f"{r['job_added_codec_mvs_over_plain_decode']:.3f} |"
        )


def _times(rate: float | None, factor: float) -> float | None:
    return None if rate is None else rate * factor


if __name__ == "__main__":
    main()

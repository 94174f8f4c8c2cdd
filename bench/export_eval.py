"""Throughput of `reelforge export` per format and of `reelforge eval` per video.

Export: a store of real H.264 clips (pans over scikit-image photographs, tests/caption_clips.py), copied
`--copies` times (default 128: 512 clips), exported to each format with `export.verify` none and decode. Baseline, measured in
the same run: reading every clip's bytes from the store by row id and writing them to one file (the
export's floor: it moves the same bytes). The physical limit is the disk's write bandwidth for
`verify=none` and H.264 decoding (one core per verify thread) for `verify=decode`.

Eval: seconds per video of VBenchScorer on the shared footage's single shots (64 frames at 360p), the
image tower loaded once before timing (start-up removed); the flow, tower and quality parts timed
apart. The limit is the image tower's forward passes (2 x eval.tower_frames per video) on the CPU.

    python -m bench.export_eval [--copies 8]

Writes bench/results/export_eval.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO.parent / "shared" / "footage" / "singleshot"


def _store(root: Path, copies: int):  # -> (Store, bytes in clips)
    import pyarrow as pa

    from store import CLIPS, Store
    from tests.caption_clips import clips_rows, photo_clips

    store = Store(root)
    # encoded once, stored `copies` times under distinct ids (the export never looks at the pixels'
    # identity; decoding each copy costs the same)
    clips = {f"{clip_id}-{i}": data for clip_id, data in photo_clips(1).items() for i in range(copies)}
    store.append(CLIPS, clips_rows(clips))
    ids = list(clips)
    store.add_columns(pa.table({"clip_id": ids, "caption": [f"caption of {c}" for c in ids]}), "caption", {})
    return store, sum(len(b) for b in clips.values())


def bench_export(copies: int) -> list[dict]:
    from pipelines.export import export
    from pipelines.export_config import ExportConfig
    from store import CLIPS, ROW_ID, ClipReader

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store, total = _store(Path(tmp) / "store", copies)
        ds = store.require(CLIPS)
        started = time.perf_counter()
        with (Path(tmp) / "copy.bin").open("wb") as out:
            for batch in ds.to_batches(columns=["clip_id"], with_row_id=True, batch_size=32):
                for data in ClipReader.of(ds).blobs(batch.column(ROW_ID).to_pylist()):
                    out.write(data)
        baseline = time.perf_counter() - started
        n = ds.count_rows()
        rows.append({"case": "baseline: read blobs, write one file", "clips": n, "s": baseline})
        for fmt in ("webdataset", "parquet", "folder"):
            for verify in ("none", "decode"):
                out_dir = Path(tmp) / f"{fmt}-{verify}"
                started = time.perf_counter()
                export(store, out_dir, ExportConfig(format=fmt, verify=verify))
                rows.append(
                    {"case": f"export {fmt} verify={verify}", "clips": n, "s": time.perf_counter() - started}
                )
                shutil.rmtree(out_dir)
        for row in rows:
            row.update(
                clips_per_s=n / row["s"], mb_per_s=total / row["s"] / 1e6, vs_baseline=row["s"] / baseline
            )
    return rows


def bench_eval() -> list[dict]:
    from curate.config import ImageTowerConfig, ScoreConfig
    from curate.eval_config import EvalConfig
    from curate.frames import spread_indices, tower_input
    from curate.vbench import VBenchScorer, read_video

    if not FOOTAGE.is_dir():
        return []
    cfg = EvalConfig()
    scorer = VBenchScorer(cfg, ScoreConfig(image_tower=ImageTowerConfig(allow_random_weights=True)))
    rows = []
    for name in ("flower.mp4", "bigbuckbunny.mp4", "car-detection.mp4"):
        started = time.perf_counter()
        video = read_video(FOOTAGE / name, cfg)
        decoded = time.perf_counter()
        picked = video.frames[spread_indices(len(video.frames), cfg.tower_frames)]
        scorer.tower.embed(tower_input(picked, scorer.tower.image_size))
        tower = time.perf_counter()
        scorer.flow.motion_smoothness(video.frames)
        scorer.flow.dynamic_degree(video.frames, video.fps)
        flow = time.perf_counter()
        scorer(video)
        whole = time.perf_counter()
        rows.append(
            {
                "video": name,
                "frames": len(video.frames),
                "decode_s": decoded - started,
                "tower_one_view_s": tower - decoded,
                "flow_s": flow - tower,
                "all_dimensions_s": whole - flow,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=128, help="copies of the 4 photo clips in the store")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result = {"load_average": load, "export": bench_export(args.copies), "eval": bench_eval()}
    out = REPO / "bench" / "results" / "export_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"load average {' '.join(load)}")
    print(f"{'case':42s} {'clips':>6s} {'s':>7s} {'clips/s':>8s} {'MB/s':>7s} {'x baseline':>10s}")
    for r in result["export"]:
        print(
            f"{r['case']:42s} {r['clips']:6d} {r['s']:7.2f} {r['clips_per_s']:8.1f} {r['mb_per_s']:7.2f} {r['vs_baseline']:10.1f}"
        )
    print(f"\n{'video':20s} {'frames':>6s} {'decode s':>9s} {'tower s':>8s} {'flow s':>7s} {'all s':>7s}")
    for r in result["eval"]:
        print(
            f"{r['video']:20s} {r['frames']:6d} {r['decode_s']:9.2f} {r['tower_one_view_s']:8.2f} "
            f"{r['flow_s']:7.2f} {r['all_dimensions_s']:7.2f}"
        )
    print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()

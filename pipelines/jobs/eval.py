"""`reelforge eval`: VBench's quality dimensions (curate/vbench.py) for videos, samples, a checkpoint or
the curated clips, into the `evals` Lance table and `--json OUT`.

What is evaluated, and what each row records beside the seven dimensions:
- files (a folder, files, globs): `source` files; a video with a sample record beside it (`<stem>.json`,
  written by `reelforge sample`) is `samples`, with its prompt, checkpoint and step;
- `--checkpoint DIR --prompts FILE`: the prompts (one a line) are sampled with `eval.seed` into
  `<store.root>/evals/samples/step_NNNNNNN/`, then evaluated (`checkpoint`);
- `--store`: the clips matching `eval` filter (default: the selected ones), read in batches by row id,
  their captions as prompts (`store`).
When a run holds both generated videos and curated clips, it also gives the Frechet distance between
their image-tower features (`frechet_image_tower`: FID's formula on the open_clip tower's per-video mean
features, not an I3D-based FVD). The run's aggregate per source (VBench's way) and the distance are kept
in the evals table's metadata (`reelforge.eval.<run_id>`) and printed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from curate.eval_config import EvalConfig
from curate.frames import FrameDecodeError
from curate.vbench import (
    DIMENSIONS,
    FeatureMoments,
    VBenchScorer,
    Video,
    aggregate,
    frechet_distance,
    read_video,
)
from pipelines.config import PipelineConfig
from store import CLIPS, ROW_ID, ClipReader, Store
from store.contract import EVALS, table_schema
from store.lance_store import DATA_STORAGE_VERSION
from store.placeholders import PLACEHOLDER_KEY, schema_marks

RUN_KEY_PREFIX = "reelforge.eval."
_WRITE_ROWS = 16  # rows appended to the evals table at a time


@dataclass(frozen=True)
class Item:
    """One video to evaluate and what it came from."""

    video: str  # a path, or clip:<clip_id>
    source: str
    data: bytes | None = None  # the bytes of a curated clip (files are read from their path)
    prompt: str | None = None
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    placeholders: dict[str, str] = field(default_factory=dict)  # inputs behind the video itself


@dataclass
class EvalSummary:
    """The results of one eval run, printed at its end and stored in the evals table."""

    run_id: str
    # per video: video, source, error and the dimensions (what the aggregates and --json need)
    rows: list[dict[str, Any]] = field(default_factory=list)
    aggregates: dict[str, dict[str, Any]] = field(default_factory=dict)
    frechet_image_tower: float | None = None
    placeholders: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Videos whose evaluation failed."""
        return sum(1 for r in self.rows if r["error"] is not None)

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
        out = [f"eval: {len(self.rows)} videos, run {self.run_id}"]
        for source, agg in self.aggregates.items():
            if not agg.get("videos"):
                continue
            dims = " ".join(f"{d}={agg[d]:.4f}" for d in DIMENSIONS)
            out.append(
                f"  {source} ({agg['videos']} videos): {dims} quality_score={agg['quality_score']:.4f}"
            )
        if self.frechet_image_tower is not None:
            out.append(
                f"  Frechet distance, image-tower features, samples vs curated clips: {self.frechet_image_tower:.4f}"
            )
        out.extend(
            f"  FAILED {row['video']}: {row['error']}" for row in self.rows if row["error"] is not None
        )
        if self.placeholders:
            marks = ", ".join(f"{k} from {v}" for k, v in sorted(self.placeholders.items()))
            out.append(f"  PLACEHOLDER values (random-weight models): {marks}")
        return out

    def json_rows(self) -> list[dict[str, Any]]:
        """The --json layout: per video `path` and the seven dimensions (null when it failed)."""
        return [{"path": r["video"], **{d: r[d] for d in DIMENSIONS}} for r in self.rows]


# ---- what to evaluate ----------------------------------------------------------------------------
def file_items(paths: Iterable[str]) -> Iterator[Item]:
    """Video files; a `<stem>.json` sample record beside one names its prompt and checkpoint."""
    for path in paths:
        record_path = Path(path).with_suffix(".json")
        if not record_path.is_file():
            yield Item(path, "files")
            continue
        record = json.loads(record_path.read_text())
        checkpoint = record.get("checkpoint")
        yield Item(
            path,
            "samples",
            prompt=record.get("prompt"),
            checkpoint=checkpoint,
            checkpoint_step=_step_of(checkpoint),
            placeholders=record.get("placeholder_inputs") or {},
        )


def _step_of(checkpoint: str | None) -> int | None:
    state = Path(checkpoint) / "state.json" if checkpoint else None
    if state is None or not state.is_file():
        return None
    return int(json.loads(state.read_text())["step"])


def checkpoint_items(cfg: PipelineConfig, checkpoint: Path, prompts: Sequence[str]) -> list[Item]:
    """Sample `prompts` from `checkpoint` with the fixed seed, then evaluate the videos."""
    from train.sample import resolve_checkpoint, sample

    step_dir = resolve_checkpoint(checkpoint)
    step = _step_of(str(step_dir))
    out = Path(cfg.store.root) / "evals" / "samples" / f"step_{step or 0:07d}"
    sample_cfg = cfg.sample.model_copy(
        update={
            "prompts": tuple(prompts),
            "checkpoint": str(step_dir),
            "out_dir": str(out),
            "seed": cfg.eval.seed,
        }
    )
    return [
        Item(str(r.mp4), "checkpoint", None, r.prompt, str(step_dir), step, r.placeholder_inputs)
        for r in sample(sample_cfg)
    ]


def store_items(store: Store, where: str, batch_rows: int = 32) -> Iterator[Item]:
    """Curated clips matching `where`, their bytes read `batch_rows` at a time by row id."""
    ds = store.require(CLIPS)
    caption = "caption" if "caption" in ds.schema.names else None
    marks = schema_marks(ds.schema)
    columns = ["clip_id", *([caption] if caption else [])]
    reader = ClipReader.of(ds)
    for batch in ds.to_batches(
        columns=columns, filter=where or None, with_row_id=True, batch_size=batch_rows
    ):
        blobs = reader.blobs(batch.column(ROW_ID).to_pylist())
        ids = batch.column("clip_id").to_pylist()
        prompts = batch.column(caption).to_pylist() if caption else [None] * len(ids)
        inputs = {"prompt": marks[caption]} if caption and caption in marks else {}
        for clip_id, data, prompt in zip(ids, blobs, prompts, strict=True):
            yield Item(f"clip:{clip_id}", "store", data, prompt, placeholders=inputs)


# ---- evaluating ------------------------------------------------------------------------------------
def evaluate(
    items: Iterable[Item], scorer: VBenchScorer, cfg: EvalConfig, run_id: str
) -> Iterator[tuple[dict[str, Any], np.ndarray | None]]:
    """Rows for the evals table (and each video's feature): a video that does not decode gets its
    reason in `error` and the run goes on."""
    models = json.dumps(scorer.models(), sort_keys=True, default=str)
    model_marks = scorer.placeholders()
    for item in items:
        row: dict[str, Any] = {
            "run_id": run_id,
            "video": item.video,
            "source": item.source,
            "prompt": item.prompt,
            "checkpoint": item.checkpoint,
            "checkpoint_step": item.checkpoint_step,
            "models": models,
            "error": None,
            "frames": None,
            **dict.fromkeys(DIMENSIONS),
        }
        feature = None
        try:
            video: Video = read_video(item.data if item.data is not None else item.video, cfg)
        except (FrameDecodeError, OSError) as err:
            row["error"] = str(err)
        else:
            scores, feature = scorer(video)
            row.update(scores, frames=len(video.frames))
        marks = {**{f"video ({k})": v for k, v in item.placeholders.items()}, **model_marks}
        row["placeholders"] = json.dumps(marks, sort_keys=True) if marks else None
        row["evaluated_at"] = dt.datetime.now(dt.UTC)
        yield row, feature


def run_eval(
    cfg: PipelineConfig, items: Iterable[Item], store_root: Path, scorer: VBenchScorer | None = None
) -> EvalSummary:
    """Evaluate `items` into the evals table under `store_root`; aggregates per source, and the
    Frechet distance when generated videos and curated clips are both in the run."""
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    scorer = scorer or VBenchScorer(cfg.eval, cfg.score)
    summary = EvalSummary(run_id, placeholders=scorer.placeholders())
    # generated videos vs curated clips: their features' running moments (bounded memory)
    sides = {"generated": FeatureMoments(), "curated": FeatureMoments()}
    schema = table_schema(EVALS, {"tower_embedding": scorer.tower.embed_dim})
    pending: list[dict[str, Any]] = []
    uri = str(store_root / "evals.lance")
    for row, feature in evaluate(items, scorer, cfg.eval, run_id):
        pending.append({**row, "tower_embedding": None if feature is None else feature.tolist()})
        summary.rows.append({k: row[k] for k in ("video", "source", "error", *DIMENSIONS)})
        if feature is not None:
            sides["curated" if row["source"] == "store" else "generated"].add(feature)
        if len(pending) >= _WRITE_ROWS:
            _append(uri, pending, schema)
            pending = []
    _append(uri, pending, schema)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in summary.rows:
        by_source.setdefault(row["source"], []).append(row)
    summary.aggregates = {source: aggregate(rows) for source, rows in by_source.items()}
    if sides["generated"].n >= 2 and sides["curated"].n >= 2:
        summary.frechet_image_tower = frechet_distance(sides["generated"], sides["curated"])
    if Path(uri, "_versions").is_dir():
        _record_run(uri, summary)
    return summary


def _append(uri: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    if not rows:
        return
    table = pa.Table.from_pylist(rows, schema=schema)
    mode = "append" if Path(uri, "_versions").is_dir() else "create"
    lance.write_dataset(table, uri, schema=schema, mode=mode, data_storage_version=DATA_STORAGE_VERSION)


def _record_run(uri: str, summary: EvalSummary) -> None:
    """The run's aggregates and distance in the table metadata, and placeholder marks on the columns
    a random-weight model wrote (they stay once any run was a placeholder: its rows stay too)."""
    ds = lance.dataset(uri)
    record = {
        "aggregates": summary.aggregates,
        "frechet_image_tower": summary.frechet_image_tower,
        "videos": len(summary.rows),
        "failed": summary.failed,
        "placeholders": summary.placeholders,
    }
    ds.update_metadata({RUN_KEY_PREFIX + summary.run_id: json.dumps(record, sort_keys=True)})
    present = schema_marks(ds.schema)
    updates: dict[str, dict[str, str | None]] = {
        c: {PLACEHOLDER_KEY: m} for c, m in summary.placeholders.items() if c not in present
    }
    if updates:
        ds.update_field_metadata(updates)


def eval_runs(store_root: Path) -> dict[str, dict[str, Any]]:
    """Every run's record (aggregates, Frechet distance), by run id, oldest first."""
    uri = store_root / "evals.lance"
    if not (uri / "_versions").is_dir():
        return {}
    meta = lance.dataset(str(uri)).metadata
    meta = meta() if callable(meta) else meta
    return {
        k[len(RUN_KEY_PREFIX) :]: json.loads(v)
        for k, v in sorted(meta.items())
        if k.startswith(RUN_KEY_PREFIX)
    }


def training_evaluator(cfg: PipelineConfig) -> Callable[[int, Any, Any], dict[str, float]]:
    """The train loop's evaluator (train.loop.Evaluator): the EMA model samples eval.prompts (else
    sample.prompts) with eval.seed at sample's shape into <train.out_dir>/eval/step_NNNNNNN/ (MP4 + GIF:
    the report's sample grid), the videos are scored into the evals table (source `training`), and the
    mean of each dimension (and VBench's quality score) is returned for the loop to log."""
    from train.loader import tensor_to_frames
    from train.sample import generate, slug, write_gif, write_mp4
    from train.vae import load_vae

    prompts = list(cfg.eval.prompts or cfg.sample.prompts)
    shape = cfg.sample
    loaded: dict[str, Any] = {}
    store = Store(cfg.store.root)
    marks = schema_marks(store.require(CLIPS).schema)
    inputs = {c: m for c, m in marks.items() if c == cfg.train.data.caption_column}

    def evaluate_step(step: int, model: Any, text_encoder: Any) -> dict[str, float]:
        if not loaded:
            loaded["vae"] = load_vae(cfg.train.vae)
            loaded["scorer"] = VBenchScorer(cfg.eval, cfg.score)
        videos = generate(
            model, loaded["vae"], text_encoder, prompts, shape.frames, shape.height, shape.width,
            shape.steps, shape.cfg_scale, cfg.eval.seed,
        )  # fmt: skip
        out = Path(cfg.train.out_dir) / "eval" / f"step_{step:07d}"
        out.mkdir(parents=True, exist_ok=True)
        items = []
        for i, (prompt, video) in enumerate(zip(prompts, videos, strict=True)):
            frames = tensor_to_frames(video)
            stem = f"{i:02d}_{slug(prompt)}_seed{cfg.eval.seed}"
            write_gif(frames, out / f"{stem}.gif", shape.fps)
            mp4 = write_mp4(frames, out / f"{stem}.mp4", shape.fps)
            items.append(Item(str(mp4), "training", None, prompt, cfg.train.out_dir, step, inputs))
        summary = run_eval(cfg, items, store.root, loaded["scorer"])
        agg = summary.aggregates.get("training", {})
        return {d: float(agg.get(d, float("nan"))) for d in (*DIMENSIONS, "quality_score")}

    return evaluate_step

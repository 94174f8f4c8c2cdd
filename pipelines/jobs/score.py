"""`reelforge score` and `reelforge filter`: score columns, duplicates and the recorded selection.

The score job is one flat Ray Data chain:

    clip ids lacking scores
      -> decode_and_measure   CPU tasks: read blobs, decode once, motion + quality + hashes,
                              resize frames for the models                    (score.decode_*)
      -> ClipStage            actors: CLIP embedding + aesthetic head            (score.clip.*)
      -> TextAreaStage        actors: EasyOCR detector text area                 (score.ocr.*)
      -> driver               stages finished rows (resumable), then merges them into `clips`

Then dedup runs on the driver over all embeddings (it needs every clip at once) and adds
`duplicate_of`; filtering is a separate step that adds `selected` and records its expression.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# curate.embed (torch + open_clip, ~5 s to import) is imported inside the functions that need it:
# this module is what every CPU decode worker unpickles, and those must start in well under a second.
from curate import filtering
from curate.config import DedupConfig, ScoreConfig
from curate.decode import use_cpus
from curate.dedup import find_duplicates, frame_signature
from curate.frames import FrameDecodeError, clip_input, decode_clip
from curate.motion import MotionScorer
from curate.ocr import ocr_input
from curate.quality import QualityScorer
from pipelines.config import PipelineConfig
from pipelines.runtime import clip_id_dataset, init_ray
from pipelines.store import ColumnStaging, Store

SCORE_STAGE, DEDUP_STAGE, FILTER_STAGE = "score", "dedup", "filter"
SIGNATURE_SIZE = 4 * 16 * 16  # frame_signature(): 4 frames of 16x16

_MOTION_COLUMNS = {
    "motion": pa.float64(),
    "motion_max": pa.float64(),
    "is_still": pa.bool_(),
    "camera_shake": pa.float64(),
}
_QUALITY_COLUMNS = {
    "sharpness": pa.float64(),
    "luma_mean": pa.float64(),
    "clipped_black": pa.float64(),
    "clipped_white": pa.float64(),
    "contrast": pa.float64(),
    "colorfulness": pa.float64(),
    "blockiness": pa.float64(),
    "too_dark": pa.bool_(),
    "too_bright": pa.bool_(),
    "technical_quality": pa.float64(),
}


def score_schema(cfg: ScoreConfig, embed_dim: int | None) -> pa.Schema:
    """Columns the score stage writes (clip_id is the join key)."""
    fields = [
        pa.field("clip_id", pa.string()),
        pa.field("score_error", pa.string()),
        pa.field("frames_sampled", pa.int32()),
        pa.field("content_hash", pa.string()),
    ]
    if cfg.motion.enabled:
        fields += [pa.field(k, t) for k, t in _MOTION_COLUMNS.items()]
    if cfg.quality.enabled:
        fields += [pa.field(k, t) for k, t in _QUALITY_COLUMNS.items()]
    if cfg.dedup.enabled and cfg.dedup.signature == "frame_signature":
        fields.append(pa.field("frame_signature", pa.list_(pa.float32(), SIGNATURE_SIZE)))
    if _runs_clip(cfg):
        if cfg.embedding.enabled:
            assert embed_dim is not None
            fields.append(pa.field("clip_embedding", pa.list_(pa.float32(), embed_dim)))
        if cfg.aesthetic.enabled:
            fields += [pa.field("aesthetic_mean", pa.float64()), pa.field("aesthetic_min", pa.float64())]
    if cfg.ocr.enabled:
        fields += [pa.field("text_area", pa.float64()), pa.field("text_area_max", pa.float64())]
    return pa.schema(fields)


def _runs_clip(cfg: ScoreConfig) -> bool:
    return cfg.aesthetic.enabled or cfg.embedding.enabled


# ---- CPU stage -----------------------------------------------------------------------------------
def decode_and_measure(
    batch: dict[str, np.ndarray], store_root: str, cfg: ScoreConfig, clip_size: int
) -> dict[str, Any]:
    """Decode each clip once; compute the CPU scores and the model inputs. A bad clip gets score_error."""
    use_cpus(cfg.decode_num_cpus)
    ids = [str(c) for c in batch["clip_id"]]
    blobs = Store(store_root).read_clip_bytes(ids)
    motion = MotionScorer(cfg.motion) if cfg.motion.enabled else None
    quality = QualityScorer(cfg.quality) if cfg.quality.enabled else None
    rows: list[dict[str, Any]] = []
    for clip_id in ids:
        row: dict[str, Any] = {
            "clip_id": clip_id,
            "score_error": None,
            "frames_sampled": 0,
            "content_hash": None,
        }
        try:
            data = blobs.get(clip_id)
            if data is None:
                raise FrameDecodeError("clip bytes missing from the store")
            frames = decode_clip(
                data,
                cfg.frames,
                motion_width=cfg.motion.width
                if cfg.motion.enabled and cfg.motion.method != "codec_mvs"
                else 0,
                motion_run_length=cfg.motion.run_length,
                motion_points=cfg.motion.points,
                codec_motion_vectors=cfg.motion.enabled and cfg.motion.method == "codec_mvs",
            )
            row["frames_sampled"] = int(frames.frames.shape[0])
            row["content_hash"] = frames.content_hash()
            if motion is not None:
                row.update(vars(motion(frames)))
            if quality is not None:
                row.update(vars(quality(frames.frames)))
            if "frame_signature" in _signature_wanted(cfg):
                row["frame_signature"] = frame_signature(frames.frames)
            row["clip_pixels"] = clip_input(frames.frames, clip_size) if _runs_clip(cfg) else None
            row["ocr_frames"] = (
                ocr_input(frames.frames, cfg.ocr.frames, cfg.ocr.max_side) if cfg.ocr.enabled else None
            )
        except (FrameDecodeError, ValueError) as err:
            row["score_error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
    columns = _columns(rows, cfg, clip_size)
    # Where the batch ran: the summary counts clips per node (how well a cluster was used).
    columns["node_id"] = np.array([_node_id()] * len(ids), dtype=object)
    return columns


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _signature_wanted(cfg: ScoreConfig) -> set[str]:
    return {"frame_signature"} if cfg.dedup.enabled and cfg.dedup.signature == "frame_signature" else set()


def _columns(rows: list[dict[str, Any]], cfg: ScoreConfig, clip_size: int) -> dict[str, Any]:
    """Rows -> a Ray batch. Failed clips get NaN/False placeholders plus empty model inputs."""
    n = len(rows)
    out: dict[str, Any] = {
        "clip_id": np.array([r["clip_id"] for r in rows], dtype=object),
        "score_error": np.array([r["score_error"] for r in rows], dtype=object),
        "frames_sampled": np.array([r["frames_sampled"] for r in rows], dtype=np.int32),
        "content_hash": np.array([r["content_hash"] for r in rows], dtype=object),
    }
    numeric = {}
    if cfg.motion.enabled:
        numeric.update(_MOTION_COLUMNS)
    if cfg.quality.enabled:
        numeric.update(_QUALITY_COLUMNS)
    for name, typ in numeric.items():
        if typ == pa.bool_():
            out[name] = np.array([bool(r.get(name, False)) for r in rows])
        else:
            out[name] = np.array([r.get(name, np.nan) for r in rows], dtype=np.float64)
    if _signature_wanted(cfg):
        out["frame_signature"] = (
            np.stack([r.get("frame_signature", np.full(SIGNATURE_SIZE, np.nan, np.float32)) for r in rows])
            if n
            else np.zeros((0, SIGNATURE_SIZE), np.float32)
        )
    if _runs_clip(cfg):
        out["clip_pixels"] = [
            r.get("clip_pixels")
            if r.get("clip_pixels") is not None
            else np.zeros((0, clip_size, clip_size, 3), np.uint8)
            for r in rows
        ]
    if cfg.ocr.enabled:
        out["ocr_frames"] = [
            r.get("ocr_frames") if r.get("ocr_frames") is not None else np.zeros((0, 1, 1, 3), np.uint8)
            for r in rows
        ]
    return out


# ---- driver side -----------------------------------------------------------------------------------
def to_staged_table(batch: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """A finished Ray batch as a typed Arrow table: NaN scores of failed clips become nulls."""
    errors = [e if isinstance(e, str) and e else None for e in batch["score_error"]]
    failed = np.array([e is not None for e in errors])
    arrays = []
    for field_ in schema:
        values: Sequence[Any] | np.ndarray = batch[field_.name] if field_.name != "score_error" else errors
        if pa.types.is_fixed_size_list(field_.type):
            matrix = np.asarray(
                np.stack(list(values)) if len(values) else np.zeros((0, field_.type.list_size)),
                dtype=np.float32,
            )
            flat = pa.array(matrix.reshape(-1), pa.float32())
            arr = pa.FixedSizeListArray.from_arrays(flat, field_.type.list_size)
            mask = np.isnan(matrix).any(axis=1) if matrix.size else failed
            arrays.append(pc.if_else(pa.array(mask), pa.nulls(len(arr), field_.type), arr))
        elif pa.types.is_floating(field_.type):
            vals = np.asarray(values, dtype=np.float64)
            arrays.append(pa.array(vals, field_.type, mask=np.isnan(vals)))
        elif pa.types.is_boolean(field_.type):
            arrays.append(pa.array(np.asarray(values, dtype=bool), field_.type, mask=failed))
        else:
            arrays.append(pa.array([None if v is None else v for v in list(values)], field_.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def model_records(cfg: ScoreConfig) -> dict[str, Any]:
    """What produced each column family, recorded with the dataset; placeholders are marked."""
    records: dict[str, Any] = {"frames": cfg.frames.model_dump(mode="json")}
    if cfg.motion.enabled:
        records["motion"] = {"method": cfg.motion.method, "placeholder": False}
    if cfg.quality.enabled:
        records["quality"] = {"measures": sorted(_QUALITY_COLUMNS), "placeholder": False}
    if _runs_clip(cfg):
        from curate.embed import has_weights

        clip_placeholder = not has_weights(cfg.clip)
        records["clip"] = {
            "library": "open_clip",
            "model": cfg.clip.resolved_model(),
            "checkpoint": cfg.clip.checkpoint,
            "placeholder": clip_placeholder,
            "columns": ["clip_embedding"] if cfg.embedding.enabled else [],
        }
        if cfg.aesthetic.enabled:
            records["aesthetic"] = {
                "layout": "laion-improved-aesthetic-predictor",
                "head_checkpoint": cfg.aesthetic.head_checkpoint,
                "placeholder": clip_placeholder or cfg.aesthetic.head_checkpoint is None,
                "columns": ["aesthetic_mean", "aesthetic_min"],
            }
    if cfg.ocr.enabled:
        records["ocr"] = {
            "library": "easyocr",
            "detector": "craft_mlt_25k",
            "placeholder": False,
            "columns": ["text_area", "text_area_max"],
        }
    return records


@dataclass
class ScoreSummary:
    total_clips: int = 0
    scored: int = 0
    skipped_done: int = 0
    errors: int = 0
    seconds: float = 0.0
    duplicates: int = 0
    placeholders: list[str] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    clips_per_node: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        rate = self.scored / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"score: {self.total_clips} clips, {self.scored} scored this run ({rate:.2f} clips/s), "
            f"{self.skipped_done} already scored, {self.errors} with errors, {self.duplicates} duplicates"
            + (f", on {len(self.clips_per_node)} node(s)" if self.clips_per_node else ""),
        ]
        out += [f"  error: {e}" for e in self.error_examples]
        if self.placeholders:
            out.append(f"  PLACEHOLDER scores (random weights, not real): {', '.join(self.placeholders)}")
        return out


def build_dataset(store: Store, cfg: ScoreConfig, clip_ids: list[str], clip_size: int):
    """The Ray Data chain of the module docstring (resources from the config)."""
    import ray

    ds: ray.data.Dataset = clip_id_dataset(clip_ids, cfg.decode_batch_size)
    decode_kwargs: dict[str, Any] = {}
    if cfg.decode_concurrency:
        decode_kwargs["concurrency"] = cfg.decode_concurrency
    ds = ds.map_batches(
        decode_and_measure,  # type: ignore[arg-type]  # Ray types the UDF as one-argument; fn_kwargs supplies the rest
        batch_format="numpy",
        batch_size=cfg.decode_batch_size,
        num_cpus=cfg.decode_num_cpus,
        fn_kwargs={"store_root": str(store.root), "cfg": cfg, "clip_size": clip_size},
        **decode_kwargs,
    )
    if _runs_clip(cfg):
        from curate.embed import ClipStage

        ds = ds.map_batches(
            ClipStage,
            fn_constructor_args=(cfg,),
            batch_format="numpy",
            batch_size=cfg.clip.batch_size,
            concurrency=cfg.clip.concurrency,
            num_cpus=cfg.clip.num_cpus,
            num_gpus=cfg.clip.num_gpus,
        )
    if cfg.ocr.enabled:
        from curate.ocr import TextAreaStage

        ds = ds.map_batches(
            TextAreaStage,
            fn_constructor_args=(cfg.ocr,),
            batch_format="numpy",
            batch_size=cfg.ocr.batch_size,
            concurrency=cfg.ocr.concurrency,
            num_cpus=cfg.ocr.num_cpus,
            num_gpus=cfg.ocr.num_gpus,
        )
    return ds


def run_score(config: PipelineConfig, *, recompute: bool = False, progress: bool = True) -> ScoreSummary:
    """Score every clip lacking the score columns, merge them into `clips`, then mark duplicates."""
    from tqdm import tqdm

    cfg = config.score
    store = Store(config.store.root)
    summary = ScoreSummary()
    started = time.perf_counter()
    staging = ColumnStaging(store, SCORE_STAGE)
    if recompute:
        staging.reset()
    all_ids = store.read_clips(columns=["clip_id"]).column("clip_id").to_pylist()
    done = staging.done_ids()
    todo = sorted(set(all_ids) - done)
    summary.total_clips, summary.skipped_done = len(all_ids), len(set(all_ids) & done)
    _refuse_missing_weights(cfg)
    clip_size = _tower_input_size(cfg) if _runs_clip(cfg) else 0
    embed_dim = _embed_dim(cfg) if _runs_clip(cfg) else None
    schema = score_schema(cfg, embed_dim)
    if todo:
        init_ray(config.ray)  # else Ray Data starts a default Ray, ignoring ray.address/num_cpus/temp_dir
        ds = build_dataset(store, cfg, todo, clip_size)
        bar = tqdm(total=len(todo), desc="score", unit="clip", disable=not progress)
        for batch in ds.iter_batches(batch_size=cfg.commit_every, batch_format="numpy"):
            summary.clips_per_node.update(str(n) for n in batch["node_id"])
            table = to_staged_table(batch, schema)
            staging.append(table)
            summary.scored += table.num_rows
            bar.update(table.num_rows)
        bar.close()
    summary.errors, summary.error_examples = staging.errors("score_error")
    models = model_records(cfg)
    staging.merge_into_clips(config=cfg.model_dump(mode="json"), models=models)
    summary.placeholders = sorted(
        k for k, v in models.items() if isinstance(v, dict) and v.get("placeholder")
    )
    if cfg.dedup.enabled:
        summary.duplicates = run_dedup(store, cfg.dedup, clip_placeholder="clip" in summary.placeholders)
    summary.seconds = time.perf_counter() - started
    return summary


def _refuse_missing_weights(cfg: ScoreConfig) -> None:
    """Fail on the driver, with the scorers' own messages, before any Ray work starts."""
    if not _runs_clip(cfg) or cfg.clip.allow_random_weights:
        return
    from curate.embed import ClipImageTower, has_weights

    if not has_weights(cfg.clip):
        ClipImageTower(cfg.clip)
    if cfg.aesthetic.enabled and cfg.aesthetic.head_checkpoint is None:
        from curate.aesthetic import load_head

        load_head(cfg.aesthetic, 0, allow_random=False, seed=0)


def _tower_input_size(cfg: ScoreConfig) -> int:
    from curate.embed import tower_input_size

    return tower_input_size(cfg.clip)


def _embed_dim(cfg: ScoreConfig) -> int:
    import open_clip

    return int(open_clip.get_model_config(cfg.clip.resolved_model())["embed_dim"])


def run_dedup(store: Store, cfg: DedupConfig, *, clip_placeholder: bool) -> int:
    """Add `duplicate_of` over the whole clips table; returns how many clips are duplicates."""
    column = "clip_embedding" if cfg.signature == "clip_embedding" else "frame_signature"
    table = store.read_clips(columns=["clip_id", "content_hash", column])
    vectors = None
    if table.num_rows:
        values = table[column].combine_chunks()
        dim = values.type.list_size
        filled = pc.fill_null(values, pa.scalar([np.nan] * dim, values.type))
        vectors = np.asarray(filled.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    duplicate_of = find_duplicates(
        table["clip_id"].to_pylist(), table["content_hash"].to_pylist(), vectors, cfg
    )
    out = pa.table({"clip_id": table["clip_id"], "duplicate_of": pa.array(duplicate_of, pa.string())})
    models = {"signature": column, "placeholder": column == "clip_embedding" and clip_placeholder}
    store.add_columns(out, DEDUP_STAGE, cfg.model_dump(mode="json"), models)
    return sum(d is not None for d in duplicate_of)


@dataclass
class FilterSummary:
    expression: str
    total: int
    selected: int

    def lines(self) -> list[str]:
        return [
            f"filter: {self.selected}/{self.total} clips selected by: {self.expression or '(everything scored)'}"
        ]


def run_filter(config: PipelineConfig, expression: str | None = None) -> FilterSummary:
    """Evaluate the filter expression and store it as the `selected` column + the recorded expression.

    Clips whose scoring failed are never selected. The canonical expression and the dataset version
    it was evaluated on are recorded, so training reads exactly this selection.
    """
    store = Store(config.store.root)
    text = config.filter.expression if expression is None else expression
    node = filtering.parse(text)
    needed = sorted(filtering.columns(node) | {"clip_id", "score_error"})
    available = set(store.require("clips").schema.names)
    if "score_error" not in available:
        raise filtering.FilterExpressionError(
            "no score columns in the clips table: run `reelforge score` first"
        )
    missing = sorted(set(needed) - available)
    if missing:
        raise filtering.FilterExpressionError(
            f"filter names unknown column(s) {missing}; available: {', '.join(sorted(available))}"
        )
    table = store.read_clips(columns=needed)
    mask = pc.and_(filtering.selection(text, table), pc.is_null(table["score_error"]).combine_chunks())
    version = store.require("clips").version
    store.add_columns(
        pa.table({"clip_id": table["clip_id"], "selected": mask}),
        FILTER_STAGE,
        {
            "expression": "" if node is None else str(node),
            "source_expression": text,
            "evaluated_on_version": version,
        },
    )
    return FilterSummary(
        expression="" if node is None else str(node),
        total=table.num_rows,
        selected=int(pc.sum(mask).as_py() or 0),
    )

"""`reelforge score` and `reelforge filter`: score columns, duplicates and the recorded selection.

The score job is one flat Ray Data chain:

    work list: row ids of the clips lacking scores, at one clips version
      -> decode_and_measure   CPU tasks: read blobs by row id, decode once, motion + quality + hashes,
                              resize frames for the models                    (score.decode_*)
      -> ClipStage            actors: CLIP embedding + aesthetic head            (score.clip.*)
      -> TextAreaStage        actors: EasyOCR detector text area                 (score.ocr.*)
      -> driver               stages finished rows (resumable), then merges them into `clips`
                              fragment by fragment

Then dedup (pipelines/jobs/dedup.py) streams the signatures through a vector index and adds
`duplicate_of`; filtering is a separate step that adds `selected` and records its expression.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# curate.embed (torch + open_clip, ~5 s to import) is imported inside the functions that need it:
# this module is what every CPU decode worker unpickles, and those must start in well under a second.
from curate import filtering
from curate.config import ScoreConfig
from curate.decode import use_cpus
from curate.dedup import frame_signature
from curate.frames import FrameDecodeError, clip_input, decode_clip
from curate.motion import MotionScorer, MotionScores
from curate.ocr import ocr_input
from curate.quality import QualityScorer, QualityScores
from pipelines.config import PipelineConfig
from pipelines.jobs.dedup import run_dedup
from pipelines.outcome import errors_of
from pipelines.runtime import actor_pool, blocks_of, init_ray, task_pool, work_dataset
from store import ROW_ID, ClipReader, ColumnStaging, Store, WorkList, contract
from store.placeholders import mark_placeholders

SCORE_STAGE, FILTER_STAGE = "score", "filter"
SIGNATURE_SIZE = 4 * 16 * 16  # frame_signature(): 4 frames of 16x16


def score_schema(cfg: ScoreConfig, embed_dim: int | None) -> pa.Schema:
    """Columns the score stage writes for this config (clip_id is the join key), typed by the contract."""
    names = ["score_error", "frames_sampled", "content_hash"]
    if cfg.motion.enabled:
        names += [f.name for f in fields(MotionScores)]
    if cfg.quality.enabled:
        names += [f.name for f in fields(QualityScores)]
    if _signature_wanted(cfg):
        names.append("frame_signature")
    if _runs_clip(cfg):
        if cfg.embedding.enabled:
            names.append("clip_embedding")
        if cfg.aesthetic.enabled:
            names += ["aesthetic_mean", "aesthetic_min"]
    if cfg.ocr.enabled:
        names += ["text_area", "text_area_max"]
    widths = {"clip_embedding": embed_dim} if embed_dim else {}
    return contract.stage_schema(SCORE_STAGE, names, widths=widths)


def _runs_clip(cfg: ScoreConfig) -> bool:
    return cfg.aesthetic.enabled or cfg.embedding.enabled


# ---- CPU stage -----------------------------------------------------------------------------------
def decode_and_measure(
    batch: dict[str, np.ndarray], store_root: str, version: int, cfg: ScoreConfig, clip_size: int
) -> dict[str, Any]:
    """Decode each clip once; compute the CPU scores and the model inputs. A bad clip gets score_error.

    The batch's blobs are read by row id at the listed version: O(batch), whatever the table's size."""
    use_cpus(cfg.decode_num_cpus)
    ids = [str(c) for c in batch["clip_id"]]
    blobs = dict(zip(ids, ClipReader.at(store_root, version).blobs(batch[ROW_ID]), strict=True))
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
            if not data:
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
    columns[ROW_ID] = np.asarray(batch[ROW_ID], dtype=np.uint64)
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
        numeric.update(_types(MotionScores))
    if cfg.quality.enabled:
        numeric.update(_types(QualityScores))
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
def _types(scores: type[MotionScores] | type[QualityScores]) -> dict[str, pa.DataType]:
    """The contract's type of each field of a scorer's result dataclass."""
    return {f.name: contract.COLUMNS[contract.CLIPS][f.name].type for f in fields(scores)}


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
            # A string column that is None for every clip of a batch (all failed) comes back from
            # Ray's Arrow round trip as float NaN.
            arrays.append(pa.array([None if _missing(v) else v for v in list(values)], field_.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    return table.append_column(ROW_ID, pa.array(np.asarray(batch[ROW_ID], dtype=np.uint64)))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def model_records(cfg: ScoreConfig) -> dict[str, Any]:
    """What produced each column family, recorded with the dataset; placeholders are marked."""
    records: dict[str, Any] = {"frames": cfg.frames.model_dump(mode="json")}
    if cfg.motion.enabled:
        records["motion"] = {"method": cfg.motion.method, "placeholder": False}
    if cfg.quality.enabled:
        records["quality"] = {"measures": sorted(f.name for f in fields(QualityScores)), "placeholder": False}
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
    # This run's failures, grouped by reason.
    failures: Counter = field(default_factory=Counter)
    clips_per_node: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def lines(self) -> list[str]:
        rate = self.scored / self.seconds if self.seconds > 0 else 0.0
        outcome = f"{self.scored - self.failed} of {self.scored} scored this run ({rate:.2f} clips/s)"
        if self.failed:
            outcome += f": {self.failed} failed"
        out = [
            f"score: {outcome}; {self.total_clips} clips, {self.skipped_done} already scored, "
            f"{self.duplicates} duplicates"
            + (f", on {len(self.clips_per_node)} node(s)" if self.clips_per_node else ""),
        ]
        out += [f"  {n:5d} x {reason}" for reason, n in self.failures.most_common()]
        out += [f"  error: {e}" for e in self.error_examples]
        if self.placeholders:
            out.append(f"  PLACEHOLDER scores (random weights, not real): {', '.join(self.placeholders)}")
        return out


def build_dataset(store: Store, cfg: ScoreConfig, work: WorkList, clip_size: int):
    """The Ray Data chain of the module docstring (resources from the config)."""
    import ray

    ds: ray.data.Dataset = work_dataset(work.rows, cfg.decode_batch_size)
    blocks = blocks_of(work.rows.num_rows, cfg.decode_batch_size)
    ds = ds.map_batches(
        decode_and_measure,  # type: ignore[arg-type]  # Ray types the UDF as one-argument; fn_kwargs supplies the rest
        batch_format="numpy",
        batch_size=cfg.decode_batch_size,
        num_cpus=cfg.decode_num_cpus,
        fn_kwargs={
            "store_root": str(store.root),
            "version": work.version,
            "cfg": cfg,
            "clip_size": clip_size,
        },
        compute=task_pool(cfg.decode_concurrency, blocks),
    )
    if _runs_clip(cfg):
        from curate.embed import ClipStage

        ds = ds.map_batches(
            ClipStage,
            fn_constructor_args=(cfg,),
            batch_format="numpy",
            batch_size=cfg.clip.batch_size,
            compute=actor_pool(cfg.clip.concurrency, blocks),
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
            compute=actor_pool(cfg.ocr.concurrency, blocks),
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
    refuse_missing_weights(cfg)  # before anything is dropped or staged
    if recompute:
        staging.reset()
        store.drop_columns(SCORE_STAGE)
    clips = store.require("clips")
    # Done: scored in `clips` (frames_sampled is set for every scored clip, failed ones included) or
    # staged by a run that was killed before its merge.
    lacking = "frames_sampled IS NULL" if "frames_sampled" in clips.schema.names else None
    todo = store.work_list(filter=lacking, exclude=staging)
    summary.total_clips = clips.count_rows()
    summary.skipped_done = summary.total_clips - len(todo)
    clip_size = _tower_input_size(cfg) if _runs_clip(cfg) else 0
    embed_dim = _embed_dim(cfg) if _runs_clip(cfg) else None
    schema = score_schema(cfg, embed_dim)
    if len(todo):
        init_ray(config.ray)  # else Ray Data starts a default Ray, ignoring ray.address/num_cpus/temp_dir
        ds = build_dataset(store, cfg, todo, clip_size)
        bar = tqdm(total=len(todo), desc="score", unit="clip", disable=not progress)
        for batch in ds.iter_batches(batch_size=cfg.commit_every, batch_format="numpy"):
            summary.clips_per_node.update(str(n) for n in batch["node_id"])
            table = to_staged_table(batch, schema)
            staging.append(table)
            summary.scored += table.num_rows
            summary.failures.update(errors_of(table, "score_error"))
            bar.update(table.num_rows)
        bar.close()
    summary.errors, summary.error_examples = staging.errors("score_error")
    models = model_records(cfg)
    if staging.merge_into_clips(config=cfg.model_dump(mode="json"), models=models) is not None:
        staging.reset()  # merged: the clips table now says what is done
    summary.placeholders = sorted(
        k for k, v in models.items() if isinstance(v, dict) and v.get("placeholder")
    )
    if cfg.dedup.enabled:
        summary.duplicates = run_dedup(store, cfg.dedup, clip_placeholder="clip" in summary.placeholders)
    mark_placeholders(store)  # in the Arrow schema too, for readers that never see the stage records
    summary.seconds = time.perf_counter() - started
    return summary


def refuse_missing_weights(cfg: ScoreConfig) -> None:
    """Fail on the driver, with the scorers' own messages (MissingWeightsError, FileNotFoundError),
    before any Ray work starts."""
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
    it was evaluated on are recorded, so training reads exactly this selection. The table is read in
    batches of the columns the expression names (bounded memory at any size).
    """
    store = Store(config.store.root)
    text = config.filter.expression if expression is None else expression
    node = filtering.parse(text)
    needed = sorted(filtering.columns(node) | {"clip_id", "score_error"})
    clips = store.require("clips")
    available = set(clips.schema.names)
    if "score_error" not in available:
        raise filtering.FilterExpressionError(
            "no score columns in the clips table: run `reelforge score` first"
        )
    missing = sorted(set(needed) - available)
    if missing:
        raise filtering.FilterExpressionError(
            f"filter names unknown column(s) {missing}; available: {', '.join(sorted(available))}"
        )
    counts = {"total": 0, "selected": 0}

    def selections() -> Iterator[pa.Table]:
        for batch in store.scan("clips", needed):
            table = pa.Table.from_batches([batch])
            mask = pc.and_(
                filtering.selection(text, table), pc.is_null(table["score_error"]).combine_chunks()
            )
            counts["total"] += table.num_rows
            counts["selected"] += int(pc.sum(mask).as_py() or 0)
            yield pa.table({ROW_ID: table[ROW_ID], "clip_id": table["clip_id"], "selected": mask})

    store.add_columns(
        selections(),
        FILTER_STAGE,
        {
            "expression": "" if node is None else str(node),
            "source_expression": text,
            "evaluated_on_version": clips.version,
        },
        schema=pa.schema([(ROW_ID, pa.uint64()), ("clip_id", pa.string()), ("selected", pa.bool_())]),
    )
    return FilterSummary(
        expression="" if node is None else str(node), total=counts["total"], selected=counts["selected"]
    )

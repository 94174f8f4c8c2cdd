"""`reelforge score`: score columns and duplicates.

The score job is one flat Ray Data chain:

    work list: row ids of the clips lacking scores, at one clips version
      -> decode_and_measure   CPU tasks: read blobs by row id, then curate/measure.py: decode once,
                              motion + camera (same flow) + quality + hashes,
                              resize frames for the models            (score.decode_*)
      -> ImageTowerStage      actors: image-tower (open_clip) embedding
                              + aesthetic head                        (score.image_tower.*)
      -> TextAreaStage        actors: EasyOCR detector text area      (score.ocr.*)
      -> driver               stages finished rows (resumable), then merges them into `clips`
                              fragment by fragment

Then dedup (pipelines/jobs/dedup.py) streams the signatures through a vector index and adds
`duplicate_of`; the filter (pipelines/jobs/filter.py) is a step of its own that adds `selected`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# curate.image_tower (torch + open_clip, ~5 s to import) is imported inside the functions that need
# it: this module is what every CPU decode worker unpickles, and those must start in well under a second.
from curate.camera import CameraScores
from curate.config import ScoreConfig
from curate.describe import CAPTION_COLUMNS, with_descriptions
from curate.measure import measure_clips, runs_image_tower, signature_wanted
from curate.motion import MotionScores
from curate.quality import QualityScores
from media.decode import use_cpus
from pipelines.config import PipelineConfig
from pipelines.jobs.dedup import run_dedup
from pipelines.outcome import errors_of
from pipelines.plan import start_job
from pipelines.runtime import actor_pool, blocks_of, task_pool, work_dataset
from store import ROW_ID, ClipReader, ColumnStaging, Store, WorkList, contract
from store.placeholders import mark_placeholders

SCORE_STAGE = "score"
OCR_COLUMNS = ("text_area", "text_area_max", "overlay_text_area", "subtitle_band", "corner_logo")


def score_schema(cfg: ScoreConfig, embed_dim: int | None) -> pa.Schema:
    """Columns the score stage writes for this config (clip_id is the join key), typed by the contract."""
    names = ["score_error", "frames_sampled", "content_hash"]
    if cfg.motion.enabled:
        names += [f.name for f in fields(MotionScores)]
    if cfg.camera.enabled:
        names += [f.name for f in fields(CameraScores)]
    if cfg.borders.enabled:
        names += ["content_box", "border_fraction"]
    if cfg.quality.enabled:
        names += [f.name for f in fields(QualityScores)]
    if signature_wanted(cfg):
        names.append("frame_signature")
    if runs_image_tower(cfg):
        if cfg.embedding.enabled:
            names.append("clip_embedding")
        if cfg.aesthetic.enabled:
            names += ["aesthetic_mean", "aesthetic_min"]
    if cfg.ocr.enabled:
        names += list(OCR_COLUMNS)
    if _describes(cfg):
        names += list(CAPTION_COLUMNS)
    widths = {"clip_embedding": embed_dim} if embed_dim else {}
    return contract.stage_schema(SCORE_STAGE, names, widths=widths)


def _describes(cfg: ScoreConfig) -> bool:
    """The scores in words (curate/describe.py) come from the camera and OCR scores."""
    return cfg.camera.enabled or cfg.ocr.enabled


# ---- CPU stage (curate/measure.py) as Ray tasks ----------------------------------------------------
def decode_and_measure(
    batch: dict[str, np.ndarray], store_root: str, version: int, cfg: ScoreConfig, tower_size: int
) -> dict[str, Any]:
    """curate.measure on a batch of clips, on the CPUs the task was given. A bad clip gets score_error.

    The batch's blobs are read by row id at the listed version: O(batch), whatever the table's size."""
    use_cpus(cfg.decode_num_cpus)
    ids = [str(c) for c in batch["clip_id"]]
    blobs = dict(zip(ids, ClipReader.at(store_root, version).blobs(batch[ROW_ID]), strict=True))
    columns = measure_clips(ids, blobs, cfg, tower_size)
    columns[ROW_ID] = np.asarray(batch[ROW_ID], dtype=np.uint64)
    # Where the batch ran: the summary counts clips per node (how well a cluster was used).
    columns["node_id"] = np.array([_node_id()] * len(ids), dtype=object)
    return columns


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


# ---- driver side -----------------------------------------------------------------------------------
def to_staged_table(batch: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """A finished Ray batch as a typed Arrow table: NaN scores of failed clips become nulls; the scores
    in words (curate/describe.py) are added from the table's own scores when the schema has them."""
    errors = [e if isinstance(e, str) and e else None for e in batch["score_error"]]
    failed = np.array([e is not None for e in errors])
    words = [name for name in CAPTION_COLUMNS if name in schema.names]
    schema = pa.schema([f for f in schema if f.name not in words])
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
        elif pa.types.is_struct(field_.type):
            boxes = np.asarray(np.stack(list(values)) if len(values) else np.zeros((0, 4)), dtype=np.float64)
            unmeasured = np.isnan(boxes).any(axis=1)
            parts = [
                pa.array(np.nan_to_num(boxes[:, i]).astype(np.int32)) for i in range(field_.type.num_fields)
            ]
            arrays.append(
                pa.StructArray.from_arrays(parts, fields=list(field_.type), mask=pa.array(unmeasured))
            )
        elif pa.types.is_floating(field_.type):
            vals = np.asarray(values, dtype=np.float64)
            arrays.append(pa.array(vals, field_.type, mask=np.isnan(vals)))
        elif pa.types.is_boolean(field_.type):
            flags = np.asarray(values)
            # Flags a model stage measured travel as floats, NaN where it measured nothing.
            unmeasured = failed | (np.isnan(flags) if flags.dtype.kind == "f" else False)
            arrays.append(pa.array(flags.astype(bool), field_.type, mask=unmeasured))
        else:
            # Texts travel as "" when missing (see _columns); NaN is what an all-None column of an
            # older batch turns into in Ray's Arrow round trip.
            arrays.append(
                pa.array([None if _missing(v) or v == "" else v for v in list(values)], field_.type)
            )
    table = pa.Table.from_arrays(arrays, schema=schema)
    if words:
        table = with_descriptions(table)
    return table.append_column(ROW_ID, pa.array(np.asarray(batch[ROW_ID], dtype=np.uint64)))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def model_records(cfg: ScoreConfig) -> dict[str, Any]:
    """What produced each column family, recorded with the dataset; placeholders are marked."""
    records: dict[str, Any] = {"frames": cfg.frames.model_dump(mode="json")}
    if cfg.motion.enabled:
        records["motion"] = {"method": cfg.motion.method, "placeholder": False}
    if _describes(cfg):
        records["describe"] = {
            "rules": "curate/describe.py",
            "placeholder": False,
            "columns": list(CAPTION_COLUMNS),
        }
    if cfg.borders.enabled:
        records["borders"] = {"measures": ["content_box", "border_fraction"], "placeholder": False}
    if cfg.camera.enabled:
        records["camera"] = {
            "model": "similarity fitted with RANSAC to the motion flow",
            "placeholder": False,
            "columns": [f.name for f in fields(CameraScores)],
        }
    if cfg.quality.enabled:
        records["quality"] = {"measures": sorted(f.name for f in fields(QualityScores)), "placeholder": False}
    if runs_image_tower(cfg):
        from curate.image_tower import has_weights

        tower_placeholder = not has_weights(cfg.image_tower)
        records["image_tower"] = {
            "library": "open_clip",
            "model": cfg.image_tower.resolved_model(),
            "checkpoint": cfg.image_tower.checkpoint,
            "placeholder": tower_placeholder,
            "columns": ["clip_embedding"] if cfg.embedding.enabled else [],
        }
        if cfg.aesthetic.enabled:
            records["aesthetic"] = {
                "layout": "laion-improved-aesthetic-predictor",
                "head_checkpoint": cfg.aesthetic.head_checkpoint,
                "placeholder": tower_placeholder or cfg.aesthetic.head_checkpoint is None,
                "columns": ["aesthetic_mean", "aesthetic_min"],
            }
    if cfg.ocr.enabled:
        records["ocr"] = {
            "library": "easyocr",
            "detector": "craft_mlt_25k",
            "placeholder": False,
            "columns": list(OCR_COLUMNS),
        }
    return records


@dataclass
class ScoreSummary:
    """Counts of one score run, printed at its end."""

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
        """Clips that failed this run."""
        return sum(self.failures.values())

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
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


def build_dataset(store: Store, cfg: ScoreConfig, work: WorkList, tower_size: int):
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
            "tower_size": tower_size,
        },
        compute=task_pool(cfg.decode_concurrency, blocks),
    )
    if runs_image_tower(cfg):
        from curate.image_tower import ImageTowerStage

        ds = ds.map_batches(
            ImageTowerStage,
            fn_constructor_args=(cfg,),
            batch_format="numpy",
            batch_size=cfg.image_tower.batch_size,
            compute=actor_pool(cfg.image_tower.concurrency, blocks),
            num_cpus=cfg.image_tower.num_cpus,
            num_gpus=cfg.image_tower.num_gpus,
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
    tower_size = _tower_input_size(cfg) if runs_image_tower(cfg) else 0
    embed_dim = _embed_dim(cfg) if runs_image_tower(cfg) else None
    schema = score_schema(cfg, embed_dim)
    if len(todo):
        # Before Ray Data would start a default Ray (ignoring ray.address/num_cpus/temp_dir); refuses
        # what the cluster could never schedule.
        start_job(config, "score")
        ds = build_dataset(store, cfg, todo, tower_size)
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
        summary.duplicates = run_dedup(
            store, cfg.dedup, tower_placeholder="image_tower" in summary.placeholders
        )
    mark_placeholders(store)  # in the Arrow schema too, for readers that never see the stage records
    summary.seconds = time.perf_counter() - started
    return summary


def refuse_missing_weights(cfg: ScoreConfig) -> None:
    """Fail on the driver, with the scorers' own messages (MissingWeightsError, FileNotFoundError),
    before any Ray work starts."""
    if not runs_image_tower(cfg) or cfg.image_tower.allow_random_weights:
        return
    from curate.image_tower import ImageTower, has_weights

    if not has_weights(cfg.image_tower):
        ImageTower(cfg.image_tower)
    if cfg.aesthetic.enabled and cfg.aesthetic.head_checkpoint is None:
        from curate.aesthetic import load_head

        load_head(cfg.aesthetic, 0, allow_random=False, seed=0)


def _tower_input_size(cfg: ScoreConfig) -> int:
    from curate.image_tower import tower_input_size

    return tower_input_size(cfg.image_tower)


def _embed_dim(cfg: ScoreConfig) -> int:
    import open_clip

    return int(open_clip.get_model_config(cfg.image_tower.resolved_model())["embed_dim"])

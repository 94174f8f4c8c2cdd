"""`reelforge encode`: precompute VAE latents and caption embeddings into `clips` columns.

One flat Ray Data chain:

    clip ids the trainer would select (train.data.filter, captioned, fitting a bucket), not yet encoded
      -> read_clip_inputs   CPU tasks: blob bytes + size + caption                    (store)
      -> LatentEncoder      actors: VAE encoder + text encoder                         (train.encode)
      -> driver             stages finished rows (resumable), merges them into `clips` once

The stage's signature (VAE, text encoder, buckets) is recorded with the columns; the trainer only
uses latents whose signature matches its own config, and a changed signature re-encodes everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.config import PipelineConfig
from pipelines.runtime import clip_id_dataset, init_ray
from pipelines.store import ColumnStaging, Store
from train.config import TrainConfig
from train.data import build_index
from train.encode import ENCODE_SCHEMA, LatentEncoder, encode_signature

ENCODE_STAGE = "encode"


@dataclass
class EncodeSummary:
    selected: int = 0
    encoded: int = 0
    skipped_done: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"encode: {self.encoded} clips encoded, {self.skipped_done} already done, {self.errors} errors "
            f"of {self.selected} selected ({self.seconds:.1f} s)"
        ]
        out += [f"  error: {e}" for e in self.error_examples]
        return out


def read_clip_inputs(batch: dict[str, np.ndarray], store_root: str, caption_column: str) -> dict[str, Any]:
    """The encoder's inputs for a batch of clip ids: MP4 bytes, size, frame count, caption."""
    ids = [str(c) for c in batch["clip_id"]]
    store = Store(store_root)
    rows = store.read_clips(
        columns=["clip_id", "width", "height", "num_frames", caption_column],
        filter="clip_id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + ")",
    )
    by_id = {r["clip_id"]: r for r in rows.to_pylist()}
    blobs = store.read_clip_bytes(ids)
    return {
        "clip_id": np.array(ids, dtype=object),
        "video": np.array([blobs[i] for i in ids], dtype=object),
        "width": np.array([by_id[i]["width"] for i in ids], dtype=np.int64),
        "height": np.array([by_id[i]["height"] for i in ids], dtype=np.int64),
        "num_frames": np.array([by_id[i]["num_frames"] for i in ids], dtype=np.int64),
        caption_column: np.array([by_id[i][caption_column] for i in ids], dtype=object),
    }


def build_dataset(store: Store, config: PipelineConfig, clip_ids: list[str]):
    """The Ray Data chain of the module docstring (resources from the config)."""
    import ray

    cfg = config.encode
    ds: ray.data.Dataset = clip_id_dataset(clip_ids, cfg.batch_size)
    ds = ds.map_batches(
        read_clip_inputs,  # type: ignore[arg-type]  # Ray types the UDF as one-argument; fn_kwargs supplies the rest
        batch_format="numpy",
        batch_size=cfg.batch_size,
        num_cpus=0.25,
        fn_kwargs={"store_root": str(store.root), "caption_column": config.train.data.caption_column},
    )
    return ds.map_batches(
        LatentEncoder,
        fn_constructor_args=(config.train,),
        batch_format="numpy",
        batch_size=cfg.batch_size,
        concurrency=cfg.concurrency,
        num_cpus=cfg.num_cpus,
    )


def _signature_record(train: TrainConfig) -> dict[str, Any]:
    return {"signature": encode_signature(train)}


def run_encode(config: PipelineConfig, *, overwrite: bool = False, progress: bool = True) -> EncodeSummary:
    from tqdm import tqdm

    store = Store(config.store.root)
    summary = EncodeSummary()
    started = time.perf_counter()
    staging = ColumnStaging(store, ENCODE_STAGE)
    recorded = store.stage_records().get(ENCODE_STAGE, {}).get("config", {}).get("signature")
    if (
        overwrite
        or config.encode.overwrite
        or (recorded is not None and recorded != encode_signature(config.train))
    ):
        staging.reset()
    index = build_index(store.clips_uri, config.train.data.model_copy(update={"latents": "decode"}))
    done = staging.done_ids()
    todo = [c for c in index.clip_ids if c not in done]
    summary.selected, summary.skipped_done = len(index), len(index) - len(todo)
    if todo:
        init_ray(config.ray)  # else Ray Data starts a default Ray, ignoring ray.address/num_cpus/temp_dir
        ds = build_dataset(store, config, todo)
        bar = tqdm(total=len(todo), desc="encode", unit="clip", disable=not progress)
        for batch in ds.iter_batches(batch_size=config.encode.batch_size, batch_format="pyarrow"):
            table = batch.select(ENCODE_SCHEMA.names).cast(ENCODE_SCHEMA)
            staging.append(table)
            summary.encoded += table.num_rows
            bar.update(table.num_rows)
        bar.close()
    summary.errors, summary.error_examples = staging.errors("encode_error")
    staging.merge_into_clips(
        config=_signature_record(config.train),
        models={"vae": config.train.vae.weights_path, "text": config.train.text.kind},
    )
    summary.seconds = time.perf_counter() - started
    return summary

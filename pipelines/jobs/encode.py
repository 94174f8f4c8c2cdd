"""`reelforge encode`: precompute VAE latents and caption embeddings into `clips` columns.

One flat Ray Data chain:

    work list: row ids, size and caption of the clips the trainer would select (train.data.filter,
    captioned, fitting a bucket), not yet encoded
      -> read_clip_inputs   CPU tasks: blob bytes by row id                            (store)
      -> LatentEncoder      actors: VAE encoder + text encoder, on encode.device       (train.encode)
      -> driver             stages finished rows (resumable), merges them into `clips` once

The stage's signature (VAE, text encoder, buckets) is recorded with the columns; the trainer only
uses latents whose signature matches its own config, and a changed signature re-encodes everything.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import PipelineConfig
from pipelines.outcome import errors_of
from pipelines.plan import start_job
from pipelines.runtime import actor_pool, blocks_of, work_dataset
from pipelines.stage_operators import ENCODE_READ_NUM_CPUS
from store import ROW_ID, ClipReader, ColumnStaging, Store, WorkList
from train.clip_index import build_index
from train.config import DEVICE_CHOICES, DeviceError, EncodeConfig, TrainConfig
from train.encode import ENCODE_SCHEMA, LatentEncoder, encode_signature
from train.prompts import prompt_template, template_columns

ENCODE_STAGE = "encode"


@dataclass
class EncodeSummary:
    """Counts of one encode run, printed at its end."""

    selected: int = 0
    # clips this run attempted, failed ones included
    encoded: int = 0
    skipped_done: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    # This run's failures, grouped by reason.
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Clips that failed this run."""
        return sum(self.failures.values())

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
        outcome = f"{self.encoded - self.failed} of {self.encoded} encoded this run"
        if self.failed:
            outcome += f": {self.failed} failed"
        out = [
            f"encode: {outcome}; {self.skipped_done} already done of {self.selected} selected "
            f"({self.seconds:.1f} s)"
        ]
        out += [f"  {n:5d} x {reason}" for reason, n in self.failures.most_common()]
        out += [f"  error: {e}" for e in self.error_examples]
        return out


def read_clip_inputs(batch: dict[str, np.ndarray], store_root: str, version: int) -> dict[str, Any]:
    """The encoder's inputs: the work list's size, frame count and caption, plus the MP4 bytes read
    by row id (O(batch))."""
    out = dict(batch)
    videos = np.empty(len(batch[ROW_ID]), dtype=object)
    videos[:] = ClipReader.at(store_root, version).blobs(batch[ROW_ID])
    out["video"] = videos
    return out


def encoder_device(cfg: EncodeConfig, cluster_gpus: float) -> str:
    """encode.device resolved against the Ray cluster the actors run on (not this driver): cpu or cuda.
    Ray gives each actor its GPU, which the actor sees as cuda:0, so cuda:N names nothing there."""
    if cfg.device == "cpu" or (cfg.device == "auto" and cluster_gpus == 0):
        return "cpu"
    if cluster_gpus == 0:
        raise DeviceError(
            f"encode.device={cfg.device} but the Ray cluster has no GPU: set encode.device to one of "
            f"{DEVICE_CHOICES} (auto uses the CPU there), or join a cluster with GPUs (ray.address)"
        )
    if cfg.device not in {"auto", "cuda"}:
        raise DeviceError(
            f"encode.device={cfg.device} names one GPU, but Ray gives each encoder actor its own: "
            "set encode.device to auto or cuda"
        )
    return "cuda"


def build_dataset(store: Store, config: PipelineConfig, work: WorkList, device: str = "cpu"):
    """The Ray Data chain of the module docstring (resources from the config); the encoder actors run
    on `device` (from encoder_device), each asking for encode.num_gpus GPUs on CUDA."""
    cfg = config.encode
    ds = work_dataset(work.rows, cfg.batch_size)
    ds = ds.map_batches(
        read_clip_inputs,
        batch_format="numpy",
        batch_size=cfg.batch_size,
        num_cpus=ENCODE_READ_NUM_CPUS,
        fn_kwargs={"store_root": str(store.root), "version": work.version},
    )
    return ds.map_batches(
        LatentEncoder,
        fn_constructor_args=(config.train, device),
        batch_format="numpy",
        batch_size=cfg.batch_size,
        compute=actor_pool(cfg.concurrency, blocks_of(work.rows.num_rows, cfg.batch_size)),
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus if device == "cuda" else 0,
    )


def _signature_record(train: TrainConfig) -> dict[str, Any]:
    return {"signature": encode_signature(train)}


def run_encode(config: PipelineConfig, *, overwrite: bool = False, progress: bool = True) -> EncodeSummary:
    """Encode the selected, captioned clips' latents and text embeddings into the clips table."""
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
        store.drop_columns(ENCODE_STAGE)
    index = build_index(store.clips_uri, config.train.data.model_copy(update={"latents": "decode"}))
    names = store.require("clips").schema.names
    # Done: encoded (or failed) in `clips`, or staged by a run killed before its merge.
    lacking = "latent_bucket IS NULL AND encode_error IS NULL" if "encode_error" in names else None
    prompt_columns = template_columns(prompt_template(config.train.data))
    columns = (
        "clip_id",
        "width",
        "height",
        "num_frames",
        *dict.fromkeys([config.train.data.caption_column, *prompt_columns]),
    )
    work = store.work_list(columns, filter=lacking, exclude=staging)
    chosen = pc.is_in(work.rows[ROW_ID], value_set=pa.array(index.row_ids, pa.uint64()))
    todo = WorkList(work.version, work.rows.filter(chosen))
    summary.selected, summary.skipped_done = len(index), len(index) - len(todo)
    if len(todo):
        # Before Ray Data would start a default Ray (ignoring ray.address/num_cpus/temp_dir); refuses
        # what the cluster could never schedule.
        start_job(config, "encode")
        import ray

        device = encoder_device(config.encode, ray.cluster_resources().get("GPU", 0.0))
        ds = build_dataset(store, config, todo, device)
        bar = tqdm(total=len(todo), desc="encode", unit="clip", disable=not progress)
        for batch in ds.iter_batches(batch_size=config.encode.batch_size, batch_format="pyarrow"):
            table = batch.select(ENCODE_SCHEMA.names).cast(ENCODE_SCHEMA)
            staging.append(table.append_column(ROW_ID, batch[ROW_ID].cast(pa.uint64())))
            summary.encoded += table.num_rows
            summary.failures.update(errors_of(table, "encode_error"))
            bar.update(table.num_rows)
        bar.close()
    summary.errors, summary.error_examples = staging.errors("encode_error")
    merged = staging.merge_into_clips(
        config=_signature_record(config.train),
        models={"vae": config.train.vae.weights_path, "text": config.train.text.kind},
    )
    if merged is not None:
        staging.reset()  # merged: the clips table now says what is done
    summary.seconds = time.perf_counter() - started
    return summary

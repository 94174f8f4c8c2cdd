"""The caption stage job: selected clips -> frames (CPU tasks) -> VLM engine -> caption columns.

    clip ids ─► read blobs + sample frames + JPEG (CPU tasks, `decode_concurrency` ahead)
             ─► engine: `openai`  OpenAICaptioner on the driver (async, bounded requests in flight)
                        `vllm`    Ray Data LLM processor (vLLM in-process, continuous batching)
             ─► caption columns ─► driver: staging (exactly-once resume) ─► merged into `clips`

Ray Data streams the chain, so frame decoding of later batches overlaps the engine's work on
earlier ones. Every clip ends with either a caption or a `caption_error` (unreadable bytes, a failed
request, output rejected by cleanup); nothing stops the job. A rerun captions only the clips still
lacking a caption; `recaption` starts over.

The `vllm` engine imports vllm, so that job runs in the vLLM environment (.venv-vllm); its Ray workers,
and the engine processes they spawn, get caption.vllm.tv_guard through PYTHONPATH (`vllm_runtime_env`).
What is checked before any work is in pipelines/jobs/caption_checks.py; the run's summary is
caption/summary.py.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from functools import partial
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from caption.config import CaptionConfig
from caption.engines import EngineOutput, vllm_output, vllm_request_row
from caption.prompts import measured_context
from caption.stage import (
    CONTEXT_COLUMNS,
    OpenAICaptioner,
    caption_batches,
    caption_columns,
    optional_str,
    prepare_frames,
    to_table,
)
from caption.summary import CaptionSummary
from caption.vllm.runtime import (
    cpu_scheduler_kwargs,
    is_placeholder_model,
    launched_server,
    vllm_env_vars,
    vllm_python,
)
from pipelines.config import PipelineConfig
from pipelines.jobs.caption_checks import CaptionJobError, check_engine_setup, selection_filter
from pipelines.plan import start_job
from pipelines.runtime import blocks_of, task_pool, work_dataset
from store import ROW_ID, ClipReader, ColumnStaging, Store, WorkList
from store.filters import FilterError, check_on, parse_filter
from store.placeholders import mark_placeholders

CAPTION_STAGE = "caption"


def read_and_prepare(
    batch: dict[str, np.ndarray], store_root: str, version: int, cfg: CaptionConfig
) -> dict[str, np.ndarray]:
    """clip ids + row ids -> sampled frames (JPEG for HTTP, raw RGB for in-process vLLM); clips whose
    bytes are missing get a frame_error. Blobs are read by row id: O(batch)."""
    clip_ids = [str(c) for c in batch["clip_id"]]
    reader = ClipReader.at(store_root, version)
    videos = np.empty(len(clip_ids), dtype=object)
    videos[:] = reader.blobs(batch[ROW_ID])
    clips = {"clip_id": np.asarray(clip_ids, dtype=object), "video": videos, ROW_ID: batch[ROW_ID]}
    if cfg.camera_context:
        words = reader.columns(batch[ROW_ID], CONTEXT_COLUMNS).to_pydict()
        clips["context"] = np.asarray(
            [measured_context(*w) for w in zip(*(words[c] for c in CONTEXT_COLUMNS), strict=True)],
            dtype=object,
        )
    encoding: Literal["jpeg", "rgb"] = "rgb" if cfg.engine == "vllm" else "jpeg"
    return prepare_frames(clips, cfg, encoding)


def _vllm_preprocess(row: dict[str, Any], cfg: CaptionConfig) -> dict[str, Any]:
    frame_error = optional_str(row["frame_error"])
    if frame_error is None:
        context = optional_str(row["context"]) if "context" in row else None
        request = vllm_request_row(cfg, str(row["clip_id"]), np.asarray(row["frames"]), context)
    else:
        # Rows cannot leave the processor's stream, so a clip without frames goes through as a
        # one-token text request and its frame error is reported instead of the output.
        request = {
            "clip_id": str(row["clip_id"]),
            "messages": [{"role": "user", "content": "-"}],
            "multimodal_data": None,
            "sampling_params": {"max_tokens": 1},
        }
    request["frame_error"] = frame_error
    request["frame_prep_s"] = float(row["frame_prep_s"])
    request[ROW_ID] = int(row[ROW_ID])
    return request


def _vllm_to_columns(batch: dict[str, np.ndarray], cfg: CaptionConfig) -> dict[str, np.ndarray]:
    names = list(batch)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*(batch[n] for n in names), strict=True)]
    frame_errors = [optional_str(r["frame_error"]) for r in rows]
    outputs: list[EngineOutput | None] = [
        None if err is not None else vllm_output(r) for r, err in zip(rows, frame_errors, strict=True)
    ]
    columns = caption_columns(cfg, [str(r["clip_id"]) for r in rows], outputs, frame_errors)
    columns["frame_prep_s"] = np.asarray([r["frame_prep_s"] for r in rows], dtype=np.float64)
    columns[ROW_ID] = np.asarray([r[ROW_ID] for r in rows], dtype=np.uint64)
    return columns


def vllm_runtime_env(cfg: CaptionConfig) -> dict[str, Any]:
    """Ray runtime env of the vLLM stages: the torchvision guard on PYTHONPATH, so it also reaches
    the engine-core process vLLM spawns inside the actor (a worker setup hook would not)."""
    from caption.vllm.tv_guard import guarded_pythonpath

    env_vars = {"VLLM_NO_USAGE_STATS": "1", "PYTHONPATH": guarded_pythonpath(os.environ.get("PYTHONPATH"))}
    if cfg.vllm.device == "CPU":
        env_vars["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.vllm.cpu_kvcache_gib)
    return {"env_vars": env_vars}


def _vllm_engine(ds: Any, cfg: CaptionConfig) -> Any:
    # ray.data.llm imports vllm (and with it torchvision): the guard goes first.
    from caption.vllm import tv_guard

    tv_guard.install()
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    v = cfg.vllm
    frames = cfg.frames
    per_prompt = (
        {"video": 1, "image": 0} if frames.send_as == "video" else {"image": frames.max_frames, "video": 0}
    )
    engine_kwargs: dict[str, Any] = {
        "tensor_parallel_size": v.tensor_parallel_size,
        "max_model_len": v.max_model_len,
        "max_num_seqs": v.max_num_seqs,
        "dtype": v.dtype,
        "enforce_eager": v.enforce_eager,
        "limit_mm_per_prompt": per_prompt,
        "served_model_name": cfg.request_model_name,
    }
    if v.device == "GPU":
        engine_kwargs["gpu_memory_utilization"] = v.gpu_memory_utilization
    engine_kwargs.update(cpu_scheduler_kwargs(v))
    helper = {"num_cpus": v.helper_num_cpus}
    processor_config = vLLMEngineProcessorConfig(
        model_source=cfg.model,
        engine_kwargs=engine_kwargs,
        batch_size=cfg.batch_size,
        concurrency=v.replicas,
        runtime_env=vllm_runtime_env(cfg),
        should_continue_on_error=True,
        log_engine_metrics=False,
        # Ray 2.60's multimodal-parsing stage does not import with vLLM 0.32 (a moved module); the
        # preprocess step supplies `multimodal_data` itself. vLLM tokenizes and detokenizes on its own.
        prepare_multimodal_stage={"enabled": False},
        chat_template_stage={"enabled": True, **helper},
        tokenize_stage={"enabled": False},
        detokenize_stage={"enabled": False},
        # On CPU the engine takes exactly one core-sized bundle; see the project design notes.
        placement_group_config=(
            {"bundles": [{"CPU": 1}] * v.tensor_parallel_size} if v.device == "CPU" else None
        ),
    )
    processor = build_processor(
        processor_config,
        preprocess=partial(_vllm_preprocess, cfg=cfg),
        preprocess_map_kwargs={"num_cpus": v.helper_num_cpus},
    )
    ds = processor(ds)
    return ds.map_batches(
        _vllm_to_columns, fn_kwargs={"cfg": cfg}, batch_format="numpy", num_cpus=v.helper_num_cpus
    )


def build_dataset(store: Store, cfg: CaptionConfig, work: WorkList) -> Any:
    """The Ray Data chain of the module docstring (resources from the config)."""
    ds: Any = work_dataset(work.rows, cfg.batch_size)
    ds = ds.map_batches(
        read_and_prepare,
        fn_kwargs={"store_root": str(store.root), "version": work.version, "cfg": cfg},
        batch_format="numpy",
        batch_size=cfg.batch_size,
        num_cpus=cfg.decode_num_cpus,
        compute=task_pool(cfg.decode_concurrency, blocks_of(work.rows.num_rows, cfg.batch_size)),
    )
    if cfg.engine == "openai":
        return ds  # the client runs on the driver (caption_batches): it only waits on the network
    return _vllm_engine(ds, cfg)


def todo_clips(store: Store, cfg: CaptionConfig, staging: ColumnStaging) -> tuple[WorkList, int, str]:
    """(the clips to caption now, how many selected clips already have a caption, selection description).

    Done means a caption in `clips` or in the staging of a run not merged yet; failed clips are retried."""
    clips = store.require("clips")
    names = clips.schema.names
    where, description = selection_filter(cfg, names)
    if cfg.camera_context and not set(CONTEXT_COLUMNS) <= set(names):
        raise CaptionJobError(
            "caption.camera_context needs the score stage's camera words (clips have no "
            f"{' or '.join(CONTEXT_COLUMNS)} column): run `reelforge score` first, or set "
            "caption.camera_context=false"
        )
    try:
        check_on(clips, parse_filter(cfg.filter, "caption.filter", names))
    except FilterError as err:
        raise CaptionJobError(str(err)) from None
    try:
        selected = clips.count_rows(filter=where)
        lacking = f"({where}) AND caption IS NULL" if where else "caption IS NULL"
        todo = store.work_list(
            filter=lacking if "caption" in names else where,
            exclude=staging,
            exclude_where="caption IS NOT NULL",
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise CaptionJobError(
            f"caption.filter {where!r} cannot be evaluated on the clips table "
            f"(columns: {', '.join(names)}): {err}"
        ) from err
    return todo, selected - len(todo), description


def with_row_ids(table: pa.Table, batch: dict[str, np.ndarray]) -> pa.Table:
    """Attach each caption's clip row id, carried through the engines beside its clip_id."""
    return table.append_column(ROW_ID, pa.array(batch[ROW_ID], pa.uint64()))


def run_caption(
    config: PipelineConfig, *, recaption: bool | None = None, progress: bool = True, limit: int | None = None
) -> CaptionSummary:
    """Caption the selected clips lacking a caption, stage them batch by batch, merge into `clips`.

    With `caption.openai.launch_server` a vLLM server for the model runs for the duration of the call.
    """
    if recaption is None:
        recaption = config.caption.recaption
    store = Store(config.store.root)
    todo, _, _ = todo_clips(store, config.caption, ColumnStaging(store, CAPTION_STAGE))
    if not len(todo) and not recaption:  # everything is captioned: no server to start (it takes ~1 min)
        return _run(config, config.caption, recaption=False, progress=progress, limit=limit)
    check_engine_setup(config.caption)
    with launched_server(config.caption) as cfg:
        return _run(config, cfg, recaption=recaption, progress=progress, limit=limit)


def _run(
    config: PipelineConfig, cfg: CaptionConfig, *, recaption: bool, progress: bool, limit: int | None
) -> CaptionSummary:
    from tqdm import tqdm

    store = Store(config.store.root)
    staging = ColumnStaging(store, CAPTION_STAGE)
    if recaption:
        staging.reset()
        store.drop_columns(CAPTION_STAGE)
    todo, skipped, description = todo_clips(store, cfg, staging)
    if limit is not None:
        todo = WorkList(todo.version, todo.rows.slice(0, limit))
    summary = CaptionSummary(
        engine=cfg.engine,
        model=cfg.model,
        selected=len(todo) + skipped,
        skipped_done=skipped,
        selection=description,
        placeholder=is_placeholder_model(cfg.model),
    )
    started = time.perf_counter()
    if len(todo):
        start_job(config, "caption")  # Ray, then the check that every operator can be scheduled
        ds = build_dataset(store, cfg, todo)
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
        if cfg.engine == "openai":
            # Built before any Ray work: a missing API key variable fails here, at once.
            batches = caption_batches(batches, cfg, captioner=OpenAICaptioner(cfg))
        bar = tqdm(total=len(todo), desc="caption", unit="clip", disable=not progress)
        pending: list[pa.Table] = []
        pending_rows = 0
        for batch in batches:
            table = with_row_ids(to_table(batch), batch)
            summary.frame_prep_s += float(np.nansum(batch["frame_prep_s"]))
            summary.count(table)
            pending.append(table)
            pending_rows += table.num_rows
            if pending_rows >= cfg.flush_every:
                staging.append(pa.concat_tables(pending))
                pending, pending_rows = [], 0
            bar.update(table.num_rows)
            elapsed = time.perf_counter() - started
            bar.set_postfix(tok_s=f"{summary.output_tokens / elapsed:.1f}", failed=summary.failed)
        if pending:
            staging.append(pa.concat_tables(pending))
        bar.close()
    summary.seconds = time.perf_counter() - started
    models = {
        "caption": {
            "engine": cfg.engine,
            "model": cfg.model,
            "prompt": f"{cfg.prompt}/v{cfg.prompt_version}",
            "placeholder": summary.placeholder,
            # What the model wrote; the other caption columns are bookkeeping (its name, token counts,
            # latency, errors), true whatever the weights.
            "columns": ["caption"],
        }
    }
    # Which filter run chose these clips: `reelforge status` calls the captions stale once it changes.
    by_filter = cfg.only_selected and not cfg.filter
    selection = store.stage_records().get("filter") if by_filter else None
    selected_by = (
        None
        if selection is None
        else {
            "expression": selection.get("config", {}).get("expression"),
            "at": selection.get("at"),
        }
    )
    record = {**cfg.model_dump(mode="json"), "selected_by": selected_by}
    if staging.merge_into_clips(config=record, models=models) is not None:
        staging.reset()  # merged: the clips table now says what is done
    mark_placeholders(store)  # in the Arrow schema too, for readers that never see the stage records
    return summary


def caption_command(
    config: PipelineConfig, argv: list[str], *, recaption: bool = False, progress: bool = True
) -> CaptionSummary | int:
    """`reelforge caption`: run the stage here (its summary), or, for the in-process `vllm` engine in an
    environment without vllm (the main one), run the same command line in the vLLM environment (its
    exit code)."""
    if config.caption.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        check_engine_setup(config.caption)
        python = vllm_python(config.caption.vllm.device)
        print(
            f"caption: engine=vllm runs in the vLLM environment ({python.parents[1].name}); starting it there"
        )
        return subprocess.call([str(python), "-m", "pipelines.cli", *argv], env=vllm_env_vars())
    summary = run_caption(config, recaption=recaption, progress=progress)
    print("\n".join(summary.lines()))
    return summary

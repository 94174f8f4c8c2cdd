"""The caption stage as batch functions: frame preparation (CPU), the OpenAI captioner (a model
stage class, driven over a stream of batches by `caption_batches`) and the conversion of engine
outputs into the caption columns.

Batches are dicts of column -> numpy array (Ray Data's "numpy" format), so every piece runs without
Ray; pipelines/jobs/caption.py chains them in a Ray Data job and attaches resources.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from caption.cleanup import clean_caption
from caption.config import CaptionConfig
from caption.engines import CaptionRequest, EngineOutput, OpenAICaptionEngine, caption_params_json
from caption.frames import FrameSamplingError, encode_jpeg, sample_frames
from caption.prompts import prompt_id
from store import ROW_ID, contract

# Columns the stage reads from `clips` and writes back (keyed by clip_id), from the data contract.
READS = contract.STAGES["caption"].reads
CAPTION_SCHEMA = contract.stage_schema("caption")
WRITES = tuple(name for name in CAPTION_SCHEMA.names if name != "clip_id")
# The score stage's words read as the engine's context when caption.camera_context is on.
CONTEXT_COLUMNS = ("caption_camera", "caption_motion")


def prepare_frames(
    batch: dict[str, np.ndarray], cfg: CaptionConfig, encoding: Literal["jpeg", "rgb"] = "jpeg"
) -> dict[str, np.ndarray]:
    """clip_id, video (MP4 bytes)[, context, _rowid] -> clip_id, frames, frame_error, frame_prep_s
    [, context, _rowid].

    `frames` holds per clip a list of JPEG bytes (`encoding="jpeg"`, for HTTP requests) or one
    uint8 array T x H x W x 3 (`"rgb"`, handed to an in-process engine as is). A clip whose bytes
    cannot be decoded gets a `frame_error` and goes on to the output as a failed caption; it never
    stops the batch.
    """
    frames_cfg = cfg.frames
    prepared: list[Any] = []
    errors: list[str | None] = []
    seconds: list[float] = []
    for data in batch["video"]:
        start = time.perf_counter()
        try:
            sampled = sample_frames(
                bytes(data) if data is not None else b"",
                num_frames=frames_cfg.num_frames,
                fps=frames_cfg.fps,
                max_frames=frames_cfg.max_frames,
                max_pixels=frames_cfg.max_pixels,
            )
            if encoding == "jpeg":
                prepared.append([encode_jpeg(f, frames_cfg.jpeg_quality) for f in sampled.frames])
            else:
                prepared.append(np.stack(sampled.frames))
            errors.append(None)
        except FrameSamplingError as err:
            prepared.append([] if encoding == "jpeg" else np.zeros((0, 2, 2, 3), np.uint8))
            errors.append(f"frames: {err}")
        seconds.append(time.perf_counter() - start)
    frames_column = np.empty(len(prepared), dtype=object)
    frames_column[:] = prepared
    out = {
        "clip_id": np.asarray(batch["clip_id"], dtype=object),
        "frames": frames_column,
        "frame_error": np.asarray(errors, dtype=object),
        "frame_prep_s": np.asarray(seconds, dtype=np.float64),
    }
    if "context" in batch:  # measured camera words (caption.camera_context) ride along to the engine
        out["context"] = np.asarray(batch["context"], dtype=object)
    if ROW_ID in batch:  # the clip's row in `clips` rides along to the staged captions
        out[ROW_ID] = np.asarray(batch[ROW_ID], dtype=np.uint64)
    return out


def caption_columns(
    cfg: CaptionConfig,
    clip_ids: Sequence[str],
    outputs: Sequence[EngineOutput | None],
    frame_errors: Sequence[str | None],
) -> dict[str, np.ndarray]:
    """The caption columns for a batch; `outputs[i]` is None when the clip never reached the engine."""
    prompt = prompt_id(cfg.prompt, cfg.prompt_version, cfg.camera_context)
    params = caption_params_json(cfg)
    captions: list[str | None] = []
    errors: list[str | None] = []
    prompt_tokens: list[int] = []
    output_tokens: list[int] = []
    latencies: list[float] = []
    for output, frame_error in zip(outputs, frame_errors, strict=True):
        if output is None:
            captions.append(None)
            errors.append(frame_error or "not captioned")
            prompt_tokens.append(-1)
            output_tokens.append(-1)
            latencies.append(np.nan)
            continue
        prompt_tokens.append(output.prompt_tokens if output.prompt_tokens is not None else -1)
        output_tokens.append(output.output_tokens if output.output_tokens is not None else -1)
        latencies.append(output.latency_s if output.latency_s is not None else np.nan)
        if output.error is not None:
            captions.append(None)
            errors.append(f"engine: {output.error}")
            continue
        cleaned = clean_caption(output.text, cfg.min_chars, cfg.max_chars)
        captions.append(cleaned.text)
        errors.append(None if cleaned.error is None else f"cleanup: {cleaned.error}")
    n = len(clip_ids)
    return {
        "clip_id": np.asarray(list(clip_ids), dtype=object),
        "caption": np.asarray(captions, dtype=object),
        "caption_model": np.asarray([cfg.model] * n, dtype=object),
        "caption_prompt_version": np.asarray([prompt] * n, dtype=object),
        "caption_params": np.asarray([params] * n, dtype=object),
        # -1 marks "unknown" (no answer, or a server that does not report usage).
        "caption_prompt_tokens": np.asarray(prompt_tokens, dtype=np.int32),
        "caption_output_tokens": np.asarray(output_tokens, dtype=np.int32),
        "caption_latency_s": np.asarray(latencies, dtype=np.float32),
        "caption_error": np.asarray(errors, dtype=object),
    }


def to_table(columns: dict[str, Any]) -> pa.Table:
    """Caption columns (numpy or lists) as a table with CAPTION_SCHEMA; NaN and -1 become null."""
    arrays = []
    for field in CAPTION_SCHEMA:
        values = columns[field.name]
        if field.type == pa.float32():
            values = np.asarray(values, dtype=np.float32)
            arrays.append(pa.array(values, type=field.type, mask=np.isnan(values)))
        elif field.type == pa.int32():
            values = np.asarray(values, dtype=np.int32)
            arrays.append(pa.array(values, type=field.type, mask=values < 0))
        else:
            arrays.append(pa.array([optional_str(v) for v in values], type=field.type))
    return pa.Table.from_arrays(arrays, schema=CAPTION_SCHEMA)


def optional_str(value: Any) -> str | None:
    """A string cell, or None; a column that was all None comes back from Ray's Arrow round trip
    as float NaN, so NaN also means None."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    return str(value)


class OpenAICaptioner:
    """Model stage for the `openai` engine: frames in, caption columns out.

    `__call__` is async so several batches can be in flight at once; the engine's semaphore bounds
    the requests in flight across them. `caption_batches` drives it over a stream of batches.
    """

    def __init__(self, cfg: CaptionConfig):
        self._cfg = cfg
        self._engine = OpenAICaptionEngine(cfg)

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Caption one Ray Data batch of sampled frames into the caption columns."""
        clip_ids = [str(c) for c in batch["clip_id"]]
        frame_errors = [optional_str(e) for e in batch["frame_error"]]
        contexts = (
            [optional_str(c) for c in batch["context"]] if "context" in batch else [None] * len(clip_ids)
        )
        todo = [
            CaptionRequest(clip_id=cid, frames_jpeg=[bytes(f) for f in frames], context=context)
            for cid, frames, err, context in zip(
                clip_ids, batch["frames"], frame_errors, contexts, strict=True
            )
            if err is None
        ]
        answers = {o.clip_id: o for o in await self._engine.generate(todo)}
        outputs = [answers.get(cid) for cid in clip_ids]
        columns = caption_columns(self._cfg, clip_ids, outputs, frame_errors)
        columns["frame_prep_s"] = np.asarray(batch["frame_prep_s"], dtype=np.float64)
        if ROW_ID in batch:
            columns[ROW_ID] = np.asarray(batch[ROW_ID], dtype=np.uint64)
        return columns

    async def aclose(self) -> None:
        """Close the engine's connections."""
        await self._engine.aclose()

    def caption_sync(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on its own (tests, small scripts)."""
        (columns,) = caption_batches([batch], self._cfg, captioner=self)
        return columns


def batches_in_flight(cfg: CaptionConfig) -> int:
    """Batches the OpenAI client works on at once: enough for `openai.concurrency` requests in flight
    and as many again waiting for a free slot, plus one. Requests of equal length finish in waves, and
    the next batch is handed over only after the driver has staged the finished one's captions, so with
    a single spare batch the server ran part of every wave below its concurrency; queued requests take
    each freed slot at once, as when every request is sent at once (the vLLM-alone baseline)."""
    return -(-2 * cfg.openai.concurrency // cfg.batch_size) + 1


def caption_batches(
    prepared: Iterable[dict[str, np.ndarray]], cfg: CaptionConfig, captioner: OpenAICaptioner | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Caption a stream of prepared batches with the OpenAI client, in this process.

    The client runs on an event loop in a background thread with up to `batches_in_flight(cfg)`
    batches at once, while this thread pulls the next prepared batch; caption columns are yielded
    as batches finish (not in input order). The client only waits on the network, so running it
    here costs no worker process: a Ray actor for it took 2-4 s to start, time the engine idled.
    """
    captioner = captioner or OpenAICaptioner(cfg)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="openai-captioner", daemon=True)
    thread.start()
    limit = batches_in_flight(cfg)
    pending: set[Future[dict[str, np.ndarray]]] = set()
    try:
        for batch in prepared:
            pending.add(asyncio.run_coroutine_threadsafe(captioner(batch), loop))
            while len(pending) >= limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        for future in pending:
            future.cancel()
        asyncio.run_coroutine_threadsafe(captioner.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

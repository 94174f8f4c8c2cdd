"""Caption engines: the request both engines send, and the OpenAI-compatible client.

Both engines take the same chat request: a system prompt, then the clip's sampled frames (base64
JPEG, either as one `video_url` of JPEG frames or as separate `image_url`s) followed by the user
prompt. The `openai` engine posts it to any OpenAI-compatible server (`python -m caption.vllm.serve`,
`vllm serve`, a hosted API). The `vllm` engine hands the very same messages to vLLM in-process
through Ray Data's LLM batch API; that wiring needs Ray, so it lives in pipelines/jobs/caption.py
and uses `vllm_request_row` / `vllm_output` from here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

from caption.config import CaptionConfig
from caption.prompts import PromptTemplate, get_prompt, user_text

log = logging.getLogger(__name__)

# HTTP statuses worth another attempt: rate limiting and server-side failures.
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class EngineConfigError(ValueError):
    """The engine cannot be set up as configured (e.g. the API key variable is unset)."""


@dataclass(frozen=True)
class CaptionRequest:
    """One clip to caption: its sampled frames as JPEG and optional measured context words."""

    clip_id: str
    frames_jpeg: Sequence[bytes]
    context: str | None = None  # measured camera words (caption.camera_context)


@dataclass(frozen=True)
class EngineOutput:
    """What an engine returned for one clip: the text or the error, tokens and latency."""

    clip_id: str
    text: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    latency_s: float | None
    error: str | None
    finish_reason: str | None = None


def frames_content(frames_jpeg: Sequence[bytes], send_as: str) -> list[dict[str, Any]]:
    """OpenAI chat content parts carrying the frames as base64 JPEG data URLs."""
    encoded = [base64.b64encode(f).decode("ascii") for f in frames_jpeg]
    if send_as == "video":
        # vLLM reads `data:video/jpeg;base64,<frame>,<frame>,...` as a video made of those frames.
        return [{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(encoded)}}]
    return [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{e}"}} for e in encoded]


def build_messages(
    prompt: PromptTemplate, frames_jpeg: Sequence[bytes], send_as: str, context: str | None = None
) -> list[dict[str, Any]]:
    """The chat messages of one request: the system prompt, then the frames and the user text."""
    text = user_text(prompt, context)
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": [*frames_content(frames_jpeg, send_as), {"type": "text", "text": text}]},
    ]


def sampling_params(cfg: CaptionConfig) -> dict[str, Any]:
    """The sampling parameters sent with every request (and recorded with every caption)."""
    params: dict[str, Any] = {
        "max_tokens": cfg.sampling.max_tokens,
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
    }
    if cfg.sampling.seed is not None:
        params["seed"] = cfg.sampling.seed
    return params


def caption_params_json(cfg: CaptionConfig) -> str:
    """What is stored in `caption_params`: sampling plus how frames were sampled and sent."""
    frames = cfg.frames
    return json.dumps(
        {
            **sampling_params(cfg),
            "engine": cfg.engine,
            "num_frames": frames.num_frames if frames.fps is None else None,
            "fps": frames.fps,
            "max_frames": frames.max_frames,
            "max_pixels": frames.max_pixels,
            "send_as": frames.send_as,
        },
        sort_keys=True,
    )


class OpenAICaptionEngine:
    """Async client for an OpenAI-compatible chat-completions endpoint.

    At most `cfg.openai.concurrency` requests are in flight per engine object, across all
    concurrent `generate` calls (Ray Data runs several batches of an async stage at once).
    """

    def __init__(self, cfg: CaptionConfig):
        self._cfg = cfg
        self._prompt = get_prompt(cfg.prompt, cfg.prompt_version)
        self._url = f"{cfg.openai.base_url}/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        self._secret: str | None = None
        if cfg.openai.api_key_env is not None:
            key = os.environ.get(cfg.openai.api_key_env)
            if not key:
                raise EngineConfigError(
                    f"caption.openai.api_key_env names ${cfg.openai.api_key_env}, which is not set"
                )
            self._headers["Authorization"] = f"Bearer {key}"
            self._secret = key
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never show headers (they may hold the key)
        return f"OpenAICaptionEngine(url={self._url!r}, model={self._cfg.request_model_name!r})"

    def payload(self, request: CaptionRequest) -> dict[str, Any]:
        """The JSON body of the chat-completions request for one clip."""
        return {
            "model": self._cfg.request_model_name,
            "messages": build_messages(
                self._prompt, request.frames_jpeg, self._cfg.frames.send_as, request.context
            ),
            **sampling_params(self._cfg),
        }

    def _ensure_session(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._cfg.openai.concurrency)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
            self._semaphore = asyncio.Semaphore(self._cfg.openai.concurrency)
            self._loop = loop
        assert self._semaphore is not None
        return self._session, self._semaphore

    async def generate(self, requests: Sequence[CaptionRequest]) -> list[EngineOutput]:
        """Caption the clips concurrently, one request each, in request order."""
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def generate_payloads(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[EngineOutput]:
        """Send prepared (clip_id, payload) pairs; used by the benchmark to time the server alone."""
        return list(await asyncio.gather(*(self._send(cid, p) for cid, p in items)))

    async def aclose(self) -> None:
        """Close the HTTP session (a new one is opened by the next request)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _one(self, request: CaptionRequest) -> EngineOutput:
        return await self._send(request.clip_id, self.payload(request))

    async def _send(self, clip_id: str, payload: dict[str, Any]) -> EngineOutput:
        session, semaphore = self._ensure_session()
        cfg = self._cfg.openai
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with semaphore:
            start = time.perf_counter()
            last_error = "no attempt made"
            for attempt in range(cfg.retries + 1):
                if attempt:
                    # Exponential backoff with jitter so retries from many clips do not align.
                    await asyncio.sleep(cfg.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
                try:
                    async with session.post(self._url, json=payload, timeout=timeout) as response:
                        body = await response.text()
                        if response.status == 200:
                            return _parse_completion(clip_id, body, time.perf_counter() - start)
                        last_error = f"HTTP {response.status}: {_redacted(body, self._secret)[:300]}"
                        if response.status not in _RETRY_STATUSES:
                            break
                except TimeoutError:
                    last_error = f"timeout after {cfg.timeout_s:g}s"
                except aiohttp.ClientError as err:
                    last_error = f"{type(err).__name__}: {err}"
                log.debug("caption request for %s failed (attempt %d): %s", clip_id, attempt + 1, last_error)
            attempts = attempt + 1
            return EngineOutput(
                clip_id,
                None,
                None,
                None,
                time.perf_counter() - start,
                f"{last_error} (after {attempts} attempts)",
            )


def _redacted(text: str, secret: str | None) -> str:
    """A server may quote the request's Authorization header back in an error body: never keep the key."""
    return text.replace(secret, "[redacted]") if secret else text


def _parse_completion(clip_id: str, body: str, latency_s: float) -> EngineOutput:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        return EngineOutput(
            clip_id, None, None, None, latency_s, f"malformed response ({err!r}): {body[:200]}"
        )
    usage = data.get("usage") or {}
    return EngineOutput(
        clip_id=clip_id,
        text=text,
        prompt_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        latency_s=latency_s,
        error=None,
        finish_reason=choice.get("finish_reason"),
    )


def template_messages(
    prompt: PromptTemplate, num_frames: int, send_as: str, context: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages with bare vision placeholders (`{"type": "video"}`), the form Qwen-VL chat
    templates expand; the pixels travel separately as the engine's multimodal data."""
    vision = [{"type": "video"}] if send_as == "video" else [{"type": "image"}] * num_frames
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": [*vision, {"type": "text", "text": user_text(prompt, context)}]},
    ]


def vllm_request_row(
    cfg: CaptionConfig, clip_id: str, frames: np.ndarray, context: str | None = None
) -> dict[str, Any]:
    """A row for Ray Data's vLLM processor: the same prompt and sampling as the openai engine, with
    the frames (uint8, T x H x W x 3) passed as multimodal data instead of base64 JPEG.

    Ray 2.60's own multimodal-parsing stage imports a module vLLM 0.32 moved, so the job renders the
    chat template (Ray's ChatTemplateStage) and hands pixels to vLLM directly.
    """
    prompt = get_prompt(cfg.prompt, cfg.prompt_version)
    if cfg.frames.send_as == "video":
        multimodal: dict[str, Any] = {"video": [frames]}
    else:
        multimodal = {"image": [Image.fromarray(f) for f in frames]}
    return {
        "clip_id": clip_id,
        "messages": template_messages(prompt, len(frames), cfg.frames.send_as, context),
        "multimodal_data": multimodal,
        "sampling_params": sampling_params(cfg),
    }


def vllm_output(row: dict[str, Any]) -> EngineOutput:
    """Map a row coming out of Ray Data's vLLM processor to an EngineOutput."""
    error = row.get("__inference_error__") or None
    latency = row.get("time_taken_llm")
    return EngineOutput(
        clip_id=row["clip_id"],
        text=None if error else row.get("generated_text"),
        prompt_tokens=None if error else row.get("num_input_tokens"),
        output_tokens=None if error else row.get("num_generated_tokens"),
        latency_s=float(latency) if latency is not None and latency >= 0 else None,
        error=error,
    )

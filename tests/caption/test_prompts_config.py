from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from caption.config import DEFAULT_GPU_MODEL, CaptionConfig
from caption.engines import build_messages, caption_params_json, frames_content, sampling_params
from caption.prompts import all_prompts, get_prompt


def test_each_variant_has_a_versioned_prompt():
    ids = {p.id for p in all_prompts()}
    assert {"detailed/v1", "short/v1", "tags/v1"} <= ids
    assert len(ids) == len(all_prompts())  # (variant, version) is unique
    detailed = get_prompt("detailed", 1)
    assert "camera" in detailed.user and detailed.system


def test_unknown_prompt_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown caption prompt short/v9; known prompts: .*short/v1"):
        get_prompt("short", 9)


def test_defaults_document_the_gpu_model():
    cfg = CaptionConfig()
    assert cfg.model == DEFAULT_GPU_MODEL == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert cfg.request_model_name == cfg.model
    assert cfg.openai.api_key_env is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"engine": "hf"}, "engine"),
        ({"prompt_version": 7}, "unknown caption prompt detailed/v7"),
        ({"min_chars": 50, "max_chars": 40}, "min_chars (50) must be below max_chars (40)"),
        ({"openai": {"base_url": "localhost:8000"}}, "base_url must start with http"),
        ({"openai": {"api_key_env": "sk-abc123 secret"}}, "NAME of an environment variable"),
        ({"frames": {"num_frames": 40, "max_frames": 32}}, "num_frames (40) exceeds max_frames (32)"),
        ({"sampling": {"temperature": -1}}, "temperature"),
        ({"batchsize": 4}, "batchsize"),
    ],
)
def test_invalid_values_name_the_key(data, fragment):
    with pytest.raises(ValidationError) as info:
        CaptionConfig.model_validate(data)
    assert fragment in str(info.value)


def test_config_is_frozen():
    cfg = CaptionConfig()
    with pytest.raises(ValidationError):
        cfg.batch_size = 3  # type: ignore[misc]


def test_pipeline_config_overrides_reach_the_caption_section():
    from pipelines.config import parse_config

    cfg = parse_config(
        {"caption": {"engine": "vllm", "vllm": {"device": "CPU"}, "sampling": {"max_tokens": 12}}}
    )
    assert cfg.caption.engine == "vllm" and cfg.caption.vllm.device == "CPU"
    assert cfg.caption.sampling.max_tokens == 12


def test_messages_carry_frames_as_video_or_images():
    prompt = get_prompt("short", 1)
    frames = [b"\xff\xd8jpeg-1", b"\xff\xd8jpeg-2"]
    video = build_messages(prompt, frames, "video")
    assert video[0] == {"role": "system", "content": prompt.system}
    parts = video[1]["content"]
    assert parts[0]["type"] == "video_url"
    assert parts[0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
    assert parts[0]["video_url"]["url"].count(",") == 2  # header + one separator between two frames
    assert parts[-1] == {"type": "text", "text": prompt.user}
    images = frames_content(frames, "images")
    assert [p["type"] for p in images] == ["image_url", "image_url"]


def test_sampling_params_and_recorded_params():
    cfg = CaptionConfig.model_validate({"sampling": {"max_tokens": 64, "temperature": 0.0, "seed": None}})
    assert sampling_params(cfg) == {"max_tokens": 64, "temperature": 0.0, "top_p": 0.9}
    recorded = json.loads(caption_params_json(cfg))
    assert recorded["max_tokens"] == 64 and recorded["send_as"] == "video" and recorded["num_frames"] == 8

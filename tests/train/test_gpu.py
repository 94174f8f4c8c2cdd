"""The model stages on CUDA (`pytest -m gpu`): score's image-tower and OCR actors, encode, a few bf16
train steps, sample. Each test skips, with the reason, where this process sees no CUDA device.
Captioning on a GPU runs in the CUDA vLLM environment:
tests/caption/test_vllm.py::test_in_process_vllm_engine_on_a_gpu."""

from __future__ import annotations

import json

import pytest
import torch
from score_clips import encode_mp4, sample_shots, store_with

from pipelines.config import parse_config
from pipelines.jobs.encode import run_encode
from pipelines.jobs.score import run_score
from train.config import Bucket, DataConfig, DiTConfig, SampleConfig, TrainConfig
from train.device import Placement
from train.encode import LatentEncoder
from train.loop import load_trained_dit, train
from train.sample import sample

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device here (torch.cuda.is_available() is False)"
    ),
]
BUCKET = Bucket(height=32, width=32, frames=9)
TINY_TOWER = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def _train_config(out_dir, vae, **changes) -> TrainConfig:
    base = {
        "steps": 4,
        "batch_size": 2,
        "log_every": 1,
        "ckpt_every": 4,
        "val_every": 4,
        "out_dir": str(out_dir),
        "progress": False,
        "tensorboard": False,
        "device": "cuda",
        "vae": vae,
        "dit": DiTConfig(preset="tiny"),
        "data": DataConfig(buckets=(BUCKET,)),
    }
    return TrainConfig(**{**base, **changes})


def test_cuda_placement_is_bf16_with_tf32_and_device_noise():
    placement = Placement.resolve("auto", "auto", "train.device")
    assert placement.cuda and placement.dtype == torch.bfloat16
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert placement.generator(0).device.type == "cuda"
    with placement.autocast():
        assert (
            torch.ones(8, 8, device=placement.device) @ torch.ones(8, 8, device=placement.device)
        ).dtype == (torch.bfloat16)


def test_score_runs_image_tower_and_ocr_actors_on_the_gpu(ray_session, sample_footage, tmp_store, tmp_path):
    import open_clip
    from safetensors.torch import save_file

    if ray_session.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the test session's Ray sees no GPU")
    tower_dir = tmp_path / "tiny_tower"
    tower_dir.mkdir()
    (tower_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_TOWER}))
    torch.manual_seed(0)
    save_file(
        {k: v.contiguous() for k, v in open_clip.CLIP(**TINY_TOWER).state_dict().items()},
        str(tower_dir / "open_clip_model.safetensors"),
    )
    shots = sample_shots(sample_footage, "cuts.mp4")
    store_with(tmp_store, {f"v:{name}": encode_mp4(frames) for name, frames in shots.items()})
    gpu = {"device": "cuda", "num_gpus": 0.25}
    cfg = parse_config(
        {
            "store": {"root": str(tmp_store.root)},
            "score": {
                "image_tower": {"model": f"local-dir:{tower_dir}", "allow_random_weights": True, **gpu},
                "ocr": gpu,
                "dedup": {"signature": "frame_signature"},
            },
        }
    )
    summary = run_score(cfg, progress=False)
    assert summary.scored == len(shots) and summary.errors == 0
    rows = tmp_store.read_clips(columns=["clip_embedding", "text_area"]).to_pylist()
    assert all(r["clip_embedding"] is not None and r["text_area"] is not None for r in rows)


def test_encode_on_the_gpu_matches_the_cpu_latents_to_bf16(real_clips, small_vae):
    store, _ = real_clips
    config = _train_config("unused", small_vae)
    rows = store.read_clips(columns=["clip_id", "width", "height", "num_frames", "caption"]).to_pydict()
    blobs = store.read_clip_bytes(rows["clip_id"][:4])
    batch = {k: v[:4] for k, v in rows.items()} | {"video": [blobs[c] for c in rows["clip_id"][:4]]}
    gpu = LatentEncoder(config, "cuda")(batch)
    cpu = LatentEncoder(config.model_copy(update={"precision": "fp32"}), "cpu")(batch)
    assert gpu.column("encode_error").null_count == 4
    for a, b in zip(gpu.column("latent").to_pylist(), cpu.column("latent").to_pylist(), strict=True):
        x, y = (torch.frombuffer(bytearray(v), dtype=torch.float32) for v in (a, b))
        assert torch.allclose(x, y, atol=0.1, rtol=0.05)  # bf16 autocast against fp32


def test_encode_job_runs_its_actors_on_the_gpu(ray_session, real_clips, small_vae, tmp_path):
    import shutil

    from store import Store

    if ray_session.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the test session's Ray sees no GPU")
    store = Store(tmp_path / "store")
    shutil.copytree(real_clips[0].root, store.root)
    cfg = parse_config(
        {
            "store": {"root": str(store.root)},
            "encode": {"device": "cuda", "num_gpus": 0.5},
            "train": _train_config(tmp_path / "t", small_vae).model_dump(mode="json"),
        }
    )
    summary = run_encode(cfg, progress=False)
    assert summary.encoded == summary.selected > 0 and summary.failed == 0


def test_a_few_bf16_train_steps_then_sample_on_the_gpu(real_clips, small_vae, tmp_path):
    store, _ = real_clips
    config = _train_config(tmp_path / "train", small_vae)
    summary = train(config, store.clips_uri)
    assert summary.steps == 4 and torch.isfinite(torch.tensor(summary.final_loss))
    model, trained = load_trained_dit(summary.checkpoint, device=torch.device("cuda"))
    assert next(model.parameters()).is_cuda and trained.device == "cuda"
    (result,) = sample(
        SampleConfig(
            prompts=("a test",),
            checkpoint=str(tmp_path / "train"),
            height=32,
            width=32,
            steps=2,
            device="cuda",
            out_dir=str(tmp_path / "samples"),
        )
    )
    assert result.frames.shape == (9, 32, 32, 3) and result.mp4.stat().st_size > 0

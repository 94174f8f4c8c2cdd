"""`reelforge demo` end to end through the real CLI, on the built-in sample footage with few training
steps: every stage runs for real (the caption stage launches vLLM with the tiny Qwen2-VL), and each
stage's output is checked where it landed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from ci import skip_unless_ci
from PIL import Image

from caption.vllm.runtime import VLLMEnvMissing, ensure_tiny_vlm, vllm_python
from media import read_clip
from pipelines.config import load_config
from pipelines.sample_footage import MOVIES
from store import Store, contract
from train.checkpoint import latest_checkpoint, read_state
from train.loop import load_trained_dit
from train.vae import load_vae

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = 2  # DiT and autoencoder steps: the stages' wiring is under test, not what they learn
PROMPTS = ["a slow pan over a photograph", "a cat in close-up"]  # configs/demo.yaml's sample prompts


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    try:
        vllm_python()
    except VLLMEnvMissing as err:
        skip_unless_ci(str(err))
    return ensure_tiny_vlm()


@pytest.fixture(scope="module")
def demo(sample_footage, tiny_model, tmp_path_factory):
    """The demo's config with every output under a temporary folder, and the finished run."""
    root = tmp_path_factory.mktemp("demo")
    overrides = [
        f"store.root={root / 'store'}",
        f"input.paths=[{sample_footage}]",
        f"caption.model={tiny_model}",
        f"train.steps={STEPS}",
        f"train.ckpt_every={STEPS}",
        f"train.val_every={STEPS}",
        f"train.out_dir={root / 'train'}",
        f"train.vae.weights_path={root / 'vae'}",
        f"train.vae_train.steps={STEPS}",
        f"train.vae_train.out_dir={root / 'vae'}",
        f"sample.checkpoint={root / 'train'}",
        f"sample.out_dir={root / 'samples'}",
        "sample.steps=2",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", *(a for o in overrides for a in ("--set", o))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return load_config("demo", overrides), run.stdout


def test_every_stage_reports_ok(demo):
    _, stdout = demo
    stages = ["split", "score", "filter", "score report", "caption", "train-vae", "encode", "train", "sample"]
    for stage in [*stages, "report"]:
        assert f"| {stage} | ok |" in stdout, stdout[-3000:]


def test_clips_table_holds_each_stage_columns(demo):
    cfg, _ = demo
    store = Store(cfg.store.root)
    videos = store.read("videos", columns=["status", "num_clips"])
    assert videos.num_rows == len(MOVIES) and set(videos["status"].to_pylist()) == {"ok"}
    clips = store.require("clips")
    assert clips.count_rows() == pc.sum(videos["num_clips"]).as_py() > 0
    assert set(contract.COLUMNS[contract.CLIPS]) <= set(clips.schema.names)  # every stage's columns
    table = clips.to_table(columns=["clip_id", "video", "score_error", "selected", "caption", "latent"])
    assert table["video"].null_count == 0 and table["score_error"].null_count == table.num_rows
    selected = table.filter(table["selected"])
    assert selected.num_rows > 0
    # the tiny model's captions are random text; the demo's settings let them pass the clean-up
    assert selected["caption"].null_count == 0 and selected["latent"].null_count == 0


def test_checkpoints_load(demo):
    cfg, _ = demo
    load_vae(cfg.train.vae)
    checkpoint = latest_checkpoint(cfg.train.out_dir)
    assert checkpoint is not None and read_state(checkpoint)["step"] == STEPS
    _, trained_with = load_trained_dit(checkpoint)
    assert trained_with.steps == STEPS


def test_samples_are_decodable_videos_of_the_configured_shape(demo):
    cfg, _ = demo
    sample = cfg.sample
    records = sorted(Path(sample.out_dir).glob("*.json"))
    assert [json.loads(r.read_text())["prompt"] for r in records] == PROMPTS
    for record in records:
        frames = read_clip(record.with_suffix(".mp4")).frames
        assert len(frames) == sample.frames
        assert {f.shape for f in frames} == {(sample.height, sample.width, 3)}
        with Image.open(record.with_suffix(".gif")) as gif:
            assert gif.format == "GIF" and gif.n_frames == sample.frames
            assert gif.size == (sample.width, sample.height)


def test_report_is_written(demo):
    cfg, _ = demo
    report = cfg.store.root / cfg.report.out
    assert report.read_text().lstrip().lower().startswith("<!doctype html")

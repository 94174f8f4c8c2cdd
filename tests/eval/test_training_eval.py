"""Evaluation during training: every train.eval_every steps the EMA model samples the fixed prompts with
the fixed seed, the samples are scored on VBench's dimensions into eval.csv, TensorBoard and the evals
table, and a sample grid lands per step; evaluating changes nothing in the training itself."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lance
import pytest
import torch

from curate.vbench import DIMENSIONS
from pipelines.config import parse_config
from pipelines.jobs.train import run_train
from store import Store
from tests.train.conftest import footage_specs
from train.clipset import write_clipset
from train.config import VAEConfig
from train.vae import VideoVAE, save_vae


@pytest.fixture(scope="module")
def setup(request, tmp_path_factory) -> tuple[Store, VAEConfig]:
    store = Store(tmp_path_factory.mktemp("train_eval") / "store")
    write_clipset(store, footage_specs(request)[:6], width=96)
    vae = VAEConfig(base_channels=8, channel_multipliers=(1, 2, 2), spatial_compression=4, latent_channels=4)
    torch.manual_seed(0)
    folder = save_vae(VideoVAE(vae), tmp_path_factory.mktemp("vae"))
    return store, vae.model_copy(update={"weights_path": str(folder)})


def _config(store: Store, vae: VAEConfig, out: Path, eval_every: int):
    return parse_config(
        {
            "store": {"root": str(store.root)},
            "score": {"image_tower": {"allow_random_weights": True}},
            "eval": {
                "prompts": ["a rabbit in a meadow", "cars on a road"],
                "max_frames": 9,
                "tower_frames": 4,
            },
            "sample": {"height": 32, "width": 32, "frames": 9, "steps": 2},
            "train": {
                "steps": 4,
                "batch_size": 2,
                "warmup_steps": 1,
                "log_every": 1,
                "ckpt_every": 4,
                "val_every": 4,
                "eval_every": eval_every,
                "progress": False,
                "tensorboard": True,
                "out_dir": str(out),
                "vae": vae.model_dump(),
                "data": {"buckets": [{"height": 32, "width": 32, "frames": 9}]},
            },
        }
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_eval_every_logs_dimensions_beside_the_losses(setup, tmp_path):
    store, vae = setup
    evaluated, plain = tmp_path / "evaluated", tmp_path / "plain"
    run_train(_config(store, vae, evaluated, eval_every=2))
    run_train(_config(store, vae, plain, eval_every=0))
    rows = _rows(evaluated / "eval.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    for row in rows:
        assert set(row) == {"step", *DIMENSIONS, "quality_score"}
        assert 0.0 <= float(row["temporal_flickering"]) <= 1.0
    for step in (2, 4):
        grid = sorted(p.suffix for p in (evaluated / "eval" / f"step_{step:07d}").iterdir())
        assert grid == [".gif", ".gif", ".mp4", ".mp4"]
    assert list((evaluated / "tensorboard").iterdir()), "TensorBoard events were written"
    table = lance.dataset(str(store.root / "evals.lance")).to_table().to_pylist()
    training = [r for r in table if r["source"] == "training"]
    assert sorted(r["checkpoint_step"] for r in training) == [2, 2, 4, 4]
    assert {r["prompt"] for r in training} == {"a rabbit in a meadow", "cars on a road"}
    # sampling for evaluation draws from its own generator: the losses are those of a run without it
    losses = [(r["step"], r["loss"]) for r in _rows(evaluated / "log.csv")]
    assert losses == [(r["step"], r["loss"]) for r in _rows(plain / "log.csv")]

    from pipelines.report.training import evals_section, training_section

    section = training_section(evaluated)
    assert section is not None and section.evaluated
    assert [c.title for c in section.charts] == [
        "loss",
        "VBench dimensions of the fixed prompts' samples",
        "VBench quality score",
    ]
    assert [s.step for s in section.steps] == ["step_0000002", "step_0000004"]
    assert [uri[:15] for s in section.steps for _, uri in s.samples] == ["data:image/gif;"] * 4
    evals = evals_section(store.root)
    assert evals is not None and "training" in {r.source for r in evals.rows}
    unevaluated = training_section(plain)
    assert unevaluated is not None and not unevaluated.evaluated and len(unevaluated.charts) == 1


@pytest.mark.slow
def test_eval_checkpoint_samples_the_prompts_with_the_fixed_seed(setup, tmp_path):
    from pipelines.cli import main

    store, vae = setup
    out = tmp_path / "run"
    run_train(_config(store, vae, out, eval_every=0))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a rabbit in a meadow\n\ncars on a road\n")
    shape = ["--set", "sample.height=32", "--set", "sample.width=32", "--set", "sample.steps=2"]
    fast = ["--set", "eval.max_frames=9", "--set", "eval.tower_frames=4"]
    args = [
        "eval",
        "--root",
        str(store.root),
        *shape,
        *fast,
        "--checkpoint",
        str(out),
        "--prompts",
        str(prompts),
    ]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert [Path(r["path"]).name for r in first] == [
        "00_a-rabbit-in-a-meadow_seed0.mp4",
        "01_cars-on-a-road_seed0.mp4",
    ]
    assert all("/evals/samples/step_0000004/" in r["path"] for r in first)
    # the fixed seed samples the same videos: the same scores
    assert [{k: v for k, v in r.items() if k != "path"} for r in first] == [
        {k: v for k, v in r.items() if k != "path"} for r in second
    ]
    rows = lance.dataset(str(store.root / "evals.lance")).to_table(filter="source = 'checkpoint'").to_pylist()
    assert {r["checkpoint_step"] for r in rows} == {4} and len(rows) == 4

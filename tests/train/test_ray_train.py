"""`reelforge train --ray-workers 2` end to end on the CPU: Ray Train's TorchTrainer runs the loop on 2 gloo
workers, checkpoints to train.out_dir, and a run killed after a checkpoint (driver, local Ray and workers
at once) resumes from it to exactly the run that was never interrupted."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from processes import process_tree
from safetensors.torch import load_file

from train.checkpoint import latest_checkpoint, read_state
from train.config import Bucket, DataConfig, DiTConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]
STEPS = 4


def _config_file(folder: Path, store_root: Path, vae, ray_temp: str) -> Path:
    train = TrainConfig(
        steps=STEPS,
        batch_size=2,
        warmup_steps=1,
        log_every=1,
        ckpt_every=2,
        val_every=STEPS,
        val_fraction=0.2,
        out_dir=str(folder / "train"),
        progress=False,
        tensorboard=False,
        vae=vae,
        dit=DiTConfig(preset="tiny"),
        data=DataConfig(buckets=(Bucket(height=32, width=32, frames=9),)),
    )
    path = folder / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": {"root": str(store_root)},
                "ray": {"num_cpus": 2, "temp_dir": ray_temp},
                "train": train.model_dump(mode="json"),
            }
        )
    )
    return path


def _reelforge_train(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "train", "--ray-workers", "2", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""},  # a local Ray of its own
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _losses(out_dir: Path) -> list[tuple[str, str]]:
    with (out_dir / "log.csv").open() as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_ray_train_two_workers_killed_and_resumed_equals_an_uninterrupted_run(
    real_clips, small_vae, tmp_path
):
    store, _ = real_clips
    ray_temp = tempfile.mkdtemp(prefix="rf-rt-")  # short: Ray's socket paths must stay under ~100 chars
    configs = {}
    for run in ("whole", "killed"):
        (tmp_path / run).mkdir()
        configs[run] = _config_file(tmp_path / run, store.root, small_vae, ray_temp)

    whole = _reelforge_train(configs["whole"])
    stdout_whole, stderr = whole.communicate(timeout=900)
    assert whole.returncode == 0, stderr[-3000:]
    assert "train: Ray Train finished" in stdout_whole and f"'steps': {STEPS}" in stdout_whole, stdout_whole

    child = _reelforge_train(configs["killed"])
    latest = tmp_path / "killed" / "train" / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not latest.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in process_tree(child.pid):  # the driver, its local Ray and the Ray Train workers
        os.kill(pid, signal.SIGKILL)
    child.communicate()
    assert latest.exists(), "no checkpoint before the deadline"
    stopped_at = read_state(latest_checkpoint(tmp_path / "killed" / "train"))["step"]
    assert stopped_at < STEPS, "the run finished before it could be killed"

    resumed = _reelforge_train(configs["killed"])
    stdout, stderr = resumed.communicate(timeout=900)
    assert f"'steps': {STEPS}" in stdout, stdout
    assert resumed.returncode == 0, stderr[-3000:]

    out = {run: tmp_path / run / "train" for run in ("whole", "killed")}
    assert _losses(out["killed"]) == _losses(out["whole"])  # every logged loss, bit for bit
    assert [int(s) for s, _ in _losses(out["whole"])] == list(range(1, STEPS + 1))
    final = {run: latest_checkpoint(path) for run, path in out.items()}
    assert all(read_state(c)["step"] == STEPS and read_state(c)["world_size"] == 2 for c in final.values())
    a, b = (load_file(str(c / "model.safetensors")) for c in final.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert f"checkpoint {final['whole']}" in stdout_whole  # Ray Train's result names the loop's checkpoint

"""The training loop: exact resume after SIGKILL, precomputed latents == decoding, DDP gradients, schedule."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from processes import process_tree
from safetensors.torch import load_file, save_file

from store import Store
from store.placeholders import mark_placeholders
from train.checkpoint import latest_checkpoint, read_state
from train.config import Bucket, DataConfig, DiTConfig, SampleConfig, TrainConfig, VAEConfig
from train.device import CPU, Placement
from train.dit import DiT
from train.encode import LatentEncoder, encode_signature
from train.flow import training_loss
from train.loader import BucketBatchSampler, ClipBatches
from train.loop import load_trained_dit, lr_factor, train
from train.sample import sample
from train.step_inputs import BatchPreparer, step_inputs
from train.text import build_text_encoder
from train.training_clips import training_index
from train.vae import load_vae

REPO = Path(__file__).resolve().parents[2]
BUCKET = Bucket(height=32, width=32, frames=9)


def loop_config(out_dir: Path, vae: VAEConfig, **changes) -> TrainConfig:
    base = {
        "steps": 8,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_steps": 2,
        "log_every": 1,
        "ckpt_every": 2,
        "val_every": 4,
        "val_fraction": 0.2,
        "caption_dropout": 0.3,
        "ema_decay": 0.9,
        "out_dir": str(out_dir),
        "progress": False,
        "tensorboard": False,
        "vae": vae,
        "dit": DiTConfig(preset="tiny"),
        "data": DataConfig(buckets=(BUCKET,)),
    }
    return TrainConfig(**{**base, **changes})


def losses(out_dir: Path) -> list[tuple[int, str]]:
    with (out_dir / "log.csv").open() as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out_dir / "checkpoints" / "step_0000008" / "model.safetensors"))


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted(real_clips, small_vae, tmp_path):
    store, _ = real_clips
    whole = loop_config(tmp_path / "whole", small_vae)
    train(whole, store.clips_uri)

    # The same run in a child process, SIGKILLed once its first checkpoint exists, then resumed here.
    killed = loop_config(tmp_path / "killed", small_vae)
    config_file = tmp_path / "killed.json"
    config_file.write_text(killed.model_dump_json())
    code = (
        "import sys; from train.config import TrainConfig; from train.loop import train; "
        "train(TrainConfig.model_validate_json(open(sys.argv[1]).read()), sys.argv[2])"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(config_file), store.clips_uri],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not latest.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the child finished before it could be killed"
    stopped_at = int(latest.read_text().split("_")[1])
    assert stopped_at < 8
    train(killed, store.clips_uri)

    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")  # every logged loss, bit for bit
    assert [s for s, _ in losses(tmp_path / "whole")] == list(range(1, 9))
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_precomputed_latents_train_exactly_like_decoding(real_clips, small_vae, tmp_path):
    store = Store(tmp_path / "store")  # a copy: the session's table stays without latent columns
    shutil.copytree(real_clips[0].root, store.root)
    decoded = loop_config(
        tmp_path / "decoded", small_vae, steps=4, data=DataConfig(buckets=(BUCKET,), latents="decode")
    )
    train(decoded, store.clips_uri)

    encoder = LatentEncoder(decoded)
    rows = store.read_clips(columns=["clip_id", "width", "height", "num_frames", "caption"]).to_pydict()
    blobs = store.read_clip_bytes(rows["clip_id"])
    table = encoder({**rows, "video": [blobs[c] for c in rows["clip_id"]]})
    assert table.column("encode_error").null_count == table.num_rows
    store.add_columns(table, stage="encode", config={"signature": encode_signature(decoded)})

    precomputed = loop_config(
        tmp_path / "pre", small_vae, steps=4, data=DataConfig(buckets=(BUCKET,), latents="precomputed")
    )
    train(precomputed, store.clips_uri)
    assert losses(tmp_path / "pre") == losses(tmp_path / "decoded")

    # Latents from another VAE config are refused rather than silently used.
    other = small_vae.model_copy(update={"kl_weight": 0.5})
    with pytest.raises(ValueError, match="run `reelforge encode` again"):
        train(
            loop_config(
                tmp_path / "other", other, steps=1, data=DataConfig(buckets=(BUCKET,), latents="precomputed")
            ),
            store.clips_uri,
        )


def _ddp_worker(rank: int, init_file: str, config_json: str, clips_uri: str, out_dir: str) -> None:
    """One rank of a 2-process gloo group taking the loop's first step on its own share of epoch 0."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    config = TrainConfig.model_validate_json(config_json)
    inputs = _first_step_inputs(config, clips_uri, rank, world=2)
    model = _gated_dit(inputs[1].shape[-1])
    ddp = DistributedDataParallel(model)  # held: its reducer all-reduces the gradients during backward
    training_loss(ddp, *inputs).backward()
    save_file(dict(zip(STEP_INPUTS, inputs, strict=True)), str(Path(out_dir) / f"inputs_{rank}.safetensors"))
    if rank == 0:
        save_file(
            {n: p.grad for n, p in model.named_parameters()}, str(Path(out_dir) / "ddp_grads.safetensors")
        )
    dist.destroy_process_group()


STEP_INPUTS = ("latent", "text", "mask", "noise", "t")


def _first_step_inputs(
    config: TrainConfig, clips_uri: str, rank: int, world: int
) -> tuple[torch.Tensor, ...]:
    """What train.loop.train feeds the DiT at step 1 on `rank`: its sampler share, its noise generator."""
    _, train_index, _ = training_index(config, clips_uri, world)
    text = build_text_encoder(config.text)
    prepare = BatchPreparer(load_vae(config.vae), text, Placement(CPU))
    sampler = BucketBatchSampler(train_index, config.batch_size, config.seed, rank, world)
    batch = ClipBatches(train_index, config.data.caption_column)[next(iter(sampler))]
    generator = Placement(CPU).generator(config.seed * 1000 + rank)
    return step_inputs(batch, prepare, config, generator, *text.null())


def _gated_dit(text_dim: int) -> DiT:
    torch.manual_seed(0)
    model = DiT(DiTConfig(preset="tiny"), latent_channels=4, text_dim=text_dim)
    for block in model.blocks:  # non-zero gates so every parameter receives gradient
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.05)
    torch.nn.init.normal_(model.final.linear.weight, std=0.05)
    return model


@pytest.mark.slow
def test_two_rank_step_equals_one_process_step_on_both_ranks_batches(real_clips, small_vae, tmp_path):
    store, _ = real_clips
    config = loop_config(tmp_path / "unused", small_vae, batch_size=2)
    torch.multiprocessing.spawn(
        _ddp_worker,
        args=(str(tmp_path / "init"), config.model_dump_json(), store.clips_uri, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    ranks = [load_file(str(tmp_path / f"inputs_{r}.safetensors")) for r in range(2)]
    assert not torch.equal(ranks[0]["noise"], ranks[1]["noise"])  # each rank its own noise stream
    union = tuple(torch.cat([r[name] for r in ranks]) for name in STEP_INPUTS)
    model = _gated_dit(union[1].shape[-1])
    training_loss(model, *union).backward()
    ddp_grads = load_file(str(tmp_path / "ddp_grads.safetensors"))
    for name, param in model.named_parameters():
        assert param.grad is not None
        assert (ddp_grads[name] - param.grad).abs().max().item() <= 1e-5, name


def test_warmup_then_cosine_schedule():
    config = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, config) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert lr_factor(100, config) == pytest.approx(0.1)


@pytest.mark.slow
def test_checkpoints_and_samples_record_placeholder_captions(real_clips, small_vae, tmp_path):
    store = Store(tmp_path / "store")  # a copy: the session's table stays unmarked
    shutil.copytree(real_clips[0].root, store.root)
    store.record("clips", "caption", {"models": {"vlm": {"placeholder": True, "columns": ["caption"]}}})
    mark_placeholders(store)
    out = tmp_path / "run"
    summary = train(loop_config(out, small_vae, steps=2, ckpt_every=2, val_every=2), store.clips_uri)
    assert summary.placeholder_inputs == {"caption": "caption/vlm"}
    assert read_state(summary.checkpoint)["placeholder_inputs"] == {"caption": "caption/vlm"}

    (result,) = sample(
        SampleConfig(
            prompts=("a test",), checkpoint=str(out), height=32, width=32, steps=1, out_dir=str(tmp_path)
        )
    )
    assert result.placeholder_inputs == {"caption": "caption/vlm"}
    assert json.loads(result.record.read_text())["placeholder_inputs"] == {"caption": "caption/vlm"}


def _torchrun(config_file: Path, *, wait: bool = True) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 -m pipelines.jobs.train --config FILE`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    child = subprocess.Popen(
        [*command, "-m", "pipelines.jobs.train", "--config", str(config_file)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if wait:
        child.wait(timeout=600)
    return child


@pytest.mark.slow
def test_torchrun_killed_and_resumed_equals_an_uninterrupted_two_rank_run(real_clips, small_vae, tmp_path):
    store, _ = real_clips
    files = {}
    for run in ("whole", "killed"):
        train_section = loop_config(tmp_path / run, small_vae, steps=6, batch_size=2, val_every=3).model_dump(
            mode="json"
        )
        files[run] = tmp_path / f"{run}.yaml"
        files[run].write_text(yaml.safe_dump({"store": {"root": str(store.root)}, "train": train_section}))
    whole = _torchrun(files["whole"])
    stdout, stderr = whole.communicate()
    assert whole.returncode == 0, stderr[-3000:]
    assert stdout.count("trained 6 steps") == 2, stdout  # one line per rank

    child = _torchrun(files["killed"], wait=False)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while not latest.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in process_tree(child.pid):  # the launcher and both ranks (each in a session of its own)
        os.kill(pid, signal.SIGKILL)
    child.communicate()
    stopped_at = int(latest.read_text().split("_")[1])
    assert stopped_at < 6, "the run finished before it could be killed"
    assert read_state(latest_checkpoint(tmp_path / "killed"))["world_size"] == 2
    resumed = _torchrun(files["killed"])
    assert resumed.returncode == 0, resumed.communicate()[1][-3000:]

    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")  # every logged loss, bit for bit
    assert [s for s, _ in losses(tmp_path / "whole")] == list(range(1, 7))
    for weights in ("model", "ema"):
        a, b = (
            load_file(str(tmp_path / run / "checkpoints" / "step_0000006" / f"{weights}.safetensors"))
            for run in ("whole", "killed")
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    checkpoint = latest_checkpoint(tmp_path / "killed")
    assert checkpoint is not None and read_state(checkpoint)["step"] == 6
    model, config = load_trained_dit(checkpoint)
    assert isinstance(model, DiT) and config.steps == 6 and config.vae.weights_path == small_vae.weights_path

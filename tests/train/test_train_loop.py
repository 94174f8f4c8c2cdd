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
from safetensors.torch import load_file

from store import Store
from store.placeholders import mark_placeholders
from train.checkpoint import latest_checkpoint, read_state
from train.config import Bucket, DataConfig, DiTConfig, SampleConfig, TrainConfig, VAEConfig
from train.dit import DiT
from train.encode import LatentEncoder, encode_signature
from train.flow import training_loss
from train.loop import load_trained_dit, lr_factor, train
from train.sample import sample
from train.vae import VideoVAE, save_vae

REPO = Path(__file__).resolve().parents[2]
BUCKET = Bucket(height=32, width=32, frames=9)


@pytest.fixture(scope="module")
def small_vae(tmp_path_factory) -> VAEConfig:
    """An untrained (random) VAE: the loop's bookkeeping does not depend on latent quality."""
    config = VAEConfig(
        base_channels=8, channel_multipliers=(1, 2, 2), spatial_compression=4, latent_channels=4
    )
    torch.manual_seed(0)
    folder = save_vae(VideoVAE(config), tmp_path_factory.mktemp("vae"))
    return config.model_copy(update={"weights_path": str(folder)})


def loop_config(out_dir: Path, vae: VAEConfig, **changes) -> TrainConfig:
    base = dict(
        steps=8,
        batch_size=4,
        lr=1e-3,
        warmup_steps=2,
        log_every=1,
        ckpt_every=2,
        val_every=4,
        val_fraction=0.2,
        caption_dropout=0.3,
        ema_decay=0.9,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
        vae=vae,
        dit=DiTConfig(preset="tiny"),
        data=DataConfig(buckets=(BUCKET,)),
    )
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


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model, batch = _ddp_problem()
    ddp = DistributedDataParallel(model)
    half = slice(rank * 2, rank * 2 + 2)
    loss = training_loss(ddp, *(x[half] for x in batch))
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, Path(out_dir) / "ddp_grads.pt")
    dist.destroy_process_group()


def _ddp_problem():
    torch.manual_seed(0)
    model = DiT(DiTConfig(preset="tiny"), latent_channels=4, text_dim=16)
    for block in model.blocks:  # non-zero gates so every parameter receives gradient
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.05)
    torch.nn.init.normal_(model.final.linear.weight, std=0.05)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 4, 2, 4, 4, generator=g), torch.randn(4, 4, 2, 4, 4, generator=g)
    text, mask = torch.randn(4, 3, 16, generator=g), torch.ones(4, 3, dtype=torch.bool)
    return model, (x0, text, mask, noise, torch.rand(4, generator=g))


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_gradients(tmp_path):
    torch.multiprocessing.spawn(
        _ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    ddp_grads = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    model, batch = _ddp_problem()
    training_loss(model, *batch).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(ddp_grads[name], param.grad, rtol=1e-4, atol=1e-6), name


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


@pytest.mark.slow
def test_torchrun_trains_two_ranks_and_writes_a_checkpoint_that_loads(real_clips, small_vae, tmp_path):
    store, _ = real_clips
    out_dir = tmp_path / "ddp"
    train_section = loop_config(out_dir, small_vae, steps=4, batch_size=2, val_every=4).model_dump(
        mode="json"
    )
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump({"store": {"root": str(store.root)}, "train": train_section}))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a free rendezvous port on this host
            "--nproc-per-node",
            "2",
            "-m",
            "pipelines.jobs.train",
            "--config",
            str(config_file),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained 4 steps") == 2, run.stdout  # one line per rank
    assert [s for s, _ in losses(out_dir)] == [1, 2, 3, 4]
    checkpoint = latest_checkpoint(out_dir)
    assert checkpoint is not None and read_state(checkpoint)["step"] == 4
    model, config = load_trained_dit(checkpoint)
    assert isinstance(model, DiT) and config.steps == 4 and config.vae.weights_path == small_vae.weights_path

"""The DiT training loop: AdamW, warmup + cosine, clipping, EMA, bf16/compile/checkpointing options,
logs (CSV, TensorBoard, progress bar), validation loss, checkpoints with exact resume, and DDP.

Device: train.device (train/device.py): bf16 autocast, TF32, pinned batches and noise drawn on the
GPU on CUDA; fp32 on the CPU.

Exact resume: everything random in a step comes from state that is checkpointed (the noise/timestep/
caption-dropout generator, the torch RNGs: every rank's own) or is a pure function of (seed, epoch)
(the batch order), and the sampler can start mid-epoch; so a run killed and resumed logs the same
losses and ends with the same weights as one that never stopped (on a deterministic CPU), with any
number of ranks.

DDP: started by torchrun (or Ray Train), which sets RANK/WORLD_SIZE/LOCAL_RANK; nccl when the ranks
run on CUDA (each on its LOCAL_RANK GPU), gloo on the CPU. Each rank reads its own share of every
epoch's batches; rank 0 logs and writes checkpoints, with every rank's random state gathered into them.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from train.checkpoint import (
    RankRng,
    capture_rng,
    latest_checkpoint,
    load_weights,
    read_state,
    restore_checkpoint,
    save_checkpoint,
)
from train.clip_index import ClipIndex
from train.config import TrainConfig
from train.device import CPU, Placement, autocast_dtype, local_rank
from train.dit import DiT
from train.flow import sample_timesteps, training_loss
from train.loader import BucketBatchSampler, ClipBatches, make_loader
from train.step_inputs import BatchPreparer, step_inputs
from train.text import TextEncoder, build_text_encoder
from train.training_clips import placeholder_inputs, training_index
from train.vae import load_vae

log = logging.getLogger(__name__)
LOG_FIELDS = ("step", "loss", "lr", "grad_norm", "step_time_s", "samples_per_s", "tokens_per_s")
# Evaluation during training: (step, EMA model, text encoder) -> {dimension: value}, called on rank 0
# every train.eval_every steps; pipelines/jobs/eval.py builds it (samples fixed prompts and scores them).
Evaluator = Callable[[int, DiT, TextEncoder], dict[str, float]]


@dataclass
class TrainSummary:
    """The outcome of a training run."""

    steps: int
    final_loss: float
    val_loss: float | None
    checkpoint: Path | None
    train_clips: int
    val_clips: int
    # {column: "stage/model"}: inputs made by random-weight models (their captions are random text)
    placeholder_inputs: dict[str, str] = field(default_factory=dict)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to min_lr_ratio of it (or constant)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def distributed_context(
    config: TrainConfig, device: torch.device | None = None
) -> tuple[int, int, Placement]:
    """(rank, world_size, where this rank trains). Resolves train.device (each rank of a distributed run
    on its LOCAL_RANK GPU) unless the caller names the device (a Ray Train worker: the GPU Ray gave
    it), then initialises the process group when torchrun started the ranks: nccl between GPUs, gloo
    between CPU processes (Ray Train initialises its own)."""
    if device is None:
        placement = Placement.resolve(config.device, config.precision, "train.device", local_rank())
    else:
        placement = Placement(device, autocast_dtype(config.precision, device))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if placement.cuda else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), placement
    return 0, 1, placement


def gather_rngs(rng: RankRng, rank: int, world: int) -> list[RankRng]:
    """Every rank's random state, in rank order, on rank 0 (an empty list elsewhere); every rank calls it."""
    if world == 1:
        return [rng]
    gathered: list[Any] = [None] * world if rank == 0 else []
    dist.gather_object(rng, gathered if rank == 0 else None, dst=0)
    return cast(list[RankRng], gathered)


def _batches_forever(
    loader: torch.utils.data.DataLoader[dict[str, Any]], sampler: BucketBatchSampler, step: int
) -> Iterator[dict[str, Any]]:
    per_epoch = len(sampler)  # at least 1: training_index refuses fewer batches than ranks
    epoch, start = divmod(step, per_epoch)
    while True:
        sampler.set_epoch(epoch, start)
        yield from loader
        epoch, start = epoch + 1, 0


def _truncate_csv(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (a killed run logged past it)."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = list(csv.DictReader(f))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0].keys() if rows else LOG_FIELDS)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= last_step)


def _append_csv(path: Path, fields: tuple[str, ...], row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, index: ClipIndex, prepare: BatchPreparer, config: TrainConfig
) -> float | None:
    """Mean flow loss on held-out clips with fixed noise and timesteps, so values are comparable over time."""
    if len(index) == 0:
        return None
    generator = prepare.placement.generator(config.seed + 999)
    sampler = BucketBatchSampler(index, config.batch_size, config.seed, shuffle=False)
    batches = ClipBatches(index, config.data.caption_column)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for positions in sampler:
        latent, text, mask = prepare(batches[positions])
        noise = torch.randn(latent.shape, generator=generator, device=generator.device).to(latent.device)
        t = sample_timesteps(
            latent.shape[0], config.logit_normal_mean, config.logit_normal_std, generator, latent.device
        )
        with prepare.placement.autocast():
            loss = training_loss(model, latent, text, mask, noise, t)
        total += loss.item() * latent.shape[0]
        count += latent.shape[0]
    model.train(was_training)
    return total / count


def train(  # noqa: PLR0912, PLR0915 — the training loop read top to bottom: resume, step, log, save
    config: TrainConfig,
    clips_uri: str,
    device: torch.device | None = None,
    evaluator: Evaluator | None = None,
) -> TrainSummary:
    """Train the DiT on the clips at `clips_uri`, resuming from `config.out_dir` if it has a checkpoint.
    `device` overrides train.device (a Ray Train worker passes the GPU Ray assigned it); `evaluator`
    scores the EMA model every `config.eval_every` steps on rank 0 (eval.csv, TensorBoard `eval/*`)."""
    rank, world, placement = distributed_context(config, device)
    dev = placement.device
    out_dir = Path(config.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    text_encoder = build_text_encoder(config.text).to(dev)
    null_text, null_mask = (x.to(dev) for x in text_encoder.null())
    index, train_index, val_index = training_index(config, clips_uri, world)
    vae = None if index.has_latents else load_vae(config.vae).to(dev)
    prepare = BatchPreparer(vae, text_encoder, placement)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = DiT(config.dit, latent_channels=config.vae.latent_channels, text_dim=text_encoder.dim).to(dev)
    model.grad_checkpointing = config.grad_checkpointing
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    noise_generator = placement.generator(config.seed * 1000 + rank)

    step = 0
    resumed_from = latest_checkpoint(out_dir)
    if resumed_from is not None:
        state = restore_checkpoint(resumed_from, model, ema, optimizer, scheduler, noise_generator, rank)
        step = state["step"]
        if rank == 0:
            _truncate_csv(out_dir / "log.csv", step)
            _truncate_csv(out_dir / "val.csv", step)
            _truncate_csv(out_dir / "eval.csv", step)
            log.info("resumed from %s at step %d", resumed_from, step)

    network: torch.nn.Module = model
    if world > 1:
        network = DistributedDataParallel(model, device_ids=[dev] if placement.cuda else None)
    if config.compile:
        # compiling a Module gives an OptimizedModule (a Module); the stub only says "a callable"
        network = cast(torch.nn.Module, torch.compile(network))

    sampler = BucketBatchSampler(train_index, config.batch_size, config.seed, rank, world)
    loader = make_loader(
        ClipBatches(train_index, config.data.caption_column),
        sampler,
        config.data.num_workers,
        pin_memory=placement.cuda,
    )
    writer = None
    if rank == 0 and config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step)
    placeholders = placeholder_inputs(clips_uri, index.version, config)
    extra = {
        "config": config.model_dump(mode="json"),
        "text_dim": text_encoder.dim,
        "latent_channels": config.vae.latent_channels,
        "clips_uri": clips_uri,
        "dataset_version": index.version,
        "placeholder_inputs": placeholders,
    }
    progress = tqdm(total=config.steps, initial=step, disable=rank != 0 or not config.progress, desc="train")
    loss_value, val = float("nan"), None
    checkpoint = resumed_from
    model.train()
    batches = _batches_forever(loader, sampler, step)
    while step < config.steps:
        started = time.perf_counter()
        latent, text, mask, noise, t = step_inputs(
            next(batches), prepare, config, noise_generator, null_text, null_mask
        )
        with placement.autocast():
            loss = training_loss(network, latent, text, mask, noise, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - config.ema_decay)
        step += 1
        loss_value = loss.item()  # waits for the step on CUDA, so the time below is the step's
        elapsed = time.perf_counter() - started
        if rank == 0:
            tokens = latent.shape[0] * math.prod(model.token_grid(tuple(latent.shape))) * world
            row = {
                "step": step,
                "loss": f"{loss_value:.6f}",
                "lr": f"{scheduler.get_last_lr()[0]:.6e}",
                "grad_norm": f"{grad_norm.item():.4f}",
                "step_time_s": f"{elapsed:.4f}",
                "samples_per_s": f"{latent.shape[0] * world / elapsed:.2f}",
                "tokens_per_s": f"{tokens / elapsed:.1f}",
            }
            if step % config.log_every == 0 or step == 1:
                _append_csv(out_dir / "log.csv", LOG_FIELDS, row)
                if writer is not None:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/tokens_per_s", tokens / elapsed, step)
            progress.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens / elapsed:.0f}")
            progress.update(1)
            if step % config.val_every == 0 or step == config.steps:
                val = validation_loss(model, val_index, prepare, config)
                if val is not None:
                    _append_csv(
                        out_dir / "val.csv", ("step", "val_loss"), {"step": step, "val_loss": f"{val:.6f}"}
                    )
                    if writer is not None:
                        writer.add_scalar("val/loss", val, step)
            if (
                evaluator is not None
                and config.eval_every
                and (step % config.eval_every == 0 or step == config.steps)
            ):
                scores = evaluator(step, ema, text_encoder)
                _append_csv(out_dir / "eval.csv", ("step", *scores), {"step": step, **scores})
                for name, value in scores.items():
                    if writer is not None:
                        writer.add_scalar(f"eval/{name}", value, step)
        if step % config.ckpt_every == 0 or step == config.steps:
            rngs = gather_rngs(capture_rng(noise_generator), rank, world)
            if rank == 0:
                checkpoint = save_checkpoint(out_dir, step, model, ema, optimizer, scheduler, rngs, extra)
    progress.close()
    if writer is not None:
        writer.close()
    if rank == 0:
        summary = {
            "steps": step,
            "final_loss": loss_value,
            "val_loss": val,
            "train_clips": len(train_index),
            "val_clips": len(val_index),
            "skipped": index.skipped,
            "placeholder_inputs": placeholders,
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return TrainSummary(step, loss_value, val, checkpoint, len(train_index), len(val_index), placeholders)


def load_trained_dit(
    checkpoint: Path, use_ema: bool = True, device: torch.device = CPU
) -> tuple[DiT, TrainConfig]:
    """The DiT of a checkpoint folder, on `device`, and the config it was trained with (weights via safetensors)."""
    state = read_state(checkpoint)
    config = TrainConfig.model_validate(state["config"])
    model = DiT(config.dit, latent_channels=state["latent_channels"], text_dim=state["text_dim"])
    model.load_state_dict(load_weights(checkpoint, ema=use_ema))
    return model.to(device).eval(), config

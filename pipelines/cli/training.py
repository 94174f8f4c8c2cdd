"""The training stages: encode, train-vae, train and sample (clips -> latents -> a trained DiT -> videos)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.cli.options import Subcommands, UsageError, add_command, strict_option
from pipelines.cli.stage_run import compact_after, job, outcome, preflight
from pipelines.config import PipelineConfig


def add_encode_parser(sub: Subcommands) -> None:
    """Add the `encode` command."""
    p = add_command(
        sub,
        "encode",
        "precompute VAE latents and text embeddings into Lance columns",
        "Encode the selected, captioned clips into latents and their captions into text embeddings, so "
        "training does not decode video on every epoch. Resumes: clips already encoded are skipped.",
    )
    p.add_argument("--overwrite", action="store_true", help="encode every clip again and replace the columns")
    strict_option(p, "clip")


def add_train_vae_parser(sub: Subcommands) -> None:
    """Add the `train-vae` command."""
    p = add_command(
        sub,
        "train-vae",
        "train the causal 3D video autoencoder on the clips",
        "Train the video compression network into train.vae_train.out_dir; skipped when "
        "train.vae.weights_path already holds weights (unless --fresh).",
    )
    p.add_argument("--fresh", action="store_true", help="train even if weights exist")


def add_train_parser(sub: Subcommands) -> None:
    """Add the `train` command."""
    p = add_command(
        sub,
        "train",
        "train the DiT on the clips table (latents from encode when present)",
        "Train on the clips selected by train.data.filter; resumes exactly from the last checkpoint in "
        "train.out_dir. For DDP: torchrun -m pipelines.jobs.train (see the README).",
    )
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    p.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        metavar="N",
        help="train with N Ray Train workers (DDP over the Ray cluster) instead of in this process",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each Ray Train worker asks for (with --ray-workers); 0 trains on the workers' CPUs",
    )


def add_sample_parser(sub: Subcommands) -> None:
    """Add the `sample` command."""
    p = add_command(
        sub,
        "sample",
        "generate videos from prompts with a trained checkpoint (MP4 + GIF)",
        "Sample videos for prompts with the Euler sampler and classifier-free guidance.",
    )
    p.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeatable; default: sample.prompts)"
    )


def encode_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Encode latents and text embeddings; returns the exit status."""
    from pipelines.jobs.encode import run_encode

    preflight("encode", cfg)
    with job(cfg, "encode"):
        summary = run_encode(cfg, overwrite=args.overwrite)
    print("\n".join(summary.lines()))
    compact_after(cfg)
    return outcome("encode", summary.encoded, summary.failed, args, "clips")


def train_vae_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Train the video autoencoder unless its weights exist; returns the exit status."""
    from pipelines.jobs.train import run_train_vae
    from train.vae import WEIGHTS_FILE

    weights = cfg.train.vae.weights_path
    if weights and (Path(weights) / WEIGHTS_FILE).is_file() and not args.fresh:
        print(f"train-vae: weights already in {weights} (use --fresh to train again)")
        return 0
    preflight("train-vae", cfg)
    with job(cfg, "train-vae"):
        result = run_train_vae(cfg)
    print(f"train-vae: {json.dumps(result, default=str)}")
    return 0


def train_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Train the DiT here, with torchrun or on Ray workers; returns the exit status."""
    from pipelines.jobs.train import run_train, run_train_ray

    if args.ray_workers < 0:
        raise UsageError(f"--ray-workers {args.ray_workers}: give at least 1 (or leave it out to train here)")
    gpus_per_worker = getattr(args, "gpus_per_worker", 0.0)  # the demo runs the handler without it
    if gpus_per_worker < 0 or (gpus_per_worker and not args.ray_workers):
        raise UsageError(f"--gpus-per-worker {gpus_per_worker:g}: give 0 or more, with --ray-workers N")
    preflight("train", cfg, train_workers=max(1, args.ray_workers))
    if args.ray_workers:
        from pipelines.preflight import PreflightError, check_ray_workers
        from pipelines.runtime import init_ray

        init_ray(cfg.ray)
        try:
            check_ray_workers(args.ray_workers, gpus_per_worker)
        except PreflightError as err:
            raise UsageError(str(err)) from None
        with job(cfg, "train"):
            result = run_train_ray(cfg, args.ray_workers, gpus_per_worker, fresh=args.fresh)
        print(f"train: Ray Train finished: {result.metrics}, checkpoint {result.checkpoint.path}")
        return 0
    with job(cfg, "train"):
        summary = run_train(cfg, fresh=args.fresh)
    val = "n/a" if summary.val_loss is None else f"{summary.val_loss:.4f}"
    print(
        f"train: {summary.steps} steps on {summary.train_clips} clips ({summary.val_clips} held out), "
        f"loss {summary.final_loss:.4f}, validation loss {val}, checkpoint {summary.checkpoint}"
    )
    if summary.placeholder_inputs:
        print(f"  PLACEHOLDER inputs (random-weight models): {_placeholder_list(summary.placeholder_inputs)}")
    return 0


def _placeholder_list(marks: dict[str, str]) -> str:
    return ", ".join(f"{column} from {source}" for column, source in sorted(marks.items()))


def sample_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Generate videos from prompts with a checkpoint; returns the exit status."""
    from pipelines.jobs.train import run_sample

    preflight("sample", cfg)
    results = run_sample(cfg, args.prompt)
    for result in results:
        print(f"sample: {result.prompt!r} -> {result.mp4} and {result.gif} ({result.record.name})")
    if results and results[0].placeholder_inputs:
        print(
            "  PLACEHOLDER: the checkpoint learnt from random-weight output "
            f"({_placeholder_list(results[0].placeholder_inputs)})"
        )
    return 0

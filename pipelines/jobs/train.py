"""`reelforge train-vae`, `reelforge train` and `reelforge sample`: thin entries over train/.

Three ways to run the DiT loop, one code path (train.loop.train):
- one process: `run_train(cfg)`;
- DDP with torchrun: `python -m torch.distributed.run --nproc_per_node=2 -m pipelines.jobs.train [--config C]
  [--set k=v ...]` (gloo on CPU, nccl on GPUs; torchrun sets RANK/WORLD_SIZE);
- a Ray cluster: `run_train_ray(cfg, num_workers)` with Ray Train's TorchTrainer, which starts the
  workers and their process group.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig, load_config
from store import Store
from store.maintenance import job_lock
from train.checkpoint import checkpoint_root
from train.loop import TrainSummary, train
from train.sample import SampleResult, sample
from train.vae_train import train_vae


def run_train_vae(config: PipelineConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train the video autoencoder on the clips; the weights land in train.vae_train.out_dir."""
    store = Store(config.store.root)
    store.require("clips")
    return train_vae(config.train.vae, config.train.vae_train, store.clips_uri, progress=progress)


def run_train(config: PipelineConfig, *, fresh: bool = False, device: str = "cpu") -> TrainSummary:
    """Train (or resume training) the DiT; `fresh` discards existing checkpoints first."""
    store = Store(config.store.root)
    store.require("clips")
    if fresh:
        shutil.rmtree(checkpoint_root(config.train.out_dir), ignore_errors=True)
    return train(config.train, store.clips_uri, device=device)


def ray_worker_resources(use_gpu: bool) -> dict[str, float]:
    """What each Ray Train worker asks the cluster for: one CPU, and one GPU when training on GPUs."""
    return {"CPU": 1.0, **({"GPU": 1.0} if use_gpu else {})}


def run_train_ray(config: PipelineConfig, num_workers: int = 2, use_gpu: bool = False) -> Any:
    """The same loop on a Ray cluster: one TorchTrainer worker per process, DDP between them."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    clips_uri = str(Path(Store(config.store.root).clips_uri).resolve())
    train_config = config.train.model_copy(update={"out_dir": str(Path(config.train.out_dir).resolve())})

    def loop_per_worker(_: dict[str, Any]) -> None:
        import torch

        train(train_config, clips_uri, device="cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    trainer = TorchTrainer(
        loop_per_worker,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=ray_worker_resources(use_gpu)
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
    )
    return trainer.fit()


def run_sample(config: PipelineConfig, prompts: Sequence[str] = ()) -> list[SampleResult]:
    cfg = config.sample if not prompts else config.sample.model_copy(update={"prompts": tuple(prompts)})
    return sample(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun entry: every rank runs this; the loop finds its rank in the environment."""
    parser = argparse.ArgumentParser(description="Train the DiT (run under torchrun for DDP).")
    parser.add_argument("--config", default=None, help="a configs/ name or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="discard existing checkpoints first")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    # Every rank holds the shared job lock: vacuum must not remove the version the ranks read.
    rank = os.environ.get("RANK", "0")
    with job_lock(config.store.root, f"train (rank {rank})"):
        summary = run_train(config, fresh=args.fresh)
    print(f"trained {summary.steps} steps, loss {summary.final_loss:.4f}, checkpoint {summary.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

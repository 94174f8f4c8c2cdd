"""`reelforge train-vae`, `reelforge train` and `reelforge sample`: thin entries over train/.

Three ways to run the DiT loop, one code path (train.loop.train), on train.device:
- one process: `run_train(cfg)`;
- DDP with torchrun: `python -m torch.distributed.run --nproc_per_node=2 -m pipelines.jobs.train [--config C]
  [--set k=v ...]` (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; each rank on its LOCAL_RANK GPU with
  nccl, or on the CPU with gloo);
- a Ray cluster: `run_train_ray(cfg, num_workers, gpus_per_worker)` with Ray Train's TorchTrainer,
  which starts the workers (each on the GPU Ray gives it when gpus_per_worker > 0) and their process
  group. Checkpoints go to train.out_dir, which must then be on storage every worker reaches, and a
  run started again (after a kill, or a lost node) resumes from its latest one.
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
from store.locks import job_lock
from train.checkpoint import checkpoint_root
from train.config import DeviceError
from train.loop import TrainSummary, train
from train.sample import SampleResult, sample
from train.vae_train import train_vae


def run_train_vae(config: PipelineConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train the video autoencoder on the clips; the weights land in train.vae_train.out_dir."""
    store = Store(config.store.root)
    store.require("clips")
    return train_vae(config.train.vae, config.train.vae_train, store.clips_uri, progress=progress)


def run_train(config: PipelineConfig, *, fresh: bool = False) -> TrainSummary:
    """Train (or resume training) the DiT on train.device; `fresh` discards existing checkpoints first."""
    store = Store(config.store.root)
    store.require("clips")
    if fresh:
        shutil.rmtree(checkpoint_root(config.train.out_dir), ignore_errors=True)
    evaluator = None
    if config.train.eval_every:
        from pipelines.jobs.eval import training_evaluator

        evaluator = training_evaluator(config)
    return train(config.train, store.clips_uri, evaluator=evaluator)


def ray_worker_resources(gpus_per_worker: float = 0.0) -> dict[str, float]:
    """What each Ray Train worker asks the cluster for: one CPU, and its GPUs when training on GPUs."""
    return {"CPU": 1.0, **({"GPU": gpus_per_worker} if gpus_per_worker > 0 else {})}


def check_ray_device(device: str, gpus_per_worker: float) -> None:
    """Refuse a train.device the Ray workers cannot have: Ray decides which GPU a worker sees (none
    unless --gpus-per-worker asks for some)."""
    if gpus_per_worker > 0 and device not in ("auto", "cuda"):
        raise DeviceError(
            f"train.device={device} but --gpus-per-worker {gpus_per_worker:g} trains each Ray worker on the "
            "GPU Ray gives it: set train.device to auto or cuda"
        )
    if gpus_per_worker <= 0 and device.startswith("cuda"):
        raise DeviceError(
            f"train.device={device} but the Ray workers get no GPU: add --gpus-per-worker 1, or set "
            "train.device to auto or cpu"
        )


def run_train_ray(
    config: PipelineConfig, num_workers: int = 2, gpus_per_worker: float = 0.0, *, fresh: bool = False
) -> Any:
    """The same loop on a Ray cluster: one TorchTrainer worker per rank, DDP between them (nccl on the
    GPUs Ray assigns when `gpus_per_worker` > 0, else gloo on the CPU). Every worker resumes from the
    latest checkpoint in train.out_dir, which is also Ray Train's run folder (its run records). Returns
    Ray Train's Result: rank 0's summary as its metrics, the final step folder as its checkpoint."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    check_ray_device(config.train.device, gpus_per_worker)
    if fresh:
        shutil.rmtree(checkpoint_root(config.train.out_dir), ignore_errors=True)
    use_gpu = gpus_per_worker > 0
    clips_uri = str(Path(Store(config.store.root).clips_uri).resolve())
    out_dir = Path(config.train.out_dir).resolve()
    train_config = config.train.model_copy(update={"out_dir": str(out_dir)})
    # The evaluator (train.eval_every) runs on rank 0 and writes under these, wherever that worker runs.
    eval_config = config.model_copy(
        update={
            "train": train_config,
            "store": config.store.model_copy(update={"root": Path(config.store.root).resolve()}),
        }
    )

    def loop_per_worker(_: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch

        # Without GPUs Ray hides every GPU from the worker, so train.device (auto or cpu) is the CPU.
        device = ray.train.torch.get_device() if use_gpu else None
        evaluator = None
        if train_config.eval_every and ray.train.get_context().get_world_rank() == 0:
            from pipelines.jobs.eval import training_evaluator

            evaluator = training_evaluator(eval_config)
        summary = train(train_config, clips_uri, device, evaluator)
        # Every worker reports once (Ray Train's report is a barrier); rank 0 registers the final
        # checkpoint where the loop wrote it (shared storage already: nothing is copied or deleted).
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0 and summary.checkpoint is not None:
            checkpoint = ray.train.Checkpoint.from_directory(str(summary.checkpoint))
        ray.train.report(
            {"steps": summary.steps, "final_loss": summary.final_loss, "val_loss": summary.val_loss},
            checkpoint=checkpoint,
            checkpoint_upload_fn=lambda written, _name: written,
            delete_local_checkpoint_after_upload=False,
        )

    trainer = TorchTrainer(
        loop_per_worker,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=ray_worker_resources(gpus_per_worker),
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        # Ray Train's run folder is train.out_dir itself: it registers only checkpoints inside its run
        # folder, and the loop's are there already.
        run_config=RunConfig(name=out_dir.name, storage_path=str(out_dir.parent)),
    )
    return trainer.fit()


def run_sample(config: PipelineConfig, prompts: Sequence[str] = ()) -> list[SampleResult]:
    """Sample videos with the config's prompts, or with `prompts` when given."""
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

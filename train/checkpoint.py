"""Checkpoints: safetensors for every tensor (weights, EMA, optimizer state, RNG states), JSON for the rest.

Every rank's random state is kept (`rng.safetensors` holds `<rank>.<name>` tensors, state.json the
Python and NumPy states per rank): rank r resumes with its own noise stream, not rank 0's copied to it.

Layout: <out_dir>/checkpoints/step_0000100/{model,ema,optimizer,rng}.safetensors + state.json, and
<out_dir>/checkpoints/latest naming the newest complete one. A checkpoint is written into a temp
folder and renamed, then `latest` is replaced atomically, so a kill at any moment leaves the
previous checkpoint intact. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"
log = logging.getLogger(__name__)


@dataclass
class RankRng:
    """One rank's random state: torch tensors (global CPU and CUDA generators, the step-noise generator)
    and the Python and NumPy states as JSON-able lists."""

    tensors: dict[str, torch.Tensor]
    python: list[Any]
    numpy: list[Any]


def capture_rng(noise_generator: torch.Generator) -> RankRng:
    """This rank's random states: torch CPU/CUDA, the noise generator, Python and numpy."""
    tensors = {"torch_cpu": torch.get_rng_state(), "noise": noise_generator.get_state()}
    if noise_generator.device.type == "cuda":
        tensors["torch_cuda"] = torch.cuda.get_rng_state(noise_generator.device)
    # the default (legacy) form is this tuple; numpy's stub types the default call as the dict form
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return RankRng(
        tensors,
        [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    )


def apply_rng(rng: RankRng, noise_generator: torch.Generator) -> None:
    """Restore the random states `capture_rng` took."""
    torch.set_rng_state(rng.tensors["torch_cpu"])
    noise_generator.set_state(rng.tensors["noise"])
    if "torch_cuda" in rng.tensors and noise_generator.device.type == "cuda":
        torch.cuda.set_rng_state(rng.tensors["torch_cuda"], noise_generator.device)
    random.setstate((rng.python[0], tuple(rng.python[1]), rng.python[2]))
    numpy_state = rng.numpy
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))


def checkpoint_root(out_dir: str | Path) -> Path:
    """The checkpoints folder of a training out_dir."""
    return Path(out_dir) / "checkpoints"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank_rngs: Sequence[RankRng],
    extra: dict[str, Any],
) -> Path:
    """Write step `step` (`rank_rngs[r]` is rank r's random state, gathered by the caller)."""
    root = checkpoint_root(out_dir)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_host(model.state_dict()), str(tmp / "model.safetensors"))
    save_file(_host(ema.state_dict()), str(tmp / "ema.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(_host(opt_tensors), str(tmp / "optimizer.safetensors"))
    save_file(
        {f"{rank}.{name}": t for rank, rng in enumerate(rank_rngs) for name, t in _host(rng.tensors).items()},
        str(tmp / "rng.safetensors"),
    )
    state = {
        "step": step,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "world_size": len(rank_rngs),
        "python_rng": [rng.python for rng in rank_rngs],
        "numpy_rng": [rng.numpy for rng in rank_rngs],
        **extra,
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    return final


def _host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint LATEST points at, or None when there is no complete one."""
    pointer = checkpoint_root(out_dir) / LATEST
    if not pointer.is_file():
        return None
    path = checkpoint_root(out_dir) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's state.json."""
    state: dict[str, Any] = json.loads((path / "state.json").read_text())
    return state


def load_weights(path: Path, ema: bool) -> dict[str, torch.Tensor]:
    """The checkpoint's model (or EMA) weights."""
    return load_file(str(path / ("ema.safetensors" if ema else "model.safetensors")))


def restore_checkpoint(
    path: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    noise_generator: torch.Generator,
    rank: int = 0,
) -> dict[str, Any]:
    """Load the weights, optimizer and schedule into the given objects (tensors land on the devices
    of the objects they load into) and rank `rank`'s random state. A checkpoint written by fewer
    ranks has no state for this one: the rank keeps its seeded state, so the run goes on but is no
    longer an exact continuation (logged)."""
    state = read_state(path)
    model.load_state_dict(load_weights(path, ema=False))
    ema.load_state_dict(load_weights(path, ema=True))
    optimizer.load_state_dict(
        _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    )
    scheduler.load_state_dict(state["scheduler"])
    saved = load_file(str(path / "rng.safetensors"))
    prefix = f"{rank}."
    tensors = {k.removeprefix(prefix): v for k, v in saved.items() if k.startswith(prefix)}
    if "noise" in tensors:
        apply_rng(RankRng(tensors, state["python_rng"][rank], state["numpy_rng"][rank]), noise_generator)
    else:
        log.warning(
            "%s holds the random state of %s rank(s), none for rank %d: this rank continues from its seed "
            "(the resumed run is not an exact continuation)",
            path,
            state.get("world_size", "?"),
            rank,
        )
    return state

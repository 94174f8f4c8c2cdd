"""Checkpoints: safetensors for every tensor (weights, EMA, optimizer state, RNG states), JSON for the rest.

Layout: <out_dir>/checkpoints/step_0000100/{model,ema,optimizer,rng}.safetensors + state.json, and
<out_dir>/checkpoints/latest naming the newest complete one. A checkpoint is written into a temp
folder and renamed, then `latest` is replaced atomically, so a kill at any moment leaves the
previous checkpoint intact. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def checkpoint_root(out_dir: str | Path) -> Path:
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
    noise_generator: torch.Generator,
    extra: dict[str, Any],
) -> Path:
    root = checkpoint_root(out_dir)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors")
    )
    save_file({k: v.detach().contiguous() for k, v in ema.state_dict().items()}, str(tmp / "ema.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file(
        {"torch_cpu": torch.get_rng_state(), "noise": noise_generator.get_state()},
        str(tmp / "rng.safetensors"),
    )
    # the default (legacy) form is this tuple; numpy's stub types the default call as the dict form
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "step": step,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "python_rng": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy_rng": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        **extra,
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    return final


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    pointer = checkpoint_root(out_dir) / LATEST
    if not pointer.is_file():
        return None
    path = checkpoint_root(out_dir) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / "state.json").read_text())


def load_weights(path: Path, ema: bool) -> dict[str, torch.Tensor]:
    return load_file(str(path / ("ema.safetensors" if ema else "model.safetensors")))


def restore_checkpoint(
    path: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    noise_generator: torch.Generator,
) -> dict[str, Any]:
    state = read_state(path)
    model.load_state_dict(load_weights(path, ema=False))
    ema.load_state_dict(load_weights(path, ema=True))
    optimizer.load_state_dict(
        _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    )
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    noise_generator.set_state(rng["noise"])
    python_state = state["python_rng"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy_rng"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    return state

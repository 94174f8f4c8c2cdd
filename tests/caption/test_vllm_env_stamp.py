"""The vLLM environments' build scripts (caption/vllm/env_cpu.sh, env_cuda.sh) leave an up-to-date env
alone, wherever the script lives and however its comments read, and rebuild it when its pins or its
commands change. They run here against a stand-in interpreter whose pip and checks do nothing: no
network, no 2.5 GB environment; the stamp logic is all real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {"cpu": "env_cpu.sh", "cuda": "env_cuda.sh"}

# `-` is the CPU script's pin lookup in pyproject.toml (real Python); `-m venv DIR` makes a folder with
# this file as its python; pip, the smoke test and the import check succeed without doing anything.
STAND_IN_PYTHON = """#!/usr/bin/env bash
case "$1" in
  -) exec {python} "$@" ;;
  -m) if [[ "$2" == venv ]]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi ;;
esac
exit 0
"""


def _checkout(root: Path) -> Path:
    """The files the scripts read, laid out as in the repository under `root`."""
    (root / "caption" / "vllm").mkdir(parents=True)
    for name in (*SCRIPTS.values(), "cuda.lock"):
        shutil.copy(REPO / "caption" / "vllm" / name, root / "caption" / "vllm" / name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _edit(path: Path, pattern: str, replacement: str) -> None:
    text, n = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.MULTILINE)
    assert n == 1, (path, pattern)
    path.write_text(text)


@pytest.fixture
def build(tmp_path):
    """Runs a checkout's build script for `kind` on one venv folder; returns what it printed."""
    python = tmp_path / "python"
    python.write_text(STAND_IN_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    venv = tmp_path / "venv"

    def run(checkout: Path, kind: str) -> str:
        script = checkout / "caption" / "vllm" / SCRIPTS[kind]
        done = subprocess.run(
            ["bash", str(script), str(venv)],
            env={**os.environ, "PYTHON": str(python)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    return run


@pytest.mark.parametrize("kind", list(SCRIPTS))
def test_an_up_to_date_env_is_left_alone_wherever_the_script_lives(tmp_path, build, kind):
    first = _checkout(tmp_path / "first")
    assert "building" in build(first, kind)
    assert "up to date" in build(first, kind)
    # The same script and pins in another checkout (another path), and with a comment reworded.
    moved = _checkout(tmp_path / "elsewhere" / "repo")
    _edit(moved / "caption" / "vllm" / SCRIPTS[kind], r"^# Smoke test:", "# The smoke test:")
    assert "up to date" in build(moved, kind)


@pytest.mark.parametrize("kind", list(SCRIPTS))
@pytest.mark.parametrize("change", ["pin", "command"])
def test_a_changed_pin_or_command_rebuilds_the_env(tmp_path, build, kind, change):
    checkout = _checkout(tmp_path / "repo")
    assert "building" in build(checkout, kind)
    if change == "command":
        _edit(checkout / "caption" / "vllm" / SCRIPTS[kind], r"install -q -U pip$", "install -q -U pip wheel")
    elif kind == "cpu":  # the CPU env takes the caption job's libraries at pyproject.toml's pins
        _edit(checkout / "pyproject.toml", r'"tqdm==[^"]+"', '"tqdm==4.0.0"')
    else:
        _edit(checkout / "caption" / "vllm" / "cuda.lock", r"^tqdm==\S+", "tqdm==4.0.0")
    assert "building" in build(checkout, kind)
    assert "up to date" in build(checkout, kind)

"""Start-up: commands that need no Ray import none, and a Ray kept running for a project folder
(`reelforge ray start`) is what stage commands on that folder join, and only that one. How fast
commands start is measured by bench/startup.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import parse_config
from pipelines.ray_head import RECORD, recorded_head, start_head, stop_head
from pipelines.runtime import join_project_ray

REPO = Path(__file__).resolve().parents[2]
# What a command that runs no model and no job must not pay for (seconds of imports each).
HEAVY = {"torch", "ray", "open_clip", "vllm"}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    return env


def _imported_by(args: list[str]) -> set[str]:
    """Top-level packages in sys.modules after `reelforge ARGS` ran in a fresh interpreter."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['reelforge', *{args!r}]\n"
        "try:\n    runpy.run_module('pipelines.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "import json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True, cwd=REPO
    )
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [["--help"], ["status"], ["ray", "status"], ["probe", "--help"]])
def test_commands_that_need_no_ray_import_no_heavy_module(args, tmp_path):
    root = ["--root", str(tmp_path)] if args[-1] == "status" else []
    imported = _imported_by([*args, *root])
    assert "pipelines" in imported  # the command ran
    assert not imported & HEAVY, f"reelforge {' '.join(args)} imported {sorted(imported & HEAVY)}"


def _unset_ray_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset Ray's join variables for this test and restore them after it, including when the code under
    test sets them (join_project_ray does): monkeypatch.delenv alone records nothing for an unset name,
    so a set variable would outlive the test and send later tests' subprocesses to a stopped head."""
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_no_record_or_a_stale_one_joins_nothing(tmp_path, monkeypatch):
    _unset_ray_variables(monkeypatch)
    cfg = parse_config({"store": {"root": str(tmp_path)}})
    assert join_project_ray(cfg) is None and "RAY_ADDRESS" not in os.environ
    # A record whose process is not a head (here: this test's own process) is stale.
    record = tmp_path / RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"address": "127.0.0.1:1", "pid": os.getpid(), "logs": "", "token": "x"}))
    assert recorded_head(tmp_path) is None
    assert join_project_ray(cfg) is None and "RAY_ADDRESS" not in os.environ


def test_an_address_given_by_the_user_wins_over_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    cfg = parse_config({"store": {"root": str(tmp_path)}})
    assert join_project_ray(cfg) is None and os.environ["RAY_ADDRESS"] == "10.0.0.1:6379"


@pytest.mark.slow
def test_a_project_ray_is_joined_by_its_commands_and_stopped(tmp_path, monkeypatch):
    _unset_ray_variables(monkeypatch)
    head = start_head(tmp_path, num_cpus=1)
    try:
        assert recorded_head(tmp_path) == head and head.alive()
        assert start_head(tmp_path) == head  # a running head is kept, not started twice
        assert oct((tmp_path / RECORD).stat().st_mode & 0o777) == "0o600"  # it holds the join token
        cfg = parse_config({"store": {"root": str(tmp_path)}})
        assert join_project_ray(cfg) == head.address
        # A driver with what join_project_ray set joins this head: a task runs there, on its node.
        code = (
            "import ray\nray.init(log_to_driver=False)\n"
            "print(ray.get(ray.remote(lambda: ray.get_runtime_context().gcs_address).remote()))"
        )
        env = {**_env(), **{k: os.environ[k] for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True
        )
        assert run.stdout.strip().splitlines()[-1] == head.address
    finally:
        stopped = stop_head(tmp_path)
    assert stopped and recorded_head(tmp_path) is None
    assert not (tmp_path / RECORD).exists()
    assert stop_head(tmp_path) is False

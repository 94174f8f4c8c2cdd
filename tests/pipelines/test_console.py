"""What a stage command prints: its progress bar and summary, and one line saying where Ray's logs are;
Ray's log lines and warnings only with --verbose."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipelines.runtime import DRIVER_LOG, VERBOSE_ENV

REPO = Path(__file__).resolve().parents[2]
# Ray's and Ray Data's log format: "2026-01-02 03:04:05,678<TAB>INFO worker.py:2038 -- ..."
RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING)\s", re.MULTILINE)
PYTHON_WARNING = re.compile(r"\b\w*Warning: ")
LOGS_LINE = re.compile(r"^ray: logs in (\S+) \(--verbose prints them here\)$", re.MULTILINE)


@pytest.fixture
def ray_tmp():
    folder = tempfile.mkdtemp(prefix="rf-ray-")  # short: Ray's socket paths must stay under ~100 chars
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _split(footage: Path, root: Path, ray_tmp: str, *options: str) -> subprocess.CompletedProcess:
    """`reelforge split` of one sample file into a new store, in its own process and local Ray."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pipelines.cli", "split", *options, "--root", str(root)),
            *("--set", "ray.num_cpus=1", "--set", f"ray.temp_dir={ray_tmp}", str(footage / "cuts.mp4")),
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != VERBOSE_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "split: 1 files (0 already done), 1 ok" in run.stdout
    return run


@pytest.mark.slow
def test_ray_logs_and_warnings_reach_the_console_only_with_verbose(sample_footage, tmp_path, ray_tmp):
    quiet = _split(sample_footage, tmp_path / "quiet", ray_tmp)
    console = quiet.stdout + quiet.stderr
    assert RAY_LOG_LINE.findall(console) == [] and PYTHON_WARNING.findall(console) == [], console
    assert "split: 100%" in quiet.stderr  # the stage's own progress bar
    # one line says where Ray's records went, and they are there
    (logs,) = LOGS_LINE.findall(quiet.stderr)
    assert "Started a local Ray instance" in (Path(logs) / DRIVER_LOG).read_text()
    assert "Starting execution of Dataset" in (Path(logs) / "ray-data" / "ray-data.log").read_text()

    verbose = _split(sample_footage, tmp_path / "verbose", ray_tmp, "--verbose")
    console = verbose.stdout + verbose.stderr
    assert "Started a local Ray instance" in console and "Starting execution of Dataset" in console
    assert RAY_LOG_LINE.findall(console) and LOGS_LINE.findall(console) == []

"""Fault injection for the reliability tests: kill Ray workers of this process, kill CLI jobs mid-run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lance
import psutil

REPO = Path(__file__).resolve().parents[2]


def worker_title(proc: psutil.Process) -> str:
    """A Ray worker's process title ("ray::Map(task)", "ray::IDLE", ...), '' for other processes."""
    with contextlib.suppress(psutil.Error, IndexError):
        first = proc.cmdline()[0]
        if first.startswith("ray::"):
            return first
    return ""


def ray_workers(root: psutil.Process, prefixes: Sequence[str]) -> list[psutil.Process]:
    """Descendants of `root` (its own Ray's raylet and workers) whose title starts with a prefix."""
    found = []
    with contextlib.suppress(psutil.Error):
        for proc in root.children(recursive=True):
            title = worker_title(proc)
            if title and any(title.startswith(p) for p in prefixes):
                found.append(proc)
    return found


class WorkerKiller(threading.Thread):
    """SIGKILLs up to `kills` Ray workers of this process while they run one of the given tasks.

    A worker is killed once it has been busy with the task for `busy_s` (so the kill lands in the
    middle of the task, not as it starts); between kills it waits for the next busy worker.
    """

    def __init__(self, prefixes: Sequence[str], kills: int = 1, busy_s: float = 0.3, poll_s: float = 0.05):
        super().__init__(daemon=True)
        self.prefixes = tuple(prefixes)
        self.kills = kills
        self.busy_s = busy_s
        self.poll_s = poll_s
        self.killed: list[tuple[int, str]] = []
        self._halt = threading.Event()
        self._root = psutil.Process(os.getpid())

    def run(self) -> None:
        first_seen: dict[int, float] = {}
        while not self._halt.is_set() and len(self.killed) < self.kills:
            now = time.monotonic()
            for proc in ray_workers(self._root, self.prefixes):
                seen = first_seen.setdefault(proc.pid, now)
                if now - seen >= self.busy_s and proc.pid not in {p for p, _ in self.killed}:
                    title = worker_title(proc)
                    with contextlib.suppress(psutil.Error):
                        proc.send_signal(signal.SIGKILL)
                        self.killed.append((proc.pid, title))
                    first_seen.clear()
                    break
            self._halt.wait(self.poll_s)

    def stop(self) -> list[tuple[int, str]]:
        self._halt.set()
        self.join(timeout=10)
        return self.killed


# What `reelforge caption` runs, for as long as the caption subcommand is not wired in pipelines/cli/.
CAPTION_DRIVER = """
import sys
from pipelines.config import load_config
from pipelines.jobs.caption import run_caption
cfg = load_config("demo", sys.argv[1:])
print("\\n".join(run_caption(cfg, progress=False).lines()))
"""


def cli_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def caption_command(overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-c", CAPTION_DRIVER, *overrides]


def start_job(command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A job as a subprocess in its own process group (so the Ray it starts can be reaped)."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            list(command),
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def run_job(
    command: Sequence[str], log: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> int:
    proc = start_job(command, log, env)
    try:
        return proc.wait(timeout=timeout)
    finally:
        reap(proc)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL `proc` (the driver only) as soon as `ready()` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    raise TimeoutError(f"condition not reached within {timeout} s")


def reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a job's process group (the Ray it started); it was ours to start."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def committed_versions(uri: str | Path) -> int:
    """Committed versions of a Lance dataset, read from its manifest folder (0 before the first)."""
    folder = Path(uri) / "_versions"
    return sum(1 for p in folder.iterdir() if p.suffix == ".manifest") if folder.is_dir() else 0


def open_every_version(uri: str | Path) -> dict[int, int]:
    """{version: row count} for every version of a dataset: each must open and scan."""
    ds = lance.dataset(str(uri))
    return {v["version"]: lance.dataset(str(uri), version=v["version"]).count_rows() for v in ds.versions()}

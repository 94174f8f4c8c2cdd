"""A local Ray kept running for one project folder (`reelforge ray start|stop|status`), so that each
stage command on that folder joins it in about a second instead of starting its own Ray (~5-10 s).

The head is a detached process (`python -m pipelines.ray_head ROOT ...`) that starts Ray with
`ray.init`, writes its address to ROOT/_ray/head.json and holds Ray until it is sent SIGTERM; then it
shuts Ray down and removes the record. Ray (2.60) requires a token of every driver that joins a Ray
started by `ray.init`; the head gets its own random token (not the user-wide ~/.ray/auth_token that
other Rays on the machine share), kept in the record, which only the user can read. Stage commands join only a head recorded this way in their own
project folder (or an address the user gives: `ray.address`, $RAY_ADDRESS), never a Ray that merely
happens to run on the machine. `stop` signals the recorded process only: `ray stop` would stop every
Ray of the user on this machine.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD = Path("_ray") / "head.json"
MODULE = "pipelines.ray_head"
# A fresh Ray on 2 shared cores took 5-10 s to start; beyond this something is wrong.
START_TIMEOUT_S = 120.0


class RayHeadError(RuntimeError):
    """The head cannot be started or stopped (one line, for the CLI)."""


@dataclass(frozen=True)
class RayHead:
    """The project's recorded Ray head: its address, process and log folder."""

    address: str  # the GCS address: ray.init(address=...)
    pid: int
    logs: str
    token: str

    def environment(self) -> dict[str, str]:
        """What a driver needs in its environment to join this head."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def alive(self) -> bool:
        """The recorded process is still our head and its GCS port accepts a connection."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if MODULE.encode() not in cmdline:  # the pid was reused by another program
            return False
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return True
        except (OSError, ValueError):
            return False


def record_path(root: str | Path) -> Path:
    """The file recording the project's Ray head."""
    return Path(root) / RECORD


def recorded_head(root: str | Path) -> RayHead | None:
    """The live head recorded for the project folder `root`, or None (no record, or a stale one)."""
    try:
        data = json.loads(record_path(root).read_text())
        head = RayHead(str(data["address"]), int(data["pid"]), str(data["logs"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return head if head.alive() else None


def start_head(root: str | Path, num_cpus: int = 0, temp_dir: str = "") -> RayHead:
    """Start the head for `root` and wait until it has recorded its address (a running one is kept)."""
    running = recorded_head(root)
    if running is not None:
        return running
    record = record_path(root)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)  # a stale record of a head that is gone
    log = record.parent / "head.log"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(root), str(num_cpus), temp_dir],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and its terminal's Ctrl-C
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        head = recorded_head(root)
        if head is not None:
            return head
        if process.poll() is not None:
            raise RayHeadError(f"the Ray head exited with code {process.returncode}: see {log}")
        time.sleep(0.1)
    process.terminate()
    raise RayHeadError(f"the Ray head did not start within {START_TIMEOUT_S:.0f} s: see {log}")


def stop_head(root: str | Path, timeout_s: float = 60.0) -> bool:
    """Stop the head recorded for `root`; False when none was running."""
    head = recorded_head(root)
    if head is None:
        record_path(root).unlink(missing_ok=True)
        return False
    os.kill(head.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _running(head.pid):
        time.sleep(0.1)
    if _running(head.pid):
        raise RayHeadError(f"the Ray head (pid {head.pid}) did not stop within {timeout_s:.0f} s")
    return True


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waits for its parent to collect it: one that
    started the head and lives on, such as a test)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _serve(root: Path, num_cpus: int, temp_dir: str) -> None:
    import ray

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # "local": a new Ray; without an address ray.init joins any Ray already running on the machine.
    ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False, _temp_dir=temp_dir or None)
    node: Any = ray._private.worker._global_node  # a private attribute: Ray has no public call for it
    record = record_path(root)
    partial = record.with_suffix(".tmp")
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump(
            {
                "address": ray.get_runtime_context().gcs_address,
                "pid": os.getpid(),
                "logs": node.get_logs_dir_path(),
                "token": os.environ["RAY_AUTH_TOKEN"],
            },
            out,
        )
    partial.replace(record)  # readers never see half a record
    try:
        while not stop:
            time.sleep(0.2)
    finally:
        record.unlink(missing_ok=True)
        ray.shutdown()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")

"""The store's lock: every stage job holds `job_lock` (shared: jobs run side by side) for its whole run,
readers included, since vacuum deletes files an older version reads. Maintenance takes
`maintenance_lock` (exclusive, never waits) and refuses at once while a job holds the store.

How: `fcntl.flock` on one file in the store root: the kernel releases it when its holder exits or is killed,
so a crashed job never leaves the store locked. Holders also leave a small JSON record beside it (name,
pid, host) so that a refusal can say who holds the store; records of dead processes are ignored.
On NFS, Linux emulates flock with POSIX byte-range locks, which the server arbitrates between clients
(NFSv4, or v3 with lockd); mounts with `local_lock=flock` and some cluster filesystems (CephFS or Lustre
without flock support) keep the lock per node, and then it only guards jobs on the same node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from store.errors import StoreError

LOCK_DIR: Final = "_locks"  # in the store root: the lock file and one record per holder
_LOCK_FILE: Final = "store.lock"


@dataclass(frozen=True)
class LockHolder:
    """A process that holds the store, as the record it left beside the lock file says."""

    kind: str  # "job" | "maintenance"
    name: str
    pid: int
    host: str

    def alive(self) -> bool:
        """Is the holder's process still running? (Always True for another host's.)"""
        if self.host != socket.gethostname():
            return True  # a process on another node cannot be checked from here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
        return True

    def __str__(self) -> str:
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"{self.name}, pid {self.pid}{host}"


class StoreBusy(StoreError):
    """The exclusive lock is taken; `holders` are the live processes that hold the store."""

    def __init__(self, message: str, holders: list[LockHolder]):
        super().__init__(message)
        self.holders = holders


def _open_lock(root: Path) -> int:
    if not root.is_dir():
        raise StoreError(f"no store at {root}: run `reelforge split` first")
    path = root / LOCK_DIR / _LOCK_FILE
    try:
        path.parent.mkdir(exist_ok=True)
        # O_CLOEXEC: a subprocess (the caption command re-run in the vLLM environment) must not inherit
        # the lock, or it would outlive this process
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        pass
    try:  # a store this user may only read: flock needs no write access
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise StoreError(f"cannot lock the store {root}: {err.strerror}") from None


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _register(root: Path, kind: str, name: str) -> Path | None:
    host, pid = socket.gethostname(), os.getpid()
    path = root / LOCK_DIR / f"{kind}.{host}.{pid}.{uuid.uuid4().hex[:8]}.json"
    try:
        path.write_text(json.dumps({"kind": kind, "name": name, "pid": pid, "host": host}))
    except OSError:  # a read-only store: the lock still holds, messages just cannot name this holder
        return None
    return path


def _records(root: Path) -> Iterator[tuple[Path, LockHolder | None]]:
    for path in sorted((root / LOCK_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            yield path, LockHolder(str(data["kind"]), str(data["name"]), int(data["pid"]), str(data["host"]))
        except (OSError, ValueError, KeyError, TypeError):
            yield path, None  # being written or removed right now, or not ours


def _holders(root: Path, kind: str | None = None) -> list[LockHolder]:
    return [h for _, h in _records(root) if h is not None and h.alive() and kind in (None, h.kind)]


def _named(holders: list[LockHolder]) -> str:
    return "; ".join(map(str, holders)) or "holder unknown"


@contextlib.contextmanager
def job_lock(root: str | Path, name: str) -> Iterator[None]:
    """Held by every stage job for its whole run (shared: several jobs may hold it at once).

    While maintenance holds the store, the job waits for it to finish, saying so on stderr."""
    root = Path(root)
    fd = _open_lock(root)
    try:
        if not _try_flock(fd, fcntl.LOCK_SH):
            holders = _named(_holders(root, "maintenance"))
            print(f"{name}: waiting for store maintenance ({holders}) on {root} to finish", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_SH)
        record = _register(root, "job", name)
        try:
            yield
        finally:
            if record is not None:  # before the lock goes: a record without a holder is never left
                record.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def maintenance_lock(root: str | Path, name: str = "maintenance") -> Iterator[None]:
    """Exclusive hold of the store for maintenance; raises StoreError at once if anyone holds it."""
    root = Path(root)
    fd = _open_lock(root)
    try:
        if not _try_flock(fd, fcntl.LOCK_EX):
            jobs, others = _holders(root, "job"), _holders(root, "maintenance")
            if others and not jobs:
                message = f"{root} is being maintained ({_named(others)}): run {name} when it has finished"
            else:
                message = f"{root} is in use by a running job ({_named(jobs)}): run maintenance when it has finished"
            raise StoreBusy(message, jobs or others)
        for path, _ in _records(root):  # nobody else holds the lock: these are left by killed processes
            path.unlink(missing_ok=True)
        record = _register(root, "maintenance", name)
        try:
            yield
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
    finally:
        os.close(fd)

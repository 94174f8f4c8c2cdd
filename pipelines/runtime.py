"""Connecting to Ray: a cluster when one is named, otherwise a local instance; and what of Ray's
output reaches the console."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a prestarted worker imports this module: it must stay light (see prestart_worker)
    import pyarrow as pa

    from pipelines.config import PipelineConfig, RayConfig

# Set by `reelforge --verbose` (and inherited by the commands it starts, e.g. the caption command re-run
# in the vLLM environment): Ray's log lines, warnings and its own progress output on the console.
VERBOSE_ENV = "REELFORGE_VERBOSE"
DRIVER_LOG = "reelforge-driver.log"


def verbose() -> bool:
    """Should Ray's logs and progress output be shown (REELFORGE_VERBOSE)?"""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class WorkerPrestart:
    """A worker to make ready as soon as Ray is up: what the job's tasks import, and the CPUs one task
    needs (the prestart task then runs only where such a task can, not on a head node without CPUs)."""

    modules: tuple[str, ...]
    num_cpus: float


def init_ray(cfg: RayConfig, prestart: WorkerPrestart | None = None) -> Any:
    """Join `ray.address` or $RAY_ADDRESS when set (the CLI sets it to the project's own Ray, see
    `join_project_ray`), else start a local Ray; reuse one already running in this process.

    Without --verbose, Ray's log lines go to its session's log files only (one line says where) and
    its workers' output stays in their log files; the stages print their own progress bars and
    summaries. Ray Data's settings for this driver are applied every time (also to a Ray started
    elsewhere).

    With `prestart`, a worker imports the job's modules (see `prestart_worker`) while this driver
    imports Ray Data and prepares its job. Returns that worker's task (an ObjectRef to
    wait on before handing out work), or None without `prestart`.
    """
    import ray

    ray_data_logs = False
    if not ray.is_initialized():
        ignore_lance_fork_warning()
        driver_log = None if verbose() else _ray_logs_to_files()
        _connect(cfg)
        if driver_log is not None:
            # The session's folder exists only now. A private attribute: Ray has no public call for it.
            node: Any = ray._private.worker._global_node
            logs = Path(node.get_logs_dir_path())
            driver_log.open(logs / DRIVER_LOG)
            print(f"ray: logs in {logs} (--verbose prints them here)", file=sys.stderr, flush=True)
        ray_data_logs = driver_log is not None
    prestarted = prestart_worker(prestart) if prestart is not None else None
    if ray_data_logs:
        _ray_data_logs_to_files()
    _configure_data_context(cfg)
    return prestarted


def _connect(cfg: RayConfig) -> None:
    import ray

    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=verbose())
    else:
        ray.init(
            # A new Ray of our own: without an address, ray.init joins whatever Ray already runs on the
            # machine (another user's, another project's), which no one asked for.
            address="local",
            num_cpus=cfg.num_cpus or None,
            include_dashboard=False,
            _temp_dir=cfg.temp_dir or None,
            log_to_driver=verbose(),
        )


def prestart_worker(prestart: WorkerPrestart) -> Any:
    """Have a worker of this job import Ray Data (its tasks' code) and the job's modules now, while the
    driver prepares the job, instead of when it unpickles the job's first task (~1 s on 2 shared cores).
    Ray starts a new job's workers when its driver connects (as many as the node has CPUs), but they
    import only Ray itself, and idle workers of other jobs are never reused. This is a task: once it
    returns, its worker is idle in this job's pool, where Ray hands it the job's next task; the
    ObjectRef returned resolves then (an import error there is left to the job's own tasks to report).
    """
    import ray

    task = ray.remote(_import_modules).options(num_cpus=prestart.num_cpus)
    return task.remote(("ray.data", *prestart.modules))


def _import_modules(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def join_project_ray(cfg: PipelineConfig) -> str | None:
    """Point this command (and the commands it starts) at the Ray that `reelforge ray start` keeps
    running for the project folder, unless `ray.address` or $RAY_ADDRESS already names one; the
    address joined, or None (no such Ray: a job starts its own). Reads a small file only: no Ray is
    started or imported here."""
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return None
    from pipelines.ray_head import recorded_head

    head = recorded_head(cfg.store.root)
    if head is None:
        return None
    os.environ.update(head.environment())
    return head.address


def ignore_lance_fork_warning() -> None:
    """Lance warns whenever a process that imported it forks. Ray's start-up forks (its node processes
    are started with a pre-exec hook), before any Lance work and into processes that exec at once and
    never touch Lance's state, so for a driver starting Ray the warning is only noise."""
    warnings.filterwarnings("ignore", message="lance is not fork-safe")


class _DriverLogFile(logging.Handler):
    """Ray's driver-side log records into a file of its session: held in memory until the session's log
    folder is known (ray.init logs before it creates the folder), then written there."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._pending: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._pending.append(record)
        else:
            self._file.emit(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()

    def open(self, path: Path) -> None:
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(
            logging.Formatter("%(asctime)s\t%(levelname)s %(name)s %(filename)s:%(lineno)s -- %(message)s")
        )
        for record in self._pending:
            self._file.emit(record)
        self._pending.clear()


def _ray_logs_to_files() -> _DriverLogFile:
    """Ray core's console handler passes errors only; its driver records go to `reelforge-driver.log`."""
    _console_errors_only("ray")
    ray_logger = logging.getLogger("ray")
    for stale in [h for h in ray_logger.handlers if isinstance(h, _DriverLogFile)]:  # an earlier Ray's
        ray_logger.removeHandler(stale)
        stale.close()
    driver_log = _DriverLogFile()
    ray_logger.addHandler(driver_log)
    return driver_log


def _ray_data_logs_to_files() -> None:
    """Ray Data's console handler passes errors only: it already writes everything to `ray-data.log` in
    the session's logs. Imported after Ray is up (a prestarted worker starts meanwhile); Ray Data logs
    nothing before its first dataset."""
    import ray.data  # noqa: F401  # configures the `ray.data` logger (console + session file) on import

    _console_errors_only("ray.data")


def _console_errors_only(logger: str) -> None:
    for handler in logging.getLogger(logger).handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


def _configure_data_context(cfg: RayConfig) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # One line of progress per job instead of one per operator: our jobs print their own summary.
    ctx.enable_operator_progress_bars = False
    # Each stage shows its own progress bar; Ray's (log lines every few seconds when stdout is not a
    # terminal) only with --verbose. Each dataset's execution plan is logged either way: without
    # --verbose it lands in ray-data.log only.
    ctx.enable_progress_bars = verbose()
    ctx.op_resource_reservation_enabled = cfg.reserve_operator_resources


def task_pool(size: int, blocks: int) -> Any:
    """Ray Data's compute strategy for a map over `blocks` input blocks with at most `size` tasks at a
    time (0: as many as the resources allow). Never more tasks than blocks: each task takes a block, so
    the others could not run anyway, and Ray warns about every such pool."""
    import ray

    return ray.data.TaskPoolStrategy(size=min(size, max(blocks, 1)) if size else None)


def actor_pool(size: int, blocks: int) -> Any:
    """A fixed pool of `size` actors for a map over `blocks` input blocks, capped at `blocks` like
    `task_pool` (an idle actor still loads its model and holds its CPUs)."""
    import ray

    return ray.data.ActorPoolStrategy(size=min(size, max(blocks, 1)))


def blocks_of(rows: int, block_rows: int) -> int:
    """How many blocks `work_dataset` makes of `rows` rows."""
    return max(1, -(-rows // block_rows))


def work_dataset(rows: pa.Table, block_rows: int) -> Any:
    """A Ray dataset of a stage's work list (`_rowid`, clip_id, ...), one block per `block_rows` rows.

    The blocks are Arrow slices of the work list made here, on the driver (no per-row Python objects),
    so the first map spreads over the workers at once: a `repartition` of one block is an all-to-all
    step whose split tasks each want a CPU, and they never get one while model actors hold the cores.
    `from_blocks` builds the dataset locally; `from_arrow` ran a remote metadata task per block, which
    waited ~1.7 s for a worker process on a fresh cluster.
    """
    import ray

    rows = rows.combine_chunks()
    blocks = [rows.slice(i, block_rows) for i in range(0, rows.num_rows, block_rows)] or [rows]
    return ray.data.from_blocks(blocks)

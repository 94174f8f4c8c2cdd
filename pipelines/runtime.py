"""Connecting to Ray: a cluster when one is named, otherwise a local instance."""

from __future__ import annotations

import os
import warnings
from typing import Any

import pyarrow as pa

from pipelines.config import RayConfig


def init_ray(cfg: RayConfig) -> None:
    """Join `ray.address` or $RAY_ADDRESS when set, else start a local Ray; reuse one already running.

    Ray Data's settings for this driver are applied every time (also to a Ray started elsewhere).
    """
    import ray

    if ray.is_initialized():
        _configure_data_context(cfg)
        return
    # Lance warns when a process forks after importing it; Ray's start-up forks before any Lance work,
    # which is harmless (checked on these machines), so the warning is only noise here.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(
            num_cpus=cfg.num_cpus or None,
            include_dashboard=False,
            _temp_dir=cfg.temp_dir or None,
            log_to_driver=True,
        )
    _configure_data_context(cfg)


def _configure_data_context(cfg: RayConfig) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # One line of progress per job instead of one per operator: our jobs print their own summary.
    ctx.enable_operator_progress_bars = False
    ctx.op_resource_reservation_enabled = cfg.reserve_operator_resources


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

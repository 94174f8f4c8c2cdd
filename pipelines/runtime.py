"""Connecting to Ray: a cluster when one is named, otherwise a local instance."""

from __future__ import annotations

import os
import warnings

from pipelines.config import RayConfig


def init_ray(cfg: RayConfig) -> None:
    """Join `ray.address` or $RAY_ADDRESS when set, else start a local Ray; reuse one already running."""
    import ray

    if ray.is_initialized():
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
    _quiet_data_context()


def _quiet_data_context() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # One line of progress per job instead of one per operator: our jobs print their own summary.
    ctx.enable_operator_progress_bars = False

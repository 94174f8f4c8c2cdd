"""What a stage command does around its job: check the inputs and the preflight before any work, hold
the store's job lock while the job runs, compact the store afterwards, and turn failed items into the
exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cli.options import UsageError
from pipelines.config import PipelineConfig

if TYPE_CHECKING:  # the store's modules import Lance: inside the functions, not on `--help`
    from store import Store


def store_of(cfg: PipelineConfig) -> Store:
    """The store of the config's project folder."""
    from store import Store

    return Store(cfg.store.root)


def input_files(cfg: PipelineConfig, args: argparse.Namespace) -> list[str]:
    """The command's INPUT arguments (default: input.paths of the config) as files; a missing one is refused."""
    from pipelines.jobs.split import InputError, resolve_inputs

    try:
        return resolve_inputs(list(args.inputs) or list(cfg.input.paths), cfg.input)
    except InputError as err:
        raise UsageError(str(err)) from None


def dump_json(data: object, path: Path) -> None:
    """Write `data` as indented JSON to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def preflight(
    command: str, cfg: PipelineConfig, filter_expression: str | None = None, *, train_workers: int = 1
) -> None:
    """Refuse the command in one line (UsageError) when the store or config cannot serve it."""
    from pipelines.preflight import PreflightError, check

    try:
        check(command, cfg, filter_expression, train_workers=train_workers)
    except PreflightError as err:
        raise UsageError(str(err)) from None


@contextmanager
def job(cfg: PipelineConfig, name: str, *, creates: bool = False) -> Iterator[Store]:
    """Hold the store's job lock while a stage runs, so that maintenance never rewrites or deletes files
    under it. The store is checked first (another schema version; no clips table unless the stage
    creates the store), so a refused run leaves the folder as it was."""
    from store import CLIPS, VIDEOS
    from store.locks import job_lock

    store = store_of(cfg)
    for table in (CLIPS, VIDEOS):
        store.dataset(table)
    if creates:
        store.root.mkdir(parents=True, exist_ok=True)
    else:
        store.require(CLIPS)
    with job_lock(store.root, name):
        yield store


def compact_after(cfg: PipelineConfig) -> None:
    """A stage that wrote the store compacts it once it has more small fragments than the configured
    bound. Called after the job lock is released: compaction needs the store to itself, and is skipped
    with a note while another job holds it."""
    from store.maintenance import maybe_compact

    summary = maybe_compact(store_of(cfg), cfg.store)
    if summary is not None:
        print("\n".join(summary.lines()))


def outcome(command: str, attempted: int, failed: int, args: argparse.Namespace, unit: str) -> int:
    """The exit code of a stage run whose items may have failed (pipelines/outcome.py)."""
    from pipelines.outcome import exit_code, failure_line

    strict = getattr(args, "strict", False)  # the demo runs the handlers without the option
    code = exit_code(attempted, failed, strict=strict)
    if code:
        print(failure_line(command, attempted, failed, strict=strict, unit=unit), file=sys.stderr)
    return code

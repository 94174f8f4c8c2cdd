"""The `reelforge` command: one subcommand per stage, each a thin call into pipelines/jobs.

- `command`: the parser and `main`, which turns each refusal into one line and an exit code.
- `options`: what every subcommand shares: its options, the epilog, the exit codes, UsageError.
- `stage_run`: what a stage command does around its job: the preflight check, the store's job lock,
  compaction afterwards, and the exit code when some items failed.
- one module per group of subcommands, each with their parsers and handlers: `curation` (probe,
  split, score, filter, caption), `training` (encode, train-vae, train, sample), `inspection` (report,
  plan, status), `eval_export` (eval, export), `store_maintenance` (store), `project_ray` (ray) and
  `demo` (sample-footage, demo).
"""

from pipelines.cli.command import main

__all__ = ["main"]

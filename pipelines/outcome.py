"""How a stage's per-item failures turn into its summary and its exit code.

A stage keeps going when single items fail (an unreadable clip, a rejected request) and records why in
the store. Its exit code says whether the run did what was asked: 0 when every item, or at least some,
succeeded; 1 when every item it attempted failed, or, with `--strict`, when any did. The summary counts
the failures grouped by reason, never calling a failure done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pyarrow as pa

# Longer reasons are cut: the summary groups by reason, and a reason quoting a whole server answer
# would make every failure its own group.
REASON_CHARS = 100


def reason_counts(errors: Iterable[str | None]) -> Counter[str]:
    """Failures grouped by reason (the error text, cut at REASON_CHARS); None is a success."""
    return Counter(e[:REASON_CHARS] for e in errors if e is not None)


def errors_of(table: pa.Table, column: str) -> Counter[str]:
    """`reason_counts` of an error column of a finished batch."""
    return reason_counts(table.column(column).to_pylist())


def exit_code(attempted: int, failed: int, *, strict: bool) -> int:
    """1 when every attempted item failed, or any did under --strict; else 0."""
    if failed and (failed >= attempted or strict):
        return 1
    return 0


def failure_line(command: str, attempted: int, failed: int, *, strict: bool, unit: str) -> str:
    """The stderr line of a stage that exits non-zero because items failed."""
    if failed >= attempted:
        return f"reelforge {command}: all {attempted} {unit} failed (the reasons are above)"
    return f"reelforge {command}: {failed} of {attempted} {unit} failed and --strict is set"

"""Process trees of the launchers tests start (torchrun, the reelforge CLI with its local Ray), to kill a
run the way a crash or an operator would: every process at once, none left to finish the job."""

from __future__ import annotations

from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, read from /proc. Killing a process group is not enough: torchrun starts
    each rank in a session of its own, and Ray its node processes."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we read
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree

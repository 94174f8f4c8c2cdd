"""What a Ray cluster offers, node by node: read from a YAML spec file or from the connected cluster.

The spec file describes the machines a pipeline will run on before they exist (`reelforge plan
--cluster SPEC.yaml`):

    nodes:
      - {count: 4, cpus: 64, gpus: 8, memory_gb: 512}
    shared_paths: [/mnt/shared]     # folders every node mounts (a store.root must be under one)

Unknown keys and bad values are one-line errors naming the key.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.config import ConfigError


class ClusterSpecError(ConfigError):
    """A cluster spec file that cannot be used (one line naming the key)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeGroup(_Frozen):
    """`count` identical nodes."""

    count: int = Field(default=1, ge=1)
    cpus: float = Field(gt=0)
    gpus: float = Field(default=0, ge=0)
    memory_gb: float = Field(gt=0)


class ClusterSpec(_Frozen):
    """The nodes of a Ray cluster and the folders they share."""

    nodes: tuple[NodeGroup, ...] = Field(min_length=1)
    # Absolute folders every node mounts at the same path (a shared filesystem). On more than one node,
    # store.root must lie under one of them: a path on one machine's disk is another folder elsewhere.
    shared_paths: tuple[str, ...] = ()
    # Where the spec came from, for messages ("spec.yaml", "the connected Ray cluster").
    source: str = Field(default="", exclude=True)

    @property
    def node_count(self) -> int:
        """Nodes in the cluster."""
        return sum(g.count for g in self.nodes)

    def expanded(self) -> list[NodeGroup]:
        """One entry per node."""
        return [g for g in self.nodes for _ in range(g.count)]

    def describe(self) -> str:
        """The spec in one line: its source and node groups."""
        groups = ", ".join(
            f"{g.count} x ({g.cpus:g} CPU, {g.gpus:g} GPU, {g.memory_gb:g} GB)" for g in self.nodes
        )
        return f"{self.source}: {self.node_count} node(s): {groups}"


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a spec file; every problem is one line naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ClusterSpecError(f"cluster spec not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ClusterSpecError(f"cluster spec {path} is not YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ClusterSpecError(f"cluster spec {path}: the top level must be a mapping with `nodes:`")
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        # A misspelt key also makes the key it stands for missing: name the misspelling.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise ClusterSpecError(f"cluster spec {path}: {_describe(first)}") from None
    relative = [p for p in spec.shared_paths if not Path(p).is_absolute()]
    if relative:
        raise ClusterSpecError(
            f"cluster spec {path}: shared_paths must be absolute folders, got {relative[0]!r}"
        )
    return spec.model_copy(update={"source": str(path)})


def _describe(error: Any) -> str:
    dotted = ""
    for part in error["loc"]:  # nodes.0.cpus -> nodes[0].cpus: the entry of the list the user wrote
        dotted += f"[{part}]" if isinstance(part, int) else f"{'.' if dotted else ''}{part}"
    if error["type"] == "extra_forbidden":
        in_nodes = error["loc"][0] == "nodes"
        allowed = sorted(NodeGroup.model_fields) if in_nodes else ["nodes", "shared_paths"]
        where = "a nodes entry" if in_nodes else "the spec"
        return f"unknown key '{dotted}'; allowed keys in {where}: {', '.join(allowed)}"
    if error["type"] == "missing":
        return f"{dotted}: missing (required)"
    return f"{dotted}: {error['msg']} (got {error.get('input')!r})"


def live_cluster_spec() -> ClusterSpec:
    """The alive nodes of the Ray cluster this process is connected to, grouped by shape."""
    import ray

    shapes: Counter[tuple[float, float, float]] = Counter()
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        shapes[(res.get("CPU", 0.0), res.get("GPU", 0.0), round(res.get("memory", 0.0) / 2**30, 1))] += 1
    groups = tuple(
        NodeGroup(count=n, cpus=cpus, gpus=gpus, memory_gb=max(mem, 0.1))
        for (cpus, gpus, mem), n in sorted(shapes.items())
        if cpus > 0
    )
    if not groups:
        raise ClusterSpecError("the connected Ray cluster has no alive node with CPUs")
    return ClusterSpec(nodes=groups, source="the connected Ray cluster")


def unreached_root(root: Path) -> str:
    """Which nodes of the connected cluster do not see `root` (an absolute path): a marker file written
    beside it here must exist on every node ('' when it does everywhere)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    existing = next(p for p in (root, *root.parents) if p.exists())
    marker = existing / f".reelforge-reach-{secrets.token_hex(6)}"
    try:
        marker.touch()
    except OSError:
        marker = existing  # not writable here: the folder itself must exist everywhere

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    pinned = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes]
    try:
        seen = ray.get([sees.options(scheduling_strategy=s).remote(str(marker)) for s in pinned], timeout=120)
    finally:
        if marker != existing:
            marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        return f"store.root {root} is not on storage every node reaches (node(s) {', '.join(blind)} do not see it)"
    return ""

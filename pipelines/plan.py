"""`reelforge plan`: every stage's Ray resources resolved against a cluster before any job starts.

A stage is a chain of tasks and actor pools, some tasks fused into the actor after them
(pipelines/stage_operators.py). Actors hold their resources for the whole job; a fused task runs
inside its actor and needs no slot of its own. So a stage can run only when
  - every actor (or vLLM replica with its tensor-parallel bundles) fits on some node, alone;
  - all of a stage's actors fit on the cluster at once (Ray Data starts every pool's actors up
    front, and a pending actor takes the CPU a finished task frees);
  - after them, a slot is left for one task of every unfused task operator: otherwise the actors
    wait forever for input nobody decodes (the hang seen on 2 cores with whole-CPU actors);
  - on more than one node, `store.root` is an absolute path every node reaches.
The placement is a best fit (largest GPU and CPU requests first), the most favourable packing, so a
refusal means no placement can work. `check_job` runs the same check against the connected cluster
when a job starts (`start_job`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.cluster_spec import ClusterSpec, NodeGroup, live_cluster_spec, unreached_root
from pipelines.config import ConfigError, PipelineConfig
from pipelines.stage_operators import STAGES, Operator, stage_operators

if TYPE_CHECKING:
    from pipelines.runtime import WorkerPrestart

# How long a job waits for its actor pools to start (model loading; a vLLM engine on GPUs takes
# minutes) before it fails with Ray Data's "Timed out while starting actors" instead of hanging.
ACTOR_START_TIMEOUT_S = 1800


class PlanError(ConfigError):
    """A stage that can never be scheduled on the cluster (one line with the reason and the fix)."""


@dataclass
class StagePlan:
    """A stage's operators and how they resolve on the cluster, or why they cannot."""

    stage: str
    operators: list[Operator]
    problems: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)  # operator name -> where / how many at once
    notes: list[str] = field(default_factory=list)


@dataclass
class _Node:
    index: int
    cpus: float
    gpus: float
    memory_gb: float


def resolve_stage(config: PipelineConfig, stage: str, spec: ClusterSpec) -> StagePlan:
    """Place the stage's actors on the spec's nodes and find how many of its tasks fit beside them."""
    nodes = [_Node(i + 1, g.cpus, g.gpus, g.memory_gb) for i, g in enumerate(spec.expanded())]
    operators = stage_operators(config, stage, sum(n.gpus for n in nodes))
    plan = StagePlan(stage, operators, notes=_notes(config, stage))
    largest = _largest(spec)
    plan.problems += _device_problems(config, stage, largest)
    actors = [op for op in plan.operators if op.kind == "actor"]
    for op in sorted(actors, key=lambda o: (o.gpus * o.bundles, o.cpus * o.bundles), reverse=True):
        need = NodeGroup(
            count=1, cpus=op.cpus * op.bundles, gpus=op.gpus * op.bundles, memory_gb=max(op.memory_gb, 1e-9)
        )
        short = _short_of(need, largest)
        if short:
            what = f"one {op.name} ({op.setting})" + (
                f", {op.bundles} bundles on one node," if op.bundles > 1 else ""
            )
            plan.problems.append(f"{what} needs {short}: lower its request")
            continue
        placed: list[int] = []
        for _ in range(op.count):
            node = _best_fit(nodes, need)
            if node is None:
                break
            node.cpus -= need.cpus
            node.gpus -= need.gpus
            node.memory_gb -= op.memory_gb
            placed.append(node.index)
        plan.resolved[op.name] = _placement(placed, len(nodes))
        if len(placed) < op.count:
            plan.problems.append(
                f"{op.count} x {op.name} ({op.setting}: {_shape(need)} each) do not fit at once beside the "
                f"stage's other actors (only {len(placed)} do): lower {op.setting} concurrency/replicas or "
                "their requests"
            )
    for op in plan.operators:
        if op.kind != "task":
            continue
        if op.fused_into:
            plan.resolved[op.name] = f"inside each {op.fused_into} actor (fused)"
            continue
        fits = sum(int((n.cpus + 1e-9) // op.cpus) for n in nodes if n.gpus + 1e-9 >= op.gpus)
        if fits == 0:
            holders = ", ".join(f"{a.count} x {a.name} ({a.cpus * a.bundles:g} CPU)" for a in actors)
            plan.problems.append(
                f"the actors ({holders}) leave no {op.cpus:g} CPU for a {op.name} task ({op.setting}), so "
                "they would wait forever for its output: give the actors fractional num_cpus or fewer "
                "replicas, or the tasks a smaller num_cpus"
            )
        at_once = min(fits, op.count) if op.count else fits
        plan.resolved[op.name] = f"{at_once} at once"
    return plan


def _notes(config: PipelineConfig, stage: str) -> list[str]:
    """What runs outside Ray Data's operators: on the driver, or as processes of their own."""
    c = config.caption
    if stage == "caption" and c.engine == "openai":
        where = (
            "a vLLM server this job launches on the driver's node"
            if c.openai.launch_server
            else c.openai.base_url
        )
        return [f"engine: OpenAI client on the driver, {c.openai.concurrency} requests in flight to {where}"]
    if stage == "encode":
        t = config.train
        return [
            f"then train: one process, torchrun ranks or --ray-workers Ray Train workers (1 CPU each, "
            f"+1 GPU on GPUs); train.batch_size {t.batch_size} per rank, {t.data.num_workers} loader "
            "processes each"
        ]
    return []


def _largest(spec: ClusterSpec) -> NodeGroup:
    return NodeGroup(
        cpus=max(g.cpus for g in spec.nodes),
        gpus=max(g.gpus for g in spec.nodes),
        memory_gb=max(g.memory_gb for g in spec.nodes),
    )


def _short_of(need: NodeGroup, largest: NodeGroup) -> str:
    """What no single node has enough of for `need` ('' when one could hold it alone)."""
    for name, asked, has in (
        ("GPU", need.gpus, largest.gpus),
        ("CPU", need.cpus, largest.cpus),
        ("GB of memory", need.memory_gb, largest.memory_gb),
    ):
        if asked > has + 1e-9:
            return f"{asked:g} {name} and no node has more than {has:g}"
    return ""


def _best_fit(nodes: list[_Node], need: NodeGroup) -> _Node | None:
    fitting = [
        n
        for n in nodes
        if n.cpus + 1e-9 >= need.cpus and n.gpus + 1e-9 >= need.gpus and n.memory_gb + 1e-9 >= need.memory_gb
    ]
    return min(fitting, key=lambda n: (n.gpus - need.gpus, n.cpus - need.cpus), default=None)


def _placement(placed: list[int], node_count: int) -> str:
    if not placed:
        return "none placed"
    if node_count == 1:
        return f"{len(placed)} on the node"
    counts: dict[int, int] = {}
    for index in placed:
        counts[index] = counts.get(index, 0) + 1
    return ", ".join(f"{n} on node {i}" for i, n in sorted(counts.items()))


def _shape(need: NodeGroup) -> str:
    return f"{need.cpus:g} CPU" + (f" + {need.gpus:g} GPU" if need.gpus else "")


def _device_problems(config: PipelineConfig, stage: str, largest: NodeGroup) -> list[str]:
    """A CUDA device on an actor that reserves no GPU: Ray hides every GPU from it
    (CUDA_VISIBLE_DEVICES is empty), so the model could never reach one."""
    if stage != "score":
        return []
    problems = []
    for name, model in (("image_tower", config.score.image_tower), ("ocr", config.score.ocr)):
        if model.device == "cuda" and model.num_gpus == 0:
            problems.append(
                f"score.{name}.device=cuda with score.{name}.num_gpus=0: Ray gives the actor no GPU; "
                f"set score.{name}.num_gpus (e.g. 1 or 0.5)"
            )
    return problems


def store_root_problem(config: PipelineConfig, spec: ClusterSpec) -> str:
    """Why not every node of the spec reaches store.root ('' when they do)."""
    if spec.node_count < 2:
        return ""
    root = Path(config.store.root)
    if not root.is_absolute():
        return (
            f"store.root {root} is relative on {spec.node_count} nodes: each node would resolve it in its "
            "own working directory; set an absolute path on storage every node mounts"
        )
    shared = [Path(p) for p in spec.shared_paths]
    if not any(root == p or p in root.parents for p in shared):
        where = (
            f"under none of the spec's shared_paths {list(spec.shared_paths)}"
            if shared
            else ("and the spec lists no shared_paths")
        )
        return (
            f"store.root {root} is {where}: on {spec.node_count} nodes it must be on a filesystem every "
            "node mounts (list that mount in shared_paths)"
        )
    return ""


def plan(
    config: PipelineConfig, spec: ClusterSpec, stages: tuple[str, ...] = STAGES, *, live: bool = False
) -> list[StagePlan]:
    """Every stage resolved on `spec`; `live`: the spec is the connected cluster, whose nodes are asked
    whether they reach store.root (a spec file lists its shared mounts instead)."""
    plans = [resolve_stage(config, stage, spec) for stage in stages]
    storage = (
        unreached_root(Path(config.store.root))
        if live and spec.node_count > 1 and Path(config.store.root).is_absolute()
        else store_root_problem(config, spec)
    )
    for p in plans:
        if storage:
            p.problems.insert(0, storage)
    return plans


def format_plan(config: PipelineConfig, spec: ClusterSpec, plans: list[StagePlan]) -> str:
    """The plans as the table `reelforge plan` prints."""
    lines = [f"cluster: {spec.describe()}", f"store.root: {config.store.root}"]
    header = ("operator", "kind", "count", "CPU", "GPU", "mem GB", "batch", "resolved")
    for p in plans:
        rows = [header]
        for op in p.operators:
            count = str(op.count) if op.kind == "actor" else (f"<= {op.count}" if op.count else "auto")
            gpus = f"{op.gpus * op.bundles:g}"
            cpus = f"{op.cpus * op.bundles:g}" if op.bundles == 1 else f"{op.bundles}x{op.cpus:g}"
            if op.bundles > 1 and op.gpus:
                gpus = f"{op.bundles}x{op.gpus:g}"
            rows.append(
                (
                    op.name,
                    op.kind,
                    count,
                    cpus,
                    gpus,
                    f"{op.memory_gb:g}" if op.memory_gb else "-",
                    str(op.batch_size or "-"),
                    p.resolved.get(op.name, ""),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines.append("")
        lines.append(f"{p.stage}: {'REFUSED' if p.problems else 'schedulable'}")
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines += [f"  {note}" for note in p.notes]
        lines += [f"  refused: {problem}" for problem in p.problems]
    return "\n".join(lines)


def check_job(config: PipelineConfig, stage: str) -> None:
    """Refuse `stage` when it can never be scheduled on the connected Ray cluster (Ray started)."""
    spec = live_cluster_spec()
    problems = plan(config, spec, (stage,), live=True)[0].problems
    if problems:
        raise PlanError(
            f"{stage} can never be scheduled on {spec.describe()}: {problems[0]} (see `reelforge plan`)"
        )


def start_job(config: PipelineConfig, stage: str, prestart: WorkerPrestart | None = None) -> Any:
    """Where every Ray job starts: connect to (or start) Ray, refuse what could never run, and have
    Ray Data start every actor pool before the first task.

    Without that wait, Ray Data hands the blocks out as soon as the first actor is up (on two 1-CPU
    nodes both batches went to it while the second tower actor was 2 s from ready), and the tasks
    of an unfused chain start at once, taking the CPUs a pending actor needs: a smaller resource
    shape keeps refilling half a node and a larger one never fits there. With the wait, an actor
    that cannot start fails the job after ACTOR_START_TIMEOUT_S instead of leaving it pending.
    Ray Data's actor locality is off: it sends each block to an actor on the node holding it, and a
    job's work list is made on the driver, so every batch went to the driver node's actor (all 13
    clips on one of two nodes). The blocks are a few row ids; actors read the clips by row id from
    the shared store wherever they run.

    Returns the task of the worker `prestart` asks for (see init_ray), or None.
    """
    from pipelines.runtime import init_ray

    prestarted = init_ray(config.ray, prestart)
    from ray.data import DataContext  # after init_ray, which imports Ray Data once Ray is up

    check_job(config, stage)
    ctx = DataContext.get_current()
    ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    with warnings.catch_warnings():
        # Marked deprecated, yet Ray 2.60's actor pool still reads it to pick an actor for a block.
        warnings.simplefilter("ignore")
        ctx.execution_options.actor_locality_enabled = False
    return prestarted

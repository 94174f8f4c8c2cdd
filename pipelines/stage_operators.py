"""Each Ray stage's operators as its job builds them from the config, for `reelforge plan`.

Each Ray Data stage is a chain of operators: tasks (decoding, helpers) and actor pools (models, vLLM
engine replicas). Actors hold their resources for the whole job, and Ray Data fuses a task into the
actor after it when both ask for the same resources (Ray 2.60's operator fusion: same num_cpus and
num_gpus, and the task's concurrency unset or equal to the pool size); a fused task runs inside the
actor and needs no slot of its own. pipelines/plan.py places them on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.config import PipelineConfig

STAGES = ("split", "score", "caption", "encode")
# The encode job's blob-reading task (pipelines/jobs/encode.py): it only reads bytes by row id.
ENCODE_READ_NUM_CPUS = 0.25


@dataclass(frozen=True)
class Operator:
    """One Ray Data operator of a stage, as the job builds it from the config."""

    name: str
    kind: Literal["task", "actor"]
    setting: str  # the config section that sets its resources, for messages
    cpus: float
    gpus: float = 0.0
    memory_gb: float = 0.0
    count: int = 0  # actors: pool size; tasks: concurrency cap (0 = as many as fit)
    batch_size: int = 0
    bundles: int = 1  # vLLM replica: tensor-parallel workers, one bundle (cpus, gpus) each, on one node
    fused_into: str = ""  # the actor this task runs inside


def stage_operators(config: PipelineConfig, stage: str, cluster_gpus: float = 0.0) -> list[Operator]:
    """The operators `stage`'s job builds, in chain order, with Ray Data's task->actor fusion applied."""
    chain: list[Operator]
    if stage == "split":
        s = config.split
        chain = [Operator("split file", "task", "split", s.num_cpus, count=s.concurrency, batch_size=1)]
    elif stage == "score":
        c = config.score
        chain = [
            Operator(
                "decode+measure",
                "task",
                "score",
                c.decode_num_cpus,
                count=c.decode_concurrency,
                batch_size=c.decode_batch_size,
            )
        ]
        if c.aesthetic.enabled or c.embedding.enabled:
            m = c.image_tower
            chain.append(
                Operator(
                    "image tower",
                    "actor",
                    "score.image_tower",
                    m.num_cpus,
                    m.num_gpus,
                    count=m.concurrency,
                    batch_size=m.batch_size,
                )
            )
        if c.ocr.enabled:
            o = c.ocr
            chain.append(
                Operator(
                    "ocr",
                    "actor",
                    "score.ocr",
                    o.num_cpus,
                    o.num_gpus,
                    count=o.concurrency,
                    batch_size=o.batch_size,
                )
            )
    elif stage == "caption":
        cap = config.caption
        chain = [
            Operator(
                "read+frames",
                "task",
                "caption",
                cap.decode_num_cpus,
                count=cap.decode_concurrency,
                batch_size=cap.batch_size,
            )
        ]
        if cap.engine == "vllm":
            chain += _vllm_operators(config)
    elif stage == "encode":
        e = config.encode
        chain = [
            Operator("read blobs", "task", "encode", ENCODE_READ_NUM_CPUS, batch_size=e.batch_size),
            Operator(
                "autoencoder+text",
                "actor",
                "encode",
                e.num_cpus,
                # as encoder_device (pipelines/jobs/encode.py) resolves encode.device on the cluster
                e.num_gpus if e.device != "cpu" and cluster_gpus > 0 else 0.0,
                count=e.concurrency,
                batch_size=e.batch_size,
            ),
        ]
    else:
        raise ValueError(f"no Ray stage named {stage!r}; stages: {', '.join(STAGES)}")
    return _fused(chain)


def _vllm_operators(config: PipelineConfig) -> list[Operator]:
    """Ray Data LLM's chain (caption/_vllm_engine): helper tasks around one engine actor per replica.
    A GPU replica is `tensor_parallel_size` bundles of 1 GPU + 1 CPU (one actor with 1 GPU when the
    size is 1); on CPU, `tensor_parallel_size` bundles of 1 CPU."""
    c = config.caption
    v = c.vllm
    gpu = v.device == "GPU"
    helper = Operator(
        "llm helpers", "task", "caption.vllm.helper_num_cpus", v.helper_num_cpus, batch_size=c.batch_size
    )
    engine = Operator(
        f"vLLM replica (tp {v.tensor_parallel_size})",
        "actor",
        "caption.vllm",
        1.0,
        1.0 if gpu else 0.0,
        memory_gb=0.0 if gpu else float(v.cpu_kvcache_gib),
        count=v.replicas,
        batch_size=c.batch_size,
        bundles=v.tensor_parallel_size,
    )
    return [helper, engine, helper]


def _fused(chain: list[Operator]) -> list[Operator]:
    out = list(chain)
    for i in range(len(out) - 1):
        task, actor = out[i], out[i + 1]
        if (
            task.kind == "task"
            and actor.kind == "actor"
            and actor.bundles == 1
            and (task.cpus, task.gpus) == (actor.cpus, actor.gpus)
            and task.count in (0, actor.count)
        ):
            out[i] = Operator(**{**task.__dict__, "fused_into": actor.name})
    return out

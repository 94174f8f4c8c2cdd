"""`reelforge plan`: stage resources resolved on cluster spec files, and the refusals of what could never
be scheduled (checked the same way when a job starts)."""

from __future__ import annotations

import pytest

from pipelines.cli import main
from pipelines.cluster_spec import ClusterSpecError, load_cluster_spec
from pipelines.config import CONFIG_DIR, load_config
from pipelines.plan import PlanError, check_job, format_plan, plan, resolve_stage
from pipelines.stage_operators import stage_operators

SPECS = CONFIG_DIR / "clusters"
LAPTOP, GPU_1X8, GPU_4X8, CPU_4X32 = (
    SPECS / f"{n}.yaml" for n in ("laptop-2core", "gpu-1x8", "gpu-4x8", "cpu-4x32")
)
# The whole-CPU actors that hung the score job on 2 cores: nothing is left for the decode tasks.
WHOLE_CPU_ACTORS = ["score.image_tower.num_cpus=1", "score.ocr.num_cpus=1"]


def problems(config, spec) -> dict[str, list[str]]:
    return {p.stage: p.problems for p in plan(config, load_cluster_spec(spec))}


def test_demo_fits_a_2_core_laptop_with_the_decode_fused_into_the_tower():
    config = load_config("demo")
    spec = load_cluster_spec(LAPTOP)
    plans = plan(config, spec)
    assert all(not p.problems for p in plans), [p.problems for p in plans]
    score = next(p for p in plans if p.stage == "score")
    # decode 0.5 CPU = tower 0.5 CPU: Ray Data runs the decode inside the tower actor
    assert score.resolved["decode+measure"] == "inside each image tower actor (fused)"
    assert score.resolved["image tower"] == "1 on the node"
    text = format_plan(config, spec, plans)
    for stage in ("split: schedulable", "score: schedulable", "caption: schedulable", "encode: schedulable"):
        assert stage in text


def test_whole_cpu_actors_starving_the_decode_tasks_are_refused_on_2_cores():
    config = load_config("demo", WHOLE_CPU_ACTORS)
    found = problems(config, LAPTOP)["score"]
    assert len(found) == 1 and "leave no 0.5 CPU for a decode+measure task" in found[0], found
    # the same actors fit once a 3rd core is there
    bigger = load_cluster_spec(LAPTOP).model_copy(
        update={"nodes": (load_cluster_spec(LAPTOP).nodes[0].model_copy(update={"cpus": 3}),)}
    )
    assert not resolve_stage(config, "score", bigger).problems


def test_cluster_config_on_one_8_gpu_node():
    config = load_config("cluster")
    plans = {p.stage: p for p in plan(config, load_cluster_spec(GPU_1X8))}
    assert all(not p.problems for p in plans.values()), {s: p.problems for s, p in plans.items()}
    assert plans["score"].resolved["image tower"] == "4 on the node"
    assert plans["caption"].resolved["vLLM replica (tp 1)"] == "4 on the node"
    # encode.device auto: the encoder actors reserve encode.num_gpus where the cluster has GPUs
    encoder = next(o for o in plans["encode"].operators if o.name == "autoencoder+text")
    assert encoder.gpus == config.encode.num_gpus > 0
    assert next(o for o in stage_operators(config, "encode") if o.name == "autoencoder+text").gpus == 0


def test_cluster_config_on_four_8_gpu_nodes_spreads_and_checks_storage():
    config = load_config("cluster", ["caption.vllm.tensor_parallel_size=8", "caption.vllm.replicas=4"])
    plans = {p.stage: p for p in plan(config, load_cluster_spec(GPU_4X8))}
    assert all(not p.problems for p in plans.values()), {s: p.problems for s, p in plans.items()}
    # one 8-GPU replica per node
    assert plans["caption"].resolved["vLLM replica (tp 8)"] == ", ".join(
        f"1 on node {i}" for i in (1, 2, 3, 4)
    )
    relative = problems(load_config("cluster", ["store.root=data/project"]), GPU_4X8)
    assert all("store.root data/project is relative on 4 nodes" in found[0] for found in relative.values())
    local = problems(load_config("cluster", ["store.root=/home/me/project"]), GPU_4X8)["split"]
    assert "under none of the spec's shared_paths ['/mnt/shared']" in local[0]
    # a single node reaches any path
    assert not problems(load_config("cluster", ["store.root=data/project"]), GPU_1X8)["split"]


def test_more_gpus_than_any_node_has_is_refused():
    config = load_config("cluster", ["caption.vllm.tensor_parallel_size=16"])
    found = problems(config, GPU_4X8)["caption"]
    assert "16 bundles on one node, needs 16 GPU and no node has more than 8" in found[0], found


def test_a_cluster_without_gpus_refuses_the_gpu_stages_only():
    found = problems(load_config("cluster"), CPU_4X32)
    assert not found["split"] and not found["encode"]
    assert "one image tower (score.image_tower) needs 1 GPU and no node has more than 0" in found["score"][0]
    assert "needs 1 GPU and no node has more than 0" in found["caption"][0]
    # the same pipeline on CPUs fits
    cpu = load_config(
        "cluster",
        [
            "score.image_tower.device=cpu",
            "score.image_tower.num_gpus=0",
            "score.ocr.device=cpu",
            "score.ocr.num_gpus=0",
            "caption.vllm.device=CPU",
        ],
    )
    assert not any(problems(cpu, CPU_4X32).values())


def test_a_cuda_model_without_a_gpu_reservation_is_refused():
    found = problems(load_config("cluster", ["score.ocr.num_gpus=0"]), GPU_1X8)["score"]
    assert found == [
        "score.ocr.device=cuda with score.ocr.num_gpus=0: Ray gives the actor no GPU; set score.ocr.num_gpus "
        "(e.g. 1 or 0.5)"
    ]


def test_more_actors_than_fit_at_once_are_refused():
    found = problems(
        load_config("demo", ["score.image_tower.concurrency=3", "score.image_tower.num_cpus=1"]), LAPTOP
    )
    assert "3 x image tower (score.image_tower: 1 CPU each) do not fit at once" in found["score"][0]


def test_task_concurrency_is_resolved_beside_the_actors():
    config = load_config("cluster")
    score = resolve_stage(config, "score", load_cluster_spec(GPU_4X8))
    # 4 towers x 2 CPU + 2 OCR x 1 CPU hold 10 of 256 CPUs; decode tasks take 1 each, no cap
    assert score.resolved["decode+measure"] == "246 at once"
    capped = resolve_stage(
        load_config("cluster", ["score.decode_concurrency=16"]), "score", load_cluster_spec(GPU_4X8)
    )
    assert capped.resolved["decode+measure"] == "16 at once"


def test_fusion_follows_ray_data_rules():
    ops = {o.name: o for o in stage_operators(load_config("demo", ["score.decode_concurrency=3"]), "score")}
    assert ops["decode+measure"].fused_into == ""  # a task cap other than the pool size: not fused
    ops = {o.name: o for o in stage_operators(load_config("demo", ["score.image_tower.num_cpus=1"]), "score")}
    assert ops["decode+measure"].fused_into == ""  # different CPUs: not fused


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "nodes:\n  - {count: 2, cpus: 8, gpu: 1, memory_gb: 64}\n",
            "unknown key 'nodes[0].gpu'; allowed keys in a nodes entry: count, cpus, gpus, memory_gb",
        ),
        (
            "nodes:\n  - {count: 2, cpus: -8, memory_gb: 64}\n",
            "nodes[0].cpus: Input should be greater than 0 (got -8)",
        ),
        (
            "nodes:\n  - {count: 1, cpus: 8, memory_gb: 64}\n  - {count: x, cpus: 8, memory_gb: 64}\n",
            "nodes[1].count: Input should be a valid integer",
        ),
        ("nodes: []\n", "nodes: Tuple should have at least 1 item"),
        (
            "node:\n  - {cpus: 8, memory_gb: 64}\n",
            "unknown key 'node'; allowed keys in the spec: nodes, shared_paths",
        ),
        (
            "nodes:\n  - {cpus: 8, memory_gb: 64}\nshared_paths: [mnt/shared]\n",
            "shared_paths must be absolute folders, got 'mnt/shared'",
        ),
        ("- 1\n", "the top level must be a mapping"),
    ],
)
def test_spec_errors_are_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(ClusterSpecError) as err:
        load_cluster_spec(path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_spec_is_frozen():
    spec = load_cluster_spec(GPU_4X8)
    with pytest.raises(ValueError):
        spec.nodes[0].gpus = 4  # type: ignore[misc]
    assert spec.node_count == 4


def test_plan_command(capsys):
    assert main(["plan", "--config", "demo", "--cluster", str(LAPTOP)]) == 0
    out = capsys.readouterr().out
    assert "cluster: " in out and "decode+measure" in out and "image tower" in out
    sets = [a for s in WHOLE_CPU_ACTORS for a in ("--set", s)]
    assert main(["plan", "--config", "demo", "--cluster", str(LAPTOP), *sets]) == 2
    captured = capsys.readouterr()
    assert "score: REFUSED" in captured.out
    assert captured.err.strip() == "reelforge plan: score can never be scheduled on this cluster"
    assert main(["plan", "--cluster", str(LAPTOP.with_name("missing.yaml"))]) == 2
    assert "cluster spec not found" in capsys.readouterr().err


def test_a_job_refuses_on_the_connected_cluster_before_any_work(ray_session):
    """The check every job runs when it starts (pipelines.plan.start_job), against the live local Ray
    of the test session (2 CPUs)."""
    check_job(load_config("demo"), "score")
    with pytest.raises(PlanError, match=r"score can never be scheduled on the connected Ray cluster: 1 node"):
        check_job(load_config("demo", WHOLE_CPU_ACTORS), "score")

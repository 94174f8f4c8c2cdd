"""Run the pipeline's Ray stages through a real two-node Ray cluster on this machine; print a JSON summary.

Used by test_cluster.py in a subprocess (the test session already holds a local Ray). Each node is a
separate raylet with its own CPU, as `ray start` on two machines would give.

    python multinode_driver.py all STORE_ROOT FOOTAGE_DIR RAY_TEMP_DIR WORK_DIR [--set k=v ...]
        split, score (CPU scorers and the image-tower/aesthetic actors, tiny random tower), captions
        written directly, encode (a random autoencoder): where each ran and what it wrote.
    python multinode_driver.py node-loss STORE_ROOT FOOTAGE_DIR RAY_TEMP_DIR WORK_DIR [--set k=v ...]
        split, then score with the second node removed once the first rows are staged; a re-run if the
        job did not finish.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray._common.utils import get_default_ray_temp_dir
from ray.cluster_utils import Cluster

from pipelines.config import PipelineConfig, load_config
from pipelines.jobs.encode import run_encode
from pipelines.jobs.score import SCORE_STAGE, run_score
from pipelines.jobs.split import run_split
from store import CLIPS, ROW_ID, ColumnStaging, Store

# Each node's CPUs: two actor pools of 0.5 CPU (tower, OCR) fit on one node beside nothing else, so
# the tower's second actor and the decode tasks need the second node.
NODE_CPUS = 1


def start_cluster(temp_dir: str) -> tuple[Cluster, Any]:
    # Cluster records the head's address in Ray's default temp folder whatever temp_dir says; on a
    # machine where Ray never ran (a fresh CI box) that folder does not exist yet.
    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": NODE_CPUS, "include_dashboard": False, "temp_dir": temp_dir},
    )
    worker = cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    return cluster, worker


def actor_nodes(class_part: str) -> dict[str, int]:
    """Node -> actors whose class name contains `class_part` (alive or finished) in the cluster's
    actor table: where an actor pool ran."""
    # A private call, as in the score job's node count: Ray's public state API needs the dashboard.
    found: dict[str, int] = {}
    for actor in ray._private.state.actors().values():
        if class_part in actor.get("ActorClassName", ""):
            node = actor.get("Address", {}).get("NodeID", "")
            if node:
                found[node] = found.get(node, 0) + 1
    return found


def write_captions(store: Store) -> None:
    """A caption for every clip, as the caption stage would add it (no VLM in this test)."""
    ids = pa.Table.from_batches(store.scan(CLIPS, [ROW_ID, "clip_id"]))
    captions = pa.array([f"clip {c}" for c in ids.column("clip_id").to_pylist()], pa.string())
    store.add_columns(ids.append_column("caption", captions), stage="caption", config={"source": "test"})


def random_vae(config: PipelineConfig, folder: Path) -> str:
    import torch

    from train.vae import VideoVAE, save_vae

    torch.manual_seed(0)
    return str(save_vae(VideoVAE(config.train.vae), folder))


def run_all(cfg: PipelineConfig, footage: str, work: Path) -> dict[str, Any]:
    split = run_split(cfg, [footage], progress=False)
    score = run_score(cfg, progress=False)
    store = Store(cfg.store.root)
    write_captions(store)
    vae = random_vae(cfg, work / "vae")
    encode_cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={
                    "vae": cfg.train.vae.model_copy(update={"weights_path": vae}),
                    "data": cfg.train.data.model_copy(update={"filter": None}),
                }
            )
        }
    )
    encode = run_encode(encode_cfg, progress=False)
    return {
        "split_files_per_node": dict(split.files_per_node),
        "score_clips_per_node": dict(score.clips_per_node),
        "tower_actor_nodes": actor_nodes("ImageTowerStage"),
        "encode_actor_nodes": actor_nodes("LatentEncoder"),
        "clips": split.clips,
        "score_errors": score.errors,
        "encoded": encode.encoded,
        "encode_errors": encode.errors,
    }


def run_node_loss(cfg: PipelineConfig, footage: str, cluster: Cluster, worker: Any) -> dict[str, Any]:
    split = run_split(cfg, [footage], progress=False)
    store = Store(cfg.store.root)
    removed = threading.Event()

    def remove_worker_once_rows_are_staged() -> None:
        staging = ColumnStaging(store, SCORE_STAGE)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and staging.count() == 0:
            time.sleep(0.2)
        cluster.remove_node(worker, allow_graceful=False)
        removed.set()

    remover = threading.Thread(target=remove_worker_once_rows_are_staged, daemon=True)
    remover.start()
    first: dict[str, Any] = {}
    try:
        summary = run_score(cfg, progress=False)
        first = {"scored": summary.scored, "errors": summary.errors}
    except Exception as err:  # the job may fail when its node goes: the re-run must complete it
        first = {"failed": f"{type(err).__name__}: {err}"[:300]}
    remover.join()
    staged = ColumnStaging(store, SCORE_STAGE).count()  # what a failed first run left for the re-run
    again = run_score(cfg, progress=False)
    return {
        "clips": split.clips,
        "removed_mid_job": removed.is_set(),
        "first_run": first,
        "staged_after_first_run": staged,
        "rerun_scored": again.scored,
    }


def main() -> None:
    mode, root, footage, temp_dir, work, *rest = sys.argv[1:]
    overrides = [a for a in rest if a != "--set"]
    cluster, worker = start_cluster(temp_dir)
    cfg = load_config("demo", [f"store.root={root}", f"ray.address={cluster.address}", *overrides])
    if mode == "all":
        result = run_all(cfg, footage, Path(work))
    else:
        result = run_node_loss(cfg, footage, cluster, worker)
    print(json.dumps(result))
    ray.shutdown()  # the driver leaves before the nodes go
    cluster.shutdown()


if __name__ == "__main__":
    main()

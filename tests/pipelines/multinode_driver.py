"""Run split + score through a real two-node Ray cluster on this machine; print a JSON summary.

Used by test_cluster.py in a subprocess (the test session already holds a local Ray). Each node is a
separate raylet with its own 1 CPU, as `ray start` on two machines would give.
Usage: python multinode_driver.py STORE_ROOT FOOTAGE_DIR RAY_TEMP_DIR [--set k=v ...]
"""

import json
import os
import sys

import ray
from ray._common.utils import get_default_ray_temp_dir
from ray.cluster_utils import Cluster

from pipelines.config import load_config
from pipelines.jobs.score import run_score
from pipelines.jobs.split import run_split


def main() -> None:
    root, footage, temp_dir, *rest = sys.argv[1:]
    overrides = [a for a in rest if a != "--set"]
    # Cluster records the head's address in Ray's default temp folder whatever temp_dir says; on a
    # machine where Ray never ran (a fresh CI box) that folder does not exist yet.
    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": temp_dir},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    cfg = load_config("demo", [f"store.root={root}", f"ray.address={cluster.address}", *overrides])
    split = run_split(cfg, [footage], progress=False)
    score = run_score(cfg, progress=False)
    print(
        json.dumps(
            {
                "split_files_per_node": dict(split.files_per_node),
                "score_clips_per_node": dict(score.clips_per_node),
                "clips": split.clips,
                "score_errors": score.errors,
            }
        )
    )
    ray.shutdown()  # the driver leaves before the nodes go
    cluster.shutdown()


if __name__ == "__main__":
    main()

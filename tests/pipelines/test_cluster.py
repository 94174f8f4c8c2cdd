"""The split and score jobs on a real multi-node Ray cluster give the same dataset as one node."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_config
from pipelines.jobs.score import run_score
from pipelines.jobs.split import run_split
from store import Store

# The CPU scorers only: their decode tasks spread over the nodes. (With the CLIP actor, Ray Data fuses
# the decode into the actor, and a second 1-CPU actor stayed pending on the second node here.)
OVERRIDES = [
    "score.ocr.enabled=false",
    "score.aesthetic.enabled=false",
    "score.embedding.enabled=false",
    "score.decode_batch_size=2",
]
COMPARED = [
    "clip_id",
    "start_s",
    "end_s",
    "num_frames",
    "motion",
    "sharpness",
    "luma_mean",
    "technical_quality",
]


@pytest.mark.slow
def test_two_node_cluster_matches_one_node(tmp_path, sample_footage, ray_session):
    temp_dir = tempfile.mkdtemp(prefix="rf-cl-")
    driver = Path(__file__).with_name("multinode_driver.py")
    out = subprocess.run(
        [
            sys.executable,
            str(driver),
            str(tmp_path / "cluster"),
            str(sample_footage),
            temp_dir,
            *[a for o in OVERRIDES for a in ("--set", o)],
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # work ran on both nodes
    assert len(result["split_files_per_node"]) == 2, result
    assert len(result["score_clips_per_node"]) == 2, result
    assert result["score_errors"] == 0

    cfg = load_config("demo", [f"store.root={tmp_path / 'single'}", *OVERRIDES])
    run_split(cfg, [str(sample_footage)], progress=False)
    run_score(cfg, progress=False)

    def table(root):
        t = Store(root).read_clips(COMPARED).sort_by("clip_id")
        return t.to_pydict()

    cluster, single = table(tmp_path / "cluster"), table(tmp_path / "single")
    assert cluster["clip_id"] == single["clip_id"]
    assert len(cluster["clip_id"]) == result["clips"]
    for column in COMPARED[1:]:
        np.testing.assert_allclose(
            np.array(cluster[column], dtype=float),
            np.array(single[column], dtype=float),
            rtol=1e-5,
            atol=1e-6,
            err_msg=column,
        )

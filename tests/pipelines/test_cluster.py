"""The pipeline's Ray stages on a real two-node Ray cluster (two raylets on this machine, 1 CPU each):
split, score with the image-tower/aesthetic actors, and encode spread over both nodes and give the same
dataset as one node; a node removed mid-job leaves every clip scored exactly once."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from pipelines.config import load_config
from pipelines.jobs.score import run_score
from pipelines.jobs.split import run_split
from store import Store

DRIVER = Path(__file__).with_name("multinode_driver.py")
# The image tower (tiny random ViT, aesthetic head and embedding) as two fused 1-CPU actors: the decode
# (1 CPU, uncapped) runs inside them, so each 1-CPU node holds one. Encode: two 0.75-CPU actors, which
# cannot share a node, each leaving 0.25 CPU for its blob reads. OCR is left out for time.
OVERRIDES = [
    "score.ocr.enabled=false",
    "score.decode_batch_size=2",
    "score.decode_num_cpus=1",
    "score.image_tower.num_cpus=1",
    "score.image_tower.concurrency=2",
    "score.image_tower.batch_size=4",
    "encode.concurrency=2",
    "encode.num_cpus=0.75",
    "encode.batch_size=4",
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
    "aesthetic_mean",
]


def drive(mode: str, root: Path, footage: Path, work: Path, overrides: list[str]) -> dict:
    temp_dir = tempfile.mkdtemp(prefix="rf-cl-")  # short: Ray's socket paths must stay under ~100 chars
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, str(DRIVER), mode, str(root), str(footage), temp_dir, str(work)]
        + [a for o in overrides for a in ("--set", o)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_node_cluster_matches_one_node(tmp_path, sample_footage, ray_session):
    result = drive("all", tmp_path / "cluster", sample_footage, tmp_path / "work", OVERRIDES)
    # every stage's work ran on both nodes
    assert len(result["split_files_per_node"]) == 2, result
    assert len(result["tower_actor_nodes"]) == 2, result
    assert len(result["score_clips_per_node"]) == 2, result
    assert len(result["encode_actor_nodes"]) == 2, result
    assert result["score_errors"] == 0 and result["encode_errors"] == 0
    assert result["encoded"] == result["clips"]

    cfg = load_config("demo", [f"store.root={tmp_path / 'single'}", *OVERRIDES])
    run_split(cfg, [str(sample_footage)], progress=False)
    run_score(cfg, progress=False)

    def table(root):
        return Store(root).read_clips(COMPARED).sort_by("clip_id").to_pydict()

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
    encoded = Store(tmp_path / "cluster").read_clips(["clip_id", "latent_bucket", "encode_error"])
    assert (
        encoded.column("latent_bucket").null_count == 0
        and encoded.column("encode_error").null_count == encoded.num_rows
    )


@pytest.mark.slow
def test_a_node_removed_mid_job_leaves_every_clip_scored_once(tmp_path, sample_footage, ray_session):
    """The second node goes once the first batch is staged. The job either finishes on the node left
    (Ray retries the lost tasks, restarts the lost actor there) or fails; a re-run scores what is missing.
    Either way every clip ends with one score row, and nothing is scored twice."""
    # One 0.5-CPU tower actor per node, decode fused into it: the node left can hold the restarted one.
    overrides = [
        o for o in OVERRIDES if not o.startswith(("score.image_tower.num_cpus", "score.decode_num_cpus"))
    ]
    overrides += ["score.image_tower.num_cpus=0.5", "score.decode_num_cpus=0.5", "score.commit_every=2"]
    result = drive("node-loss", tmp_path / "store", sample_footage, tmp_path / "work", overrides)
    assert result["removed_mid_job"], result
    if "failed" in result["first_run"]:  # the re-run scores exactly what the first run did not stage
        assert result["staged_after_first_run"] + result["rerun_scored"] == result["clips"], result
    else:  # the job finished on the node left: the re-run has nothing to do
        assert result["first_run"]["scored"] == result["clips"] and result["rerun_scored"] == 0, result
    clips = Store(tmp_path / "store").read_clips(["clip_id", "score_error", "technical_quality"])
    assert clips.num_rows == result["clips"]
    assert pc.count_distinct(clips.column("clip_id")).as_py() == clips.num_rows
    assert clips.column("score_error").null_count == clips.num_rows  # every clip scored, none failed
    assert clips.column("technical_quality").null_count == 0

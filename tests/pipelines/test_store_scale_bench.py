"""bench/store_scale.py end to end on two tiny stores, and its verdicts on made-up numbers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.store_scale import judge

REPO = Path(__file__).resolve().parents[2]
STEPS = [
    "work_list",
    "fetch",
    "staging_append",
    "merge_update",
    "merge_new",
    "filter",
    "dedup",
    "report",
    "index",
]


@pytest.mark.slow
def test_store_scale_bench_measures_every_step(tmp_path):
    out = tmp_path / "store_scale.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.store_scale",
            "--sizes",
            "2000",
            "4000",
            "--rounds",
            "1",
            "--batches",
            "20",
            "--steps",
            *STEPS,
            "--root",
            str(tmp_path / "stores"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == STEPS
    assert sorted(result["runs"]) == ["2000", "4000"]
    for n, size in result["runs"].items():
        assert size["build"]["planted_pairs"] > 0
        assert size["build"]["fragments_split"] == int(n) // 10  # one fragment per ten clips, as split writes
        assert size["build"]["fragments"] < size["build"]["fragments_split"]  # then compacted
        for step in STEPS:
            measured = size["steps"][step]
            assert "error" not in measured, (n, step, measured)
            assert measured["seconds"] > 0 and measured["rss_mb"] > 0, (n, step)
        fetch = size["steps"]["fetch"]
        assert fetch["batches"] == 20 and fetch["ms_per_batch"] > 0 and fetch["ms_per_batch_in_list_scan"] > 0
        assert size["steps"]["staging_append"]["appends"] == -(-int(n) // 256)
        assert size["steps"]["filter"]["total"] == int(n)
        # every planted near-duplicate pair is found, and nothing else
        assert size["recall"]["found"] == size["recall"]["planted"] > 0
        assert size["recall"]["others"] == 0
    assert set(result["verdicts"]) == set(STEPS)
    # the stores are removed unless --keep
    assert not any((tmp_path / "stores").iterdir())
    table = run.stdout[run.stdout.index("| step |") :]
    for step in STEPS:
        assert f"| {step} |" in table
    assert "whole benchmark" in table


def _size(seconds: float, rss_mb: float, ms_per_batch: float) -> dict:
    return {
        "steps": {
            "filter": {"seconds": seconds, "rss_mb": rss_mb},
            "fetch": {"seconds": 1.0, "rss_mb": 100.0, "ms_per_batch": ms_per_batch},
        }
    }


def test_verdicts_compare_cost_per_clip_and_per_batch():
    result = {
        "steps": ["filter", "fetch"],
        # filter: 10x the clips in 20x the time is x2 per clip; fetch: x1.4 per batch
        "runs": {"10000": _size(1.0, 300.0, 2.0), "100000": _size(20.0, 400.0, 2.8)},
    }
    verdicts = judge(result)
    assert verdicts["filter"]["ratio"] == pytest.approx(2.0)
    assert not verdicts["filter"]["met"]
    assert verdicts["fetch"]["ratio"] == pytest.approx(1.4)
    assert verdicts["fetch"]["met"]
    result["runs"]["100000"]["steps"]["fetch"]["rss_mb"] = 3000.0
    assert judge(result)["fetch"]["failed"] == ["RSS 3000 MB"]

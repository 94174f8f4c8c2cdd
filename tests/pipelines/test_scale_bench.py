"""bench/scale.py runs end to end on a tiny input: both worker counts split and score the same clips."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scale_bench_runs_every_configuration(tmp_path):
    out = tmp_path / "scale.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--copies",
            "1",
            "--loops",
            "2",
            "--rounds",
            "2",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert sorted((r["round"], r["workers"]) for r in runs) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    # every run split every sample file without failure, into the same clips, and scored them all
    assert {(r["files"], r["failed"], r["clips"], r["scored"]) for r in runs} == {
        (runs[0]["files"], 0, runs[0]["clips"], runs[0]["clips"])
    }
    assert runs[0]["files"] == 4 and runs[0]["clips"] > runs[0]["files"]
    # each round's speed-ups are against that round's 1-worker run, Ray's and the plain processes' alike
    for r in runs:
        base = next(b for b in runs if b["round"] == r["round"] and b["workers"] == 1)
        assert r["total_x"] == pytest.approx(base["total_s"] / r["total_s"])
        assert r["plain_total_x"] == pytest.approx(base["plain_total_s"] / r["plain_total_s"])
        assert r["plain_split_s"] > 0 and r["plain_score_s"] > 0
    assert [(s["workers"], s["rounds"]) for s in report["summary"]] == [(1, 2), (2, 2)]
    assert "| median | 2 | off |" in run.stdout

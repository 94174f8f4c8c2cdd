"""bench/scale.py runs end to end on a tiny input: both worker counts split and score the same clips, and\nthe footage it measures is its input played `--loops` times."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curate.probe import probe_file
from curate.split_config import ProbeConfig

REPO = Path(__file__).resolve().parents[2]
LOOPS = 2
CFG = ProbeConfig()


@pytest.mark.slow
def test_scale_bench_runs_every_configuration(tmp_path, sample_footage):
    out = tmp_path / "scale.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--copies",
            "1",
            "--loops",
            str(LOOPS),
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
    # the bench's input is what it claims: every copy plays its source `--loops` times back to back
    # (timestamps shifted, nothing dropped), so the split job measures that much footage
    sources = sum(
        probe_file(v, CFG).duration_s for v in sample_footage.iterdir() if not v.name.endswith(".json")
    )
    assert runs[0]["footage_s"] == pytest.approx(LOOPS * sources, rel=0.01)
    assert all(r["plain_split_s"] > 0 and r["plain_score_s"] > 0 for r in runs)
    assert [(s["workers"], s["rounds"]) for s in report["summary"]] == [(1, 2), (2, 2)]
    assert "| median | 2 | off |" in run.stdout

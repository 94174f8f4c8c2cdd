"""The trainer's index and the report's data stay within a memory bound that does not grow with the clips.

Each measurement runs in a fresh subprocess: its peak RSS (ru_maxrss) minus the peak after the imports
is what building the index, collecting the report and the score summary took. Measured on this
project's machine (synthetic stores, 100 clips per fragment), that cost was:

| code | 2,000 clips | 100,000 clips |
|---|---|---|
| whole columns in memory, per-row Python (before) | +76 MB | +371 MB |
| streamed (now) | +80 MB | +138 MB |

The streamed cost stops growing once a scan batch (65,536 rows) is full; the bounds below sit
between the two rows with a margin either side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_store import make_store

REPO = Path(__file__).resolve().parents[1]
PEAK_OVER_IMPORTS_MB = 250  # at 100,000 clips
GROWTH_MB = 150  # from 2,000 to 100,000 clips

MEASURE = """
import json, resource, sys
from pipelines.report import collect
from pipelines.report.scores_text import render
from store import Store
from train.config import Bucket, DataConfig
from train.clip_index import build_index

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = Store(sys.argv[1])
index = build_index(store.clips_uri, DataConfig(buckets=(Bucket(height=32, width=32, frames=9),)))
data = collect(store, thumbnails=48)
text = render(store)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"clips": len(index), "total": data.grid.total_clips, "cost_mb": (peak - base) / 1024}))
"""


def _cost(store_root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(store_root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_index_and_report_memory_does_not_grow_with_the_clips(tmp_path):
    small = make_store(tmp_path / "small", 2_000, clips_per_fragment=100, embed_dim=16)
    large = make_store(tmp_path / "large", 100_000, clips_per_fragment=100, embed_dim=16)
    few, many = _cost(small.root), _cost(large.root)
    assert few["total"] == 2_000 and many["total"] == 100_000 and many["clips"] > 80_000
    print(
        f"index + report + score summary: +{few['cost_mb']:.0f} MB at 2,000 clips, +{many['cost_mb']:.0f} MB at 100,000"
    )
    assert many["cost_mb"] < PEAK_OVER_IMPORTS_MB
    assert many["cost_mb"] - few["cost_mb"] < GROWTH_MB

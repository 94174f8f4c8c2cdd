"""`reelforge eval` end to end: a samples folder (sample records give prompt and checkpoint), a broken
file that becomes an error row, the curated clips beside the samples with the Frechet distance between
them, the evals table with its placeholder marks, and --json with exactly the documented keys."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from curate.vbench import DIMENSIONS
from pipelines.cli import main
from pipelines.jobs.eval import eval_runs
from store import CLIPS, Store
from store.placeholders import schema_marks
from tests.caption_clips import clips_rows, photo_clips
from tests.score_clips import sample_shots
from train.sample import write_mp4

FAST = ["--set", "eval.max_frames=24", "--set", "eval.tower_frames=6", "--set", "eval.short_side=180"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory, sample_footage) -> Path:
    """A folder as `reelforge sample` leaves it: MP4s with a JSON record each, and one broken MP4."""
    out = tmp_path_factory.mktemp("samples")
    checkpoint = out / "ckpt" / "step_0000300"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"step": 300}))
    for i, label in enumerate(("pan_astronaut", "zoom_rocket", "fast_pan_chelsea")):
        frames = np.stack(sample_shots(sample_footage, "cuts.mp4")[label][:24])
        stem = f"{i:02d}_{label}_seed0"
        write_mp4(frames, out / f"{stem}.mp4", fps=25)
        record = {
            "prompt": f"a shot of {label}",
            "seed": 0,
            "checkpoint": str(checkpoint),
            "placeholder_inputs": {},
        }
        (out / f"{stem}.json").write_text(json.dumps(record))
    (out / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    return out


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "store")
    clips = photo_clips(copies=1)
    store.append(CLIPS, clips_rows(clips))
    ids = list(clips)
    store.add_columns(pa.table({"clip_id": ids, "caption": [f"caption {c}" for c in ids]}), "caption", {})
    store.add_columns(pa.table({"clip_id": ids, "selected": [c != ids[-1] for c in ids]}), "filter", {})
    return store


@pytest.mark.slow
def test_eval_samples_and_store(samples, store, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["eval", "--root", str(store.root), *FAST, "--store", str(samples), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = json.loads(out.read_text())
    assert all(set(r) == {"path", *DIMENSIONS} for r in rows)
    by_path = {Path(r["path"]).name if not r["path"].startswith("clip:") else r["path"]: r for r in rows}
    assert by_path["broken.mp4"]["motion_smoothness"] is None
    assert {p for p in by_path if p.startswith("clip:")} == {
        "clip:clip0-astronaut",
        "clip:clip0-coffee",
        "clip:clip0-chelsea",
    }
    scored = [r for r in rows if r["motion_smoothness"] is not None]
    assert len(scored) == 6 and all(0 <= r["temporal_flickering"] <= 1 for r in scored)

    table = lance.dataset(str(store.root / "evals.lance")).to_table().to_pylist()
    sampled = [r for r in table if r["source"] == "samples"]
    assert {r["prompt"] for r in sampled} == {
        "a shot of pan_astronaut",
        "a shot of zoom_rocket",
        "a shot of fast_pan_chelsea",
    }
    assert {r["checkpoint_step"] for r in sampled} == {300}
    assert next(r["error"] for r in table if r["video"].endswith("broken.mp4")).startswith("does not decode")
    assert {r["prompt"] for r in table if r["source"] == "store"} == {
        "caption clip0-astronaut",
        "caption clip0-coffee",
        "caption clip0-chelsea",
    }
    marks = schema_marks(lance.dataset(str(store.root / "evals.lance")).schema)
    assert marks["subject_consistency"] == "eval/image_tower"
    assert "imaging_quality" not in marks, "a measure without a model is no placeholder"

    (run,) = eval_runs(store.root).values()
    assert run["frechet_image_tower"] is not None and run["frechet_image_tower"] >= 0
    assert run["aggregates"]["samples"]["videos"] == 3 and run["aggregates"]["store"]["videos"] == 3
    assert "Frechet distance, image-tower features" in printed and "FAILED" in printed

    from pipelines.report.training import evals_section

    section = evals_section(store.root)
    assert section is not None and {"samples", "store"} <= {r.source for r in section.rows}
    assert section.frechet == (next(iter(eval_runs(store.root))), run["frechet_image_tower"])
    assert section.frechet_placeholder or any(marked for _, marked in section.dimensions)


def test_eval_refuses_without_input_or_selection(tmp_path, capsys):
    root = tmp_path / "empty"
    assert main(["eval", "--root", str(root)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    store = Store(tmp_path / "unfiltered")
    store.append(CLIPS, clips_rows(dict(list(photo_clips().items())[:1])))
    assert main(["eval", "--root", str(store.root), "--store"]) == 2
    assert "reelforge filter" in capsys.readouterr().err
    assert main(["eval", "--root", str(root), "--prompts", "p.txt", str(tmp_path)]) == 2

"""`reelforge status` on real Lance stores in each state: what it counts, what it calls stale, what it
says to run next, and that it writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from synthetic_store import CLIPS_PER_VIDEO, FILTER, STATES, append_clips, make_store

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.jobs.filter import run_filter
from store import CLIPS, Store

N = 40


def options(folder: Path) -> list[str]:
    """The store and the trainer's folders inside `folder`; the configured filter is the one the
    synthetic store was filtered with, so nothing is stale unless a test makes it so."""
    return [
        "--root",
        str(folder / "store"),
        "--set",
        f"filter.expression={FILTER}",
        "--set",
        f"train.vae.weights_path={folder / 'vae'}",
        "--set",
        f"train.out_dir={folder / 'train'}",
        "--set",
        f"sample.out_dir={folder / 'samples'}",
    ]


def status(capsys, folder: Path, *extra: str) -> dict:
    before = sorted(str(p) for p in folder.rglob("*"))
    assert main(["status", "--json", *options(folder), *extra]) == 0
    assert sorted(str(p) for p in folder.rglob("*")) == before  # reads only
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("status")
    made = {}
    for state, stages in STATES.items():
        made[state] = base / state
        make_store(made[state] / "store", N, embed_dim=8, stages=stages)
    return made


@pytest.fixture
def copy_of(states, tmp_path):
    def copy(state: str) -> Path:
        shutil.copytree(states[state], tmp_path / state)
        return tmp_path / state

    return copy


def test_empty_folder(tmp_path, capsys):
    found = status(capsys, tmp_path)
    assert found["clips"] == 0 and found["videos"]["total"] == 0 and found["stages"] == {}
    assert found["next"].startswith("reelforge split INPUT --root ")


def test_after_split(copy_of, capsys):
    folder = copy_of("split")
    found = status(capsys, folder)
    assert found["videos"] == {
        "total": 2,
        "ok": 1,
        "partial": 0,
        "failed": 1,
        "failed_by_reason": {"not a video": 1},
    }
    assert found["clips"] == N and found["hours"] == pytest.approx(CLIPS_PER_VIDEO * 2.0 / 3600)
    assert found["stages"]["split"]["ran"] and found["stages"]["split"]["clips"] == N
    assert not any(found["stages"][s]["ran"] for s in ("score", "dedup", "filter", "caption", "encode"))
    assert found["stale"] == []
    assert found["next"] == f"reelforge score --root {folder / 'store'}"


def test_after_score_and_after_filter(copy_of, capsys):
    scored = status(capsys, copy_of("score"))
    score = scored["stages"]["score"]
    assert score["ran"] and score["clips"] == N and score["failed"] == 0
    assert "clip_embedding" in score["columns"] and score["placeholders"] == ["aesthetic", "image_tower"]
    assert scored["next"].startswith("reelforge filter")

    filtered = status(capsys, copy_of("filter"))
    filt = filtered["stages"]["filter"]
    assert filt["clips"] == N and 0 < filt["selected"] < N and filt["columns"] == ["selected"]
    assert filtered["stale"] == [] and filtered["next"].startswith("reelforge caption")


def test_captioned_store_text(copy_of, capsys):
    folder = copy_of("caption")
    found = status(capsys, folder)
    caption = found["stages"]["caption"]
    failed = Store(folder / "store").read(CLIPS, ["clip_id"], filter="caption_error IS NOT NULL").num_rows
    assert caption["clips"] == N and caption["failed"] == failed
    assert caption["placeholders"] == ["vlm"] and found["stale"] == []
    assert found["next"].startswith("reelforge train-vae")  # no autoencoder weights in the folder
    assert main(["status", *options(folder)]) == 0
    text = capsys.readouterr().out
    assert "videos: 2 (1 ok, 1 failed: 1 x not a video)" in text
    assert "vlm=synthetic PLACEHOLDER" in text and "image_tower PLACEHOLDER" in text
    assert text.splitlines()[-1].startswith("next: reelforge train-vae --root ")


def test_clips_that_arrived_after_score(copy_of, capsys):
    folder = copy_of("score")
    append_clips(Store(folder / "store"), N, N + 10)
    found = status(capsys, folder)
    assert found["clips"] == N + 10
    assert found["stale"] == [
        {"stage": "score", "what": found["stale"][0]["what"], "fix": "reelforge score"},
    ]
    assert found["stale"][0]["what"].startswith("10 clips arrived after score ran")
    assert found["next"].startswith("reelforge score")


def test_filter_expression_changed_since_it_ran(copy_of, capsys):
    found = status(capsys, copy_of("filter"), "--set", "filter.expression=motion > 0.01")
    assert [s["stage"] for s in found["stale"]] == ["filter"]
    assert "filter.expression is now 'motion > 0.01'" in found["stale"][0]["what"]
    assert found["next"].startswith("reelforge filter")


def test_captions_made_before_the_filter_changed(copy_of, capsys):
    folder = copy_of("filter")
    store = Store(folder / "store")
    # captions of the selected clips, recorded as the caption job records them: for this filter run
    chosen = store.read(CLIPS, ["clip_id"], filter="selected = true").column("clip_id")
    selection = store.stage_records()["filter"]
    store.add_columns(
        pa.table({"clip_id": chosen, "caption": pa.array(["a caption"] * len(chosen))}),
        stage="caption",
        config={"selected_by": {"expression": selection["config"]["expression"], "at": selection["at"]}},
        models={"caption": {"model": "scripted", "placeholder": False}},
    )
    assert status(capsys, folder, "--set", "caption.model=scripted")["stale"] == []

    expression = "motion > 0.01"
    run_filter(load_config("demo", [f"store.root={store.root}"]), expression)
    found = status(
        capsys, folder, "--set", f"filter.expression={expression}", "--set", "caption.model=scripted"
    )
    (stale,) = found["stale"]
    assert stale["stage"] == "caption" and stale["fix"] == "reelforge caption"
    assert "before the filter changed" in stale["what"] and "no longer selected" in stale["what"]
    assert found["next"] == f"reelforge caption --root {store.root}"


def test_latents_from_another_autoencoder(copy_of, capsys):
    folder = copy_of("caption")
    store = Store(folder / "store")
    cfg = load_config("demo", [])
    other_vae = cfg.train.vae.model_copy(update={"latent_channels": cfg.train.vae.latent_channels * 2})
    ids = store.read(CLIPS, ["clip_id"]).column("clip_id")
    store.add_columns(
        pa.table({"clip_id": ids, "latent_bucket": pa.array(["64x64x9"] * len(ids))}),
        stage="encode",
        config={
            "signature": {
                "vae": other_vae.model_dump(mode="json"),
                "text": cfg.train.text.model_dump(mode="json"),
            }
        },
        models={"vae": str(folder / "vae"), "text": cfg.train.text.kind},
    )
    found = status(capsys, folder)
    assert found["stages"]["encode"]["clips"] == len(ids)
    assert [(s["stage"], s["fix"]) for s in found["stale"]] == [("encode", "reelforge encode")]
    assert "another autoencoder" in found["stale"][0]["what"]

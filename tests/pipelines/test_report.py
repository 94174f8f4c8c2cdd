"""The HTML dataset report: facts from a real store, graceful gaps, and a real render in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ci import skip_unless_ci
from report_store import FILTER, report_store_for

from pipelines.config import parse_config
from pipelines.jobs.report import report_path, run
from pipelines.report import NOT_RUN, build_report, collect
from pipelines.report.media import PreviewError, animated_preview, histogram_svg
from pipelines.report.scores import thresholds
from store import VIDEOS, Store, StoreError
from store.filters import parse_filter
from store.placeholders import placeholder_columns

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def store(tmp_path_factory, sample_footage) -> Store:
    return report_store_for(tmp_path_factory, sample_footage)


def test_thresholds_come_from_the_filter_expression_with_the_column_first():
    found = thresholds(
        "0.3 <= technical_quality and (motion > 0.001 or is_still) and not text_area >= 0.05 "
        "and aesthetic_mean = 5 and duplicate_of is null"
    )
    assert [(t.column, t.op, t.value, t.is_rule) for t in found] == [
        ("technical_quality", ">=", 0.3, True),  # literal on the left: flipped
        ("motion", ">", 0.001, False),  # inside an `or`: does not remove clips on its own
        ("text_area", ">=", 0.05, False),
        ("aesthetic_mean", "=", 5.0, True),
    ]
    assert thresholds("") == []


def test_placeholder_columns_follow_the_model_records():
    records = {
        "score": {
            "columns": ["motion", "aesthetic_mean", "clip_embedding"],
            "models": {
                "motion": {"placeholder": False},
                "aesthetic": {"placeholder": True, "columns": ["aesthetic_mean"]},
                "image_tower": {"placeholder": True, "columns": ["clip_embedding"]},
            },
        },
        "dedup": {
            "columns": ["duplicate_of"],
            "models": {"signature": "clip_embedding", "placeholder": True},
        },
        "caption": {"columns": ["caption", "caption_model"], "models": {"vlm": {"placeholder": True}}},
    }
    assert placeholder_columns(records) == {
        "aesthetic_mean": "score/aesthetic",
        "clip_embedding": "score/image_tower",
        "duplicate_of": "dedup",
        "caption": "caption/vlm",
        "caption_model": "caption/vlm",
    }


def test_animated_preview_of_real_clip_bytes_and_a_clear_error_for_garbage(store):
    import io

    from PIL import Image

    clip = store.read_clips(["clip_id", "width", "height"]).to_pylist()[0]
    webp = animated_preview(store.read_clip_bytes([clip["clip_id"]])[clip["clip_id"]], frames=5, width=96)
    image = Image.open(io.BytesIO(webp))
    assert image.format == "WEBP" and image.n_frames == 5 and image.size[0] == 96
    assert abs(image.size[1] - 96 * clip["height"] / clip["width"]) <= 2
    with pytest.raises(PreviewError, match="do not decode"):
        animated_preview(b"\x00" * 1000)


def test_histogram_draws_near_thresholds_and_pins_far_ones_to_the_edge():
    values = np.linspace(0.0, 1.0, 50)
    near = histogram_svg(values, "score", [(">=", 1.2, True)]).decode()
    far = histogram_svg(values, "score", [(">=", 40.0, True), ("<", -3.0, False)]).decode()
    assert "&gt;= 1.2<" in near and "off scale" not in near
    assert "&gt;= 40 (off scale)<" in far and "&lt; -3 (off scale)<" in far


def test_report_shows_every_stage_of_a_real_dataset(store):
    clips = store.read_clips(["clip_id", "selected", "duplicate_of"]).to_pylist()
    data = collect(store, thumbnails=6, configured_filter="")
    by_stage = {s.stage: s for s in data.stages}
    assert all(by_stage[s].ran for s in ("split", "score", "dedup", "filter", "caption"))
    assert not by_stage["encode"].ran and by_stage["encode"].summary == NOT_RUN
    assert f"{len(clips)} clips" in by_stage["split"].summary and "1 failed" in by_stage["split"].summary
    kept = sum(bool(c["selected"]) for c in clips)
    assert by_stage["filter"].summary.startswith(f"kept {kept} of {len(clips)} clips")
    # the text file is a failed row with its specific reason
    failed = data.files.failed
    assert len(failed) == 1 and failed[0]["uri"].endswith("broken.mp4")
    assert failed[0]["reason"] and failed[0]["detail"].startswith(failed[0]["reason"])
    # thresholds of the recorded filter land on their histograms; the placeholder head is flagged
    scores = data.scores
    assert scores.filter_applied and scores.filter_expression == parse_filter(FILTER, "filter.expression").sql
    marks = {h.column: [t.text for t in h.marks] for h in scores.histograms}
    assert marks["motion"] == ["motion > 0.0005"] and marks["technical_quality"] == [
        "technical_quality >= 0.3"
    ]
    assert marks["aesthetic_mean"] == ["aesthetic_mean >= -1"] and {"sharpness", "camera_shake"} <= set(marks)
    assert data.placeholders == {"aesthetic_mean": "score/aesthetic", "aesthetic_min": "score/aesthetic"}
    assert by_stage["score"].placeholder
    # the remuxed copy's clips are exact duplicates of the original's
    dups = [c for c in clips if c["duplicate_of"]]
    groups = data.duplicates.groups
    assert data.duplicates.count == len(dups) > 0
    assert sorted(m for g in groups for m in g.members) == sorted(c["clip_id"] for c in dups)
    assert all(g.size == len(g.members) for g in groups)
    assert data.duplicates.group_count == len(groups)
    # a random sample of previews, each with a decodable animated WebP and its scores
    cards = data.grid.cards
    assert len(cards) == 6 and all(
        c.preview_uri and c.preview_uri.startswith("data:image/webp") for c in cards
    )
    assert all(c.thumbnail_uri.startswith("data:image/jpeg") for c in cards)
    assert all(c.caption for c in data.captions.cards) and len(data.captions.cards) == 8
    # the highest and lowest clips of every score, stills from the thumbnail column
    assert [e.column for e in data.extremes] == [h.column for h in scores.histograms]
    for e in data.extremes:
        assert len(e.highest) == len(e.lowest) == 4 and all(c.thumbnail_uri for c in e.highest + e.lowest)
        values = [c.scores[e.column] for c in e.highest + e.lowest]
        assert values[:4] == sorted(values[:4], reverse=True) and values[4:] == sorted(values[4:])
    records = data.configs.records
    assert records[VIDEOS]["split"]["config"]["detect"]["detector"] == "content"
    # every stage says when it ran, in one format (the split record is stamped like the column stages)
    split_at = records[VIDEOS]["split"]["at"]
    assert by_stage["split"].at == split_at and split_at.endswith("+00:00")


def _grid_cards(page: str) -> int:
    """Cards in the sortable grid (the random sample), not in the highest/lowest rows."""
    grid = page.split("<div class='grid' id='grid'>", 1)[1].split("<h2", 1)[0]
    return grid.count("<div class='card'")


def test_page_is_self_contained_and_badges_placeholders(store):
    page = build_report(store, thumbnails=4, extremes=0)
    urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert urls and all(u.startswith("data:") for u in urls)
    assert not re.search(r"https?://", page.replace("http://www.w3.org", ""))  # SVG namespaces only
    assert page.count("class='card'") == _grid_cards(page) == 4
    # every place that shows aesthetic_mean carries the badge: histogram, sort option, each card
    figure = re.search(
        r"<figure class='plot' data-column='aesthetic_mean'>.*?</figure>", page, re.DOTALL
    ).group(0)
    assert 'class="badge placeholder"' in figure
    assert "aesthetic_mean (placeholder)</option>" in page
    cards = page.split("<div class='card'")[1:]
    assert len(cards) == 4
    for card in cards:
        assert 'aesthetic_mean<span class="badge placeholder">' in card


def test_sections_say_not_run_yet_before_the_stages_ran(tmp_path, sample_footage):
    from report_store import split_into

    fresh = split_into(Store(tmp_path / "store"), [sample_footage / "vp9.webm"])
    data = collect(fresh, thumbnails=10)
    ran = {s.stage: s.ran for s in data.stages}
    assert ran == {
        "split": True,
        "score": False,
        "dedup": False,
        "filter": False,
        "caption": False,
        "encode": False,
    }
    assert not data.scores.histograms and not data.placeholders and not data.captions.cards
    assert len(data.grid.cards) == fresh.read_clips(["clip_id"]).num_rows > 0
    page = build_report(fresh, thumbnails=10)
    for section in ("score: not run yet", "caption: not run yet", "dedup: not run yet"):
        assert section in page
    assert 'class="badge placeholder"' not in page
    with pytest.raises(StoreError, match="run `reelforge split` first"):
        collect(Store(tmp_path / "empty"), thumbnails=1)


def test_job_writes_the_report_under_the_store_root(store, tmp_path):
    cfg = parse_config({"store": {"root": str(store.root)}, "report": {"thumbnails": 3, "extremes": 2}})
    assert report_path(cfg) == store.root / "report.html"
    out = run(cfg, out=tmp_path / "sub" / "r.html")
    page = out.read_text()
    assert out == tmp_path / "sub" / "r.html" and _grid_cards(page) == 3
    assert page.count("data-side='highest'") == page.count("data-side='lowest'") > 0
    assert page.count("class='card'") == 3 + 4 * page.count("data-side='highest'")
    assert not list(out.parent.glob("*.partial"))


def test_values_are_escaped_so_a_caption_cannot_run_script(tmp_path, sample_footage):
    import pyarrow as pa
    from report_store import split_into

    fresh = split_into(Store(tmp_path / "store"), [sample_footage / "vp9.webm"])
    ids = fresh.read_clips(["clip_id"])["clip_id"].to_pylist()
    evil = "<script>alert('x')</script> & \"quoted\" <b>bold</b>"
    fresh.add_columns(
        pa.table({"clip_id": ids, "caption": [evil] * len(ids)}),
        stage="caption",
        config={"note": evil},
        models={"vlm": {"name": evil, "placeholder": False}},
    )
    page = build_report(fresh, thumbnails=2)
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quoted&#34; &lt;b&gt;bold&lt;/b&gt;"
    # in the grid's cards and in the sampled captions; the only script is the report's own
    assert page.count(f"<div class='caption'>{escaped}</div>") == 2
    assert f"<td>{escaped}</td>" in page
    assert page.count("<script>") == 1 and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.split("<h2 id='configs'>", 1)[1]


def test_templates_and_static_files_ship_inside_the_package():
    from importlib import resources

    from pipelines.report.page import PACKAGE, TEMPLATE, environment

    files = resources.files(PACKAGE)
    templates = {f.name for f in files.joinpath("templates").iterdir()}
    assert TEMPLATE in templates and {"report.css", "report.js"} <= {
        f.name for f in files.joinpath("static").iterdir()
    }
    env = environment()
    assert env.autoescape is True
    # every template a template includes or imports is there (a missing partial fails to load)
    source = "".join(files.joinpath("templates", name).read_text() for name in templates)
    assert set(re.findall(r'(?:include|import) "([^"]+)"', source)) <= templates
    for name in templates:
        env.get_template(name)


def test_training_and_evaluation_sections_sit_before_the_configs(store, tmp_path, monkeypatch):
    from curate.vbench import DIMENSIONS
    from pipelines.report import training

    train = tmp_path / "train"
    (train / "eval" / "step_0000010").mkdir(parents=True)
    (train / "log.csv").write_text("step,loss\n0,1.0\n10,0.5\n")
    (train / "val.csv").write_text("step,val_loss\n10,0.6\n")
    (train / "eval.csv").write_text(
        "step,"
        + ",".join(DIMENSIONS)
        + ",quality_score\n10,"
        + ",".join(["0.5"] * len(DIMENSIONS))
        + ",0.7\n"
    )
    for prompt in ("a rabbit", "cars"):
        (train / "eval" / "step_0000010" / f"{prompt}.gif").write_bytes(b"GIF89a")
    # the latest checkpoint trained on a random-weight VLM's captions (what train/loop.py records)
    (train / "checkpoints" / "step_0000010").mkdir(parents=True)
    (train / "checkpoints" / "latest").write_text("step_0000010")
    (train / "checkpoints" / "step_0000010" / "state.json").write_text(
        json.dumps({"step": 10, "placeholder_inputs": {"caption": "caption/vlm"}})
    )
    aggregate = {"videos": 2, **dict.fromkeys(DIMENSIONS, 0.25), "quality_score": 0.4}
    runs = {
        "r1": {
            "aggregates": {"samples": aggregate, "store": {"videos": 0}},
            "frechet_image_tower": 1.5,
            "placeholders": {"subject_consistency": "eval/image_tower", "tower_embedding": "eval"},
        }
    }
    monkeypatch.setattr(training, "eval_runs", lambda root: runs if root == store.root else {})
    page = build_report(store, thumbnails=1, extremes=0, train_dir=train, evals_root=store.root)
    before, configs = page.split("<h2 id='configs'>", 1)
    assert "id='training'" not in configs and "id='evals'" not in configs
    sections = before.split("<h2 id='training'>Training</h2>", 1)[1]
    assert sections.count("<img class='chart'") == 3 and "set train.eval_every" not in sections
    assert (
        'Latest checkpoint step_0000010 <span class="badge placeholder">placeholder</span> trained on '
        "placeholder inputs: caption from caption/vlm" in sections
    )
    assert (
        "<tr><th>step_0000010</th><td><img alt='a rabbit' title='a rabbit' src='data:image/gif;" in sections
    )
    assert "<tr><td>samples</td><td>r1</td><td>2</td>" + "<td>0.2500</td>" * len(DIMENSIONS) in sections
    assert "<td>store</td>" not in sections, "a source without videos is left out"
    assert 'subject_consistency<span class="badge placeholder">' in sections
    assert (
        'not an I3D FVD)<span class="badge placeholder">placeholder</span>: <b>1.5000</b> (run r1)'
        in sections
    )
    (train / "eval.csv").unlink()
    plain = build_report(store, thumbnails=1, extremes=0, train_dir=train, evals_root=tmp_path)
    assert plain.count("<img class='chart'") == 1 and "set train.eval_every" in plain
    (train / "checkpoints" / "step_0000010" / "state.json").write_text(json.dumps({"step": 10}))
    real = build_report(store, thumbnails=1, extremes=0, train_dir=train, evals_root=tmp_path)
    assert "Latest checkpoint step_0000010." in real and "placeholder inputs" not in real
    assert "id='evals'" not in plain


# ---- headless Chromium ---------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


@pytest.fixture
def chromium():
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        skip_unless_ci("headless Chromium not installed (Debian packages `chromium` and `chromium-driver`)")
    from selenium import webdriver  # a dev dependency: missing is a broken install, not a skip
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver: we give the path
    profile = tempfile.mkdtemp(prefix="rf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(store, chromium, tmp_path):
    cfg = parse_config({"store": {"root": str(store.root)}, "report": {"thumbnails": 8}})
    page = run(cfg, out=tmp_path / "report.html")
    chromium.get(page.as_uri())
    chromium.execute_script("return document.readyState")  # get() returns after the load event
    errors = [e for e in chromium.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    loaded = chromium.execute_script(
        "return Array.from(document.querySelectorAll('#grid .card img.thumb'))"
        ".map(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded == [True] * 8
    plots = chromium.execute_script(
        "return Array.from(document.querySelectorAll('.plot img')).map(i => i.complete && i.naturalWidth > 0)"
    )
    assert plots and all(plots)
    resources = chromium.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    assert all(r.startswith("data:") for r in resources)  # nothing fetched from anywhere
    # sorting by a score reorders the cards, missing values last
    chromium.execute_script("window.reelforgeSort('motion', 'desc')")
    motion = chromium.execute_script(
        "return Array.from(document.querySelectorAll('#grid .card')).map(c => c.getAttribute('data-s-motion'))"
    )
    values = [float(v) for v in motion if v]
    assert values == sorted(values, reverse=True) and len(values) == 8
    # clip ids under duplicate thumbnails wrap inside their figure instead of running into the next one
    overflowing = chromium.execute_script(
        "return Array.from(document.querySelectorAll('.dupgroup figcaption'))"
        ".filter(f => f.scrollWidth > f.clientWidth).length"
    )
    assert chromium.execute_script("return document.querySelectorAll('.dupgroup figcaption').length") > 0
    assert overflowing == 0
    chromium.execute_script("window.reelforgeSort('order', 'desc')")
    height = chromium.execute_script("return document.documentElement.scrollHeight")
    chromium.set_window_size(1400, min(int(height) + 100, 8000))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    assert chromium.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

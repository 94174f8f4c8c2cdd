"""The report on a synthetic store of 2,000 clips: sampled grids of exactly the configured size, streamed
histograms that count every clip, samples independent of the batch boundaries, streamed percentiles."""

from __future__ import annotations

import re

import numpy as np
import pytest
from synthetic_store import SCORE_COLUMNS, make_store

from pipelines.report import build_report, collect, scan
from pipelines.report import scores_text as report_scores
from store import CLIPS, Store

CLIPS_N = 2_000


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return make_store(
        tmp_path_factory.mktemp("synthetic") / "store", CLIPS_N, clips_per_fragment=20, embed_dim=8
    )


@pytest.fixture(scope="module")
def data(store):
    return collect(store, thumbnails=10, extremes=3, captions=5, duplicate_groups=4)


def test_every_grid_has_exactly_the_configured_size(store, data):
    assert data.grid.total_clips == CLIPS_N and len(data.grid.cards) == 10 and len(data.captions.cards) == 5
    assert [e.column for e in data.extremes] == list(SCORE_COLUMNS)
    values = store.read_clips(["clip_id", *SCORE_COLUMNS]).to_pandas()
    for e in data.extremes:
        assert len(e.highest) == len(e.lowest) == 3
        assert [c.scores[e.column] for c in e.highest] == sorted(values[e.column], reverse=True)[:3]
        assert [c.scores[e.column] for c in e.lowest] == sorted(values[e.column])[:3]
    assert len({c.clip_id for c in data.grid.cards}) == 10 and all(c.caption for c in data.captions.cards)
    # the blobs are random bytes: each grid card says why it has no preview instead of failing
    assert all(c.preview_uri is None and "do not decode" in (c.preview_error or "") for c in data.grid.cards)
    # duplicates counted in full, four groups listed with their members and sizes
    duplicates = store.require(CLIPS).count_rows(filter="duplicate_of IS NOT NULL")
    groups = data.duplicates.groups
    assert data.duplicates.count == data.duplicates.group_count == duplicates == CLIPS_N // 50
    assert len(groups) == 4 and all(len(g.members) == g.size == 1 for g in groups)
    thumbnails = data.duplicates.thumbnails
    assert all(g.kept in thumbnails and g.members[0] in thumbnails for g in groups)
    page = build_report(store, thumbnails=10, extremes=3, captions=5, duplicate_groups=4)
    grid = page.split("<div class='grid' id='grid'>", 1)[1].split("<h2", 1)[0]
    assert grid.count("<div class='card'") == 10
    assert page.count("<div class='card'") == 10 + 2 * 3 * len(SCORE_COLUMNS)
    assert "5 of them, sampled at random" in page and "the first 4 found shown" in page


def test_histograms_count_every_clip_with_a_value(store, data):
    ds = store.require(CLIPS)
    for histogram in data.scores.histograms:
        text, column = histogram.svg.decode(), histogram.column
        scored = ds.count_rows(filter=f"{column} IS NOT NULL")
        kept = ds.count_rows(filter=f"{column} IS NOT NULL AND selected = true")
        assert f"all ({scored})" in text and f"kept ({kept})" in text and scored == CLIPS_N
    kept_all = ds.count_rows(filter="selected = true")
    assert next(s for s in data.stages if s.stage == "filter").summary.startswith(
        f"kept {kept_all} of {CLIPS_N}"
    )


def test_samples_do_not_depend_on_batch_boundaries(store, data, monkeypatch):
    monkeypatch.setattr(scan, "SCAN_ROWS", 97)  # many batches, cut inside fragments
    again = collect(store, thumbnails=10, extremes=3, captions=5, duplicate_groups=4)
    assert [c.clip_id for c in again.grid.cards] == [c.clip_id for c in data.grid.cards]
    assert [c.clip_id for c in again.captions.cards] == [c.clip_id for c in data.captions.cards]
    for e1, e2 in zip(again.extremes, data.extremes, strict=True):
        assert [c.clip_id for c in e1.highest + e1.lowest] == [c.clip_id for c in e2.highest + e2.lowest]
    # the same counts
    assert [h.svg for h in again.scores.histograms] == [h.svg for h in data.scores.histograms]
    assert again.duplicates.groups == data.duplicates.groups


def test_streamed_percentiles_are_close_to_numpy(store):
    text = report_scores.render(store)
    values = store.read_clips(list(SCORE_COLUMNS)).to_pandas()
    for column in SCORE_COLUMNS:
        line = next(ln for ln in text.splitlines() if ln.startswith(column + " "))
        cells = [float(v) for v in re.findall(r"-?\d[\d.e+-]*", line[len(column) :])]
        n, nulls, found = cells[0], cells[1], cells[2:7]
        assert (n, nulls) == (CLIPS_N, 0)
        expected = np.percentile(values[column], report_scores.PERCENTILES)
        spread = values[column].max() - values[column].min()
        # within one bin of the streamed histogram, and the printed 4 significant digits
        assert np.allclose(found, expected, rtol=1e-3, atol=spread / report_scores.QUANTILE_BINS)
    assert f"selected: {store.require(CLIPS).count_rows(filter='selected = true')} of {CLIPS_N}" in text


def test_quantiles_are_within_a_bin_and_exact_where_bins_hold_one_value():
    rng = np.random.default_rng(0)
    ps = [0, 5, 10, 20, 50, 99, 100]
    values = np.concatenate([np.zeros(500), rng.lognormal(0, 2, 1500)])  # many ties and a long tail
    quantiles = report_scores.Quantiles(values.min(), values.max(), bins=64)
    for chunk in np.array_split(values, 7):
        quantiles.add(chunk)
    found = quantiles.percentiles(ps)
    assert found[0] == 0.0 and found[-1] == values.max()
    assert np.allclose(found, np.percentile(values, ps), atol=(values.max() - values.min()) / 64)
    steps = rng.integers(0, 10, 3000) * 0.5  # ten distinct values, each in a bin of its own
    quantiles = report_scores.Quantiles(steps.min(), steps.max(), bins=64)
    quantiles.add(steps)
    assert np.allclose(quantiles.percentiles(ps), np.percentile(steps, ps), rtol=0, atol=1e-12)

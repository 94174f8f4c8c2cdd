"""The one filter dialect: Lance SQL, checked by store/filters.py, evaluated by Lance, and compared
here with a second engine (DuckDB) over the same rows."""

from __future__ import annotations

import pyarrow as pa
import pytest
from synthetic_store import make_store, selected_by

from pipelines.config import load_config
from pipelines.jobs.filter import run_filter
from pipelines.preflight import PreflightError, check_filter
from pipelines.report.filter_rules import filter_lines, filter_rules
from store import CLIPS, Store
from store.filters import FilterError, parse_filter

COLUMNS = ["aesthetic_mean", "motion", "duplicate_of", "too_dark", "text_area", "caption"]
EXPRESSIONS = [
    "aesthetic_mean >= 4.5 AND motion > 0.002 AND duplicate_of IS NULL",
    # nulls: a comparison with a missing value never selects, inside OR and NOT too
    "NOT (duplicate_of = 'x') OR motion > 0.004",
    "motion BETWEEN 0.001 AND 0.003 AND (text_area < 0.05 OR aesthetic_mean > 5)",
    "abs(motion - 0.002) < 0.0005 AND clip_id LIKE 'syn%'",
]


def test_rules_thresholds_and_the_canonical_spelling():
    f = parse_filter(
        "aesthetic_mean >= 4.5 and (motion > 0.002) and (text_area < 0.05 or 0.5 < motion) and not too_dark",
        "filter.expression",
        COLUMNS,
    )
    assert f.rules == [
        "aesthetic_mean >= 4.5",
        "motion > 0.002",
        "text_area < 0.05 OR 0.5 < motion",
        "NOT too_dark",
    ]
    assert [(t.text, t.is_rule) for t in f.thresholds] == [
        ("aesthetic_mean >= 4.5", True),
        ("motion > 0.002", True),
        ("text_area < 0.05", False),
        ("motion > 0.5", False),  # flipped: column first
    ]
    assert f.columns == {"aesthetic_mean", "motion", "text_area", "too_dark"}
    assert parse_filter(f.sql, "k", COLUMNS).sql == f.sql  # the canonical form is a fixed point
    assert parse_filter("  ", "k", COLUMNS).tree is None and parse_filter("", "k").rules == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("motion >", "filter.expression 'motion >' is not SQL"),
        ("nope > 1", "filter.expression names unknown column 'nope'; columns: aesthetic_mean, caption, "),
        ("motion > 1; DROP TABLE clips", "is not a SQL condition"),
        ("motion > (SELECT max(motion) FROM clips)", "is not allowed"),
        ("count(motion) > 1", "'COUNT(motion)' is not allowed"),
        ("__import__('os').system('x')", "is not allowed"),
        ('caption = "a dog"', "for a string write single quotes: caption = 'a dog'"),
    ],
)
def test_bad_filters_get_one_line_errors_naming_the_key(text, message):
    with pytest.raises(FilterError) as err:
        parse_filter(text, "filter.expression", COLUMNS)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_old_spellings_that_lance_accepts_stay_valid():
    # `==` and lower-case keywords were the old language's; Lance's SQL takes them as they are.
    assert (
        parse_filter("motion == 1 and duplicate_of is null", "k", COLUMNS).sql
        == "motion = 1 AND duplicate_of IS NULL"
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Store:
    return make_store(
        tmp_path_factory.mktemp("filters") / "store", 3000, clips_per_fragment=500, stages=("score", "dedup")
    )


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_filter_job_selects_what_a_second_sql_engine_selects(scored, tmp_path, expression):
    config = load_config("demo", [f"store.root={scored.root}"])
    summary = run_filter(config, expression)
    got = scored.read(CLIPS, ["clip_id", "selected"]).sort_by("clip_id")
    names = sorted(parse_filter(expression, "k").columns | {"clip_id", "score_error"})
    rows = scored.read(CLIPS, names).sort_by("clip_id")
    want = selected_by(f"({expression}) AND score_error IS NULL", rows)
    assert got["selected"].combine_chunks().equals(want)
    assert 0 < summary.selected == sum(want.to_pylist()) < summary.total == 3000
    record = scored.stage_records()["filter"]["config"]
    assert (
        record["source_expression"] == expression
        and record["expression"] == parse_filter(expression, "k").sql
    )


def test_the_reports_per_rule_view_counts_each_rule(scored):
    expression = EXPRESSIONS[0]
    lines = filter_lines(scored.require(CLIPS), expression)
    counts = filter_rules(scored.require(CLIPS), expression).rules
    rules = parse_filter(expression, "k").rules
    rows = scored.read(CLIPS, ["aesthetic_mean", "motion", "duplicate_of", "score_error"])
    passes = [selected_by(rule, rows).to_pylist() for rule in rules]
    for i, rule in enumerate(rules):
        fails = sum(not p for p in passes[i])
        alone = sum(
            not passes[i][r] and all(passes[j][r] for j in range(len(rules)) if j != i)
            for r in range(rows.num_rows)
        )
        assert f"{rule:<44} removes {fails:>5}   (only this rule: {alone})" in lines[1 + i]
        assert (counts[i].rule, counts[i].removes, counts[i].only) == (rule, fails, alone)
    assert lines[-1] == f"  selected: {sum(selected_by(expression, rows).to_pylist())} of 3000"


def test_every_config_filter_is_checked_the_same_way_before_a_job(scored):
    for key in ("filter.expression", "caption.filter", "train.data.filter", "train.vae_train.filter"):
        with pytest.raises(PreflightError, match=f"^{key} names unknown column 'nope'; columns: "):
            check_filter(scored, "nope > 1", key)
        # a column the contract declares but no stage has written yet names the command that writes it
        with pytest.raises(
            PreflightError, match=f"no 'caption' column, which {key} needs: run `reelforge caption`"
        ):
            check_filter(scored, "caption IS NOT NULL", key)
        # only the column types tell: Lance plans the filter on these clips
        with pytest.raises(
            PreflightError, match=f"^{key} .motion > 'a'. cannot run on these clips: .*literal.*Float64"
        ):
            check_filter(scored, "motion > 'a'", key)
    check_filter(scored, EXPRESSIONS[2], "caption.filter")
    assert isinstance(scored.read(CLIPS, ["motion"], filter=EXPRESSIONS[2]), pa.Table)

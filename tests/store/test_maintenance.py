"""Table maintenance on real Lance stores: compaction, vacuum, indices, stats, the job lock, kills."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import lance
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.cli import main
from pipelines.config import ConfigError, parse_config
from store import contract
from store.config import StoreConfig
from store.errors import StoreError
from store.lance_store import CLIPS, VIDEOS, Store
from store.locks import job_lock
from store.maintenance import compact, ensure_indices, maybe_compact, vacuum
from store.stats import format_stats, stats

REPO = Path(__file__).resolve().parents[2]
CLIPS_SCHEMA, VIDEOS_SCHEMA = contract.schema(CLIPS), contract.schema(VIDEOS)


def blob(video_id: str, i: int, size: int) -> bytes:
    """Distinct bytes per clip, so a blob read from the wrong row cannot pass."""
    seed = f"{video_id}/{i};".encode()
    return (seed * (size // len(seed) + 1))[:size]


def clip_rows(video_id: str, n: int, size: int) -> pa.Table:
    rows: dict[str, list] = {name: [None] * n for name in CLIPS_SCHEMA.names}
    rows.update(
        clip_id=[f"{video_id}:{i:.3f}" for i in range(n)],
        video_id=[video_id] * n,
        clip_index=list(range(n)),
        start_s=[float(i) for i in range(n)],
        end_s=[i + 1.5 for i in range(n)],
        video=[blob(video_id, i, size) for i in range(n)],
        thumbnail=[b"jpeg"] * n,
    )
    return pa.table(rows, schema=CLIPS_SCHEMA)


def video_row(video_id: str) -> pa.Table:
    rows: dict[str, list] = {name: [None] for name in VIDEOS_SCHEMA.names}
    rows.update(video_id=[video_id], uri=[f"footage/{video_id}.mp4"], status=["ok"], num_clips=[2])
    return pa.table(rows, schema=VIDEOS_SCHEMA)


def build_store(root: Path, files: int = 40, clips_per_file: int = 3, size: int = 3000) -> Store:
    """One small fragment per input file in both tables (as split writes them), then a column stage."""
    store = Store(root)
    root.mkdir(parents=True)
    store.create(VIDEOS)
    store.create(CLIPS)
    for k in range(files):
        store.append(CLIPS, clip_rows(f"v{k:03d}", clips_per_file, size))
        store.append(VIDEOS, video_row(f"v{k:03d}"))
    store.require(CLIPS).add_columns({"sharpness": "end_s * start_s"})
    return store


def snapshot(store: Store) -> tuple[pa.Table, list[bytes]]:
    """Every clip's row id, id and score, sorted by row id, and its blob bytes in the same order."""
    ds = store.require(CLIPS)
    rows = ds.to_table(columns=["clip_id", "sharpness"], with_row_id=True).sort_by("_rowid")
    blobs = [b for _, b in ds.read_blobs("video", ids=rows["_rowid"].to_pylist(), preserve_order=True)]
    return rows, blobs


def referenced_files(uri: str) -> set[str]:
    """data/ files (and blob sidecars) referenced by any version still present."""
    names = set()
    for v in lance.dataset(uri).versions():
        for fragment in lance.dataset(uri, version=v["version"]).get_fragments():
            names |= {d.path.removesuffix(".lance") for d in fragment.data_files()}
    return names


def data_files(uri: str) -> set[str]:
    return {p.name.removesuffix(".lance") for p in (Path(uri) / "data").iterdir()}


def hold_in_subprocess(root: Path, code: str) -> subprocess.Popen:
    """A process that takes a lock with `code` (a `with` line) and holds it until its stdin closes."""
    script = textwrap.dedent(
        f"""
        import sys
        from store.locks import job_lock, maintenance_lock
        {code}:
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.fixture
def store(tmp_path) -> Store:
    return build_store(tmp_path / "store")


CFG = StoreConfig(target_rows_per_fragment=1000, keep_versions=1)


def test_compaction_keeps_every_row_id_and_blob_and_reduces_fragments(store):
    rows_before, blobs_before = snapshot(store)
    assert len(store.require(CLIPS).get_fragments()) == 40
    summary = compact(store, CFG)
    by_table = {t.table: t for t in summary.tables}
    assert by_table[CLIPS].fragments_before == 40 and by_table[CLIPS].fragments_after == 1
    assert by_table[VIDEOS].fragments_after == 1
    rows_after, blobs_after = snapshot(store)
    assert rows_after.equals(rows_before)  # same _rowid -> clip_id, score
    assert blobs_after == blobs_before
    assert len(set(blobs_after)) == 120
    ds = store.require(CLIPS)
    assert {tuple(d.field_names) for d in ds.describe_indices()} == {("clip_id",), ("video_id",)}
    hit = ds.to_table(columns=["clip_id"], filter="clip_id = 'v007:2.000'", with_row_id=True)
    assert (
        hit["_rowid"].to_pylist()
        == rows_before.filter(pc.equal(rows_before["clip_id"], "v007:2.000"))["_rowid"].to_pylist()
    )
    ds.validate()


def test_jobs_compact_only_past_the_fragment_bound(store):
    assert maybe_compact(store, StoreConfig(compact_fragment_bound=0)) is None  # 0 = never
    assert (
        maybe_compact(store, StoreConfig(compact_fragment_bound=40)) is None
    )  # 40 small fragments: not past
    summary = maybe_compact(store, StoreConfig(compact_fragment_bound=39))
    assert summary is not None and not summary.skipped
    assert len(store.require(CLIPS).get_fragments()) == 1
    assert maybe_compact(store, StoreConfig(compact_fragment_bound=39)) is None


def test_vacuum_keeps_latest_and_tagged_versions_readable_and_removes_old_files(store):
    first = lance.dataset(store.clips_uri, version=3)  # create + two appends
    first_rows = first.to_table(columns=["clip_id"])["clip_id"].to_pylist()
    first_blobs = [b for _, b in first.read_blobs("video", indices=[0, 5], preserve_order=True)]
    store.require(CLIPS).tags.create("first", 3)
    rows_before, blobs_before = snapshot(store)
    compact(store, CFG)  # the 40 small fragments now belong to old versions only
    latest = store.require(CLIPS).version

    summary = vacuum(store, CFG)
    clips = next(t for t in summary.tables if t.table == CLIPS)
    assert clips.kept == (3, latest) and clips.tags == ("first",) and clips.files_removed > 0
    assert [v["version"] for v in store.versions(CLIPS)] == [3, latest]
    assert data_files(store.clips_uri) == referenced_files(store.clips_uri)  # nothing unreferenced left
    assert len(data_files(store.clips_uri)) == 3  # the compacted file and the two of version 3

    # the latest version: plain lance, pandas, DuckDB
    assert snapshot(store) == (rows_before, blobs_before)
    ds = lance.dataset(store.clips_uri)
    frame = ds.to_table().to_pandas()
    assert len(frame) == 120 and set(frame["clip_id"]) == set(rows_before["clip_id"].to_pylist())
    assert duckdb.sql("select count(*), count(distinct clip_id) from ds").fetchall() == [(120, 120)]
    # the tagged version: same three readers
    tagged = lance.dataset(store.clips_uri, version="first")
    assert tagged.to_table(columns=["clip_id"])["clip_id"].to_pylist() == first_rows
    assert [b for _, b in tagged.read_blobs("video", indices=[0, 5], preserve_order=True)] == first_blobs
    assert len(tagged.to_table().to_pandas()) == 6
    assert duckdb.sql("select count(*) from tagged").fetchall() == [(6,)]


def test_vacuum_keeps_the_configured_history(store):
    versions = [v["version"] for v in store.versions(CLIPS)]
    vacuum(store, StoreConfig(keep_versions=5))
    assert [v["version"] for v in store.versions(CLIPS)] == versions[-5:]
    vacuum(store, StoreConfig(keep_versions=1, keep_days=1))  # all younger than a day: all kept
    assert [v["version"] for v in store.versions(CLIPS)] == versions[-5:]


def test_vacuum_removes_merged_staging_and_keeps_what_a_rerun_resumes_from(store):
    staging = store.root / "staging"

    def stage(name: str) -> None:
        lance.write_dataset(
            pa.table({"clip_rowid": pa.array([0, 1], pa.uint64()), "x": [1.0, 2.0]}),
            str(staging / f"{name}.lance"),
        )

    def record(name: str, at: str) -> None:
        store.require(CLIPS).update_metadata(
            {f"reelforge.stage.{name}": json.dumps({"stage": name, "at": at})}
        )

    stage("caption")  # a run killed after the stage's last merge: its newer rows are not merged
    record("caption", "2001-01-01T00:00:00+00:00")
    stage("encode")  # never merged at all
    stage("score")  # merged, but killed before removing its staging
    record("score", time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 1)))
    (staging / "split_pending.json").write_text("[]")
    (staging / ".dedup.lance.removing").mkdir()  # left by a vacuum killed while removing

    assert {k: v["merged"] for k, v in stats(store)["staging"].items()} == {
        "caption": False,
        "encode": False,
        "score": True,
    }
    summary = vacuum(store, CFG)
    assert summary.staging_removed == ("score",) and summary.staging_kept == ("caption", "encode")
    assert sorted(p.name for p in staging.iterdir()) == [
        "caption.lance",
        "encode.lance",
        "split_pending.json",
    ]
    assert lance.dataset(str(staging / "caption.lance")).count_rows() == 2


def test_maintenance_refuses_in_one_line_while_a_job_holds_the_store(store):
    proc = hold_in_subprocess(store.root, "with job_lock(sys.argv[1], 'score')")
    try:
        for run in (compact, vacuum):
            with pytest.raises(StoreError) as refused:
                run(store, CFG)
            message = str(refused.value)
            assert "\n" not in message
            assert f"in use by a running job (score, pid {proc.pid})" in message
            assert message.endswith("run maintenance when it has finished")
        skipped = maybe_compact(store, StoreConfig(compact_fragment_bound=1))
        assert skipped is not None and skipped.skipped and len(skipped.lines()) == 1
        with job_lock(store.root, "report"):  # jobs share the store
            pass
        assert len(store.require(CLIPS).get_fragments()) == 40
    finally:
        release(proc)
    assert compact(store, CFG).tables  # the holder is gone: maintenance runs


def test_maintenance_refuses_while_other_maintenance_runs_and_after_a_killed_job_does_not(store):
    proc = hold_in_subprocess(store.root, "with maintenance_lock(sys.argv[1], 'vacuum')")
    try:
        with pytest.raises(StoreError, match=rf"being maintained \(vacuum, pid {proc.pid}\)"):
            compact(store, CFG)
    finally:
        release(proc)
    killed = hold_in_subprocess(store.root, "with job_lock(sys.argv[1], 'split')")
    killed.kill()  # its lock goes with it; its holder record stays behind
    killed.wait()
    assert list((store.root / "_locks").glob("job.*.json"))
    assert compact(store, CFG).tables
    assert not list((store.root / "_locks").glob("*.json"))


KILL_SCRIPT = """
import sys
from store.config import StoreConfig
from store.lance_store import Store
from store.maintenance import compact
print("go", flush=True)
compact(Store(sys.argv[1]), StoreConfig(target_rows_per_fragment=100_000))
print("done", flush=True)
"""


@pytest.mark.slow
def test_compaction_killed_midway_loses_no_committed_row_and_a_rerun_completes(tmp_path):
    store = build_store(tmp_path / "store", files=200, clips_per_file=2, size=50_000)
    rows_before, blobs_before = snapshot(store)
    before_files = data_files(store.clips_uri)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(store.root)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    # kill as soon as compaction has started writing its output (a new file in clips' data folder)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not (data_files(store.clips_uri) - before_files):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    store.require(CLIPS).validate()
    assert snapshot(store) == (rows_before, blobs_before)  # every committed row, same ids, same bytes
    summary = compact(store, CFG)  # the re-run completes (the killed holder's lock went with it)
    assert {t.table: t.fragments_after for t in summary.tables} == {VIDEOS: 1, CLIPS: 1}
    assert snapshot(store) == (rows_before, blobs_before)
    vacuum(store, CFG)  # also removes what the killed run wrote and never committed
    assert data_files(store.clips_uri) == referenced_files(store.clips_uri)
    assert snapshot(store) == (rows_before, blobs_before)


def test_other_schema_version_and_missing_tables_are_one_line_errors(tmp_path):
    old = Store(tmp_path / "old")
    for table in (VIDEOS, CLIPS):
        schema = contract.schema(table).with_metadata({b"reelforge.schema_version": b"0"})
        lance.write_dataset(schema.empty_table(), old.uri(table), schema=schema)
    before = sorted(str(p) for p in old.root.rglob("*"))
    half = Store(tmp_path / "half")
    half.root.mkdir()
    half.create(CLIPS)
    cases = [
        (old, "schema version 0"),
        (half, "no videos table"),
        (Store(tmp_path / "none"), "no clips table"),
    ]
    for target, expected in cases:
        for run in (stats, lambda s: compact(s, CFG), lambda s: vacuum(s, CFG)):
            with pytest.raises(StoreError) as refused:
                run(target)
            assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert sorted(str(p) for p in old.root.rglob("*")) == before  # refused before touching anything
    assert not (tmp_path / "none").exists()


def test_ensure_indices_creates_extends_and_is_free_when_nothing_changed(store):
    assert sorted(ensure_indices(store)) == [
        "clips.clip_id_idx created",
        "clips.video_id_idx created",
        "videos.video_id_idx created",
    ]
    version = store.require(CLIPS).version
    assert ensure_indices(store) == []
    assert store.require(CLIPS).version == version  # no commit when nothing changed
    store.append(CLIPS, clip_rows("late", 2, 100))
    assert sorted(ensure_indices(store)) == ["clips.clip_id_idx extended", "clips.video_id_idx extended"]
    indices = stats(store)["tables"][CLIPS]["indices"]
    assert {i["name"]: (i["rows_indexed"], i["unindexed_fragments"]) for i in indices} == {
        "clip_id_idx": (122, 0),
        "video_id_idx": (122, 0),
    }


def test_stats_counts_rows_fragments_versions_and_bytes(store):
    store.require(CLIPS).tags.create("first", 3)
    ensure_indices(store)
    found = stats(store)
    clips = found["tables"][CLIPS]
    assert (clips["rows"], clips["fragments"], clips["tags"]) == (120, 40, {"first": 3})
    assert (
        clips["versions"] == len(store.versions(CLIPS)) and clips["version"] == store.require(CLIPS).version
    )
    assert clips["columns"]["video"] >= 120 * 3000  # blob payloads are counted
    assert clips["columns"]["sharpness"] > 0 and clips["columns"]["uri"] == 0
    assert clips["bytes_on_disk"] >= clips["bytes_latest"] >= clips["columns"]["video"]
    assert found["tables"][VIDEOS]["rows"] == 40
    text = format_stats(found)
    assert "clips.clip_id_idx" in text and "first=3" in text
    json.dumps(found)  # --json needs plain data


def test_cli_store_commands(store, capsys):
    ensure_indices(store)
    assert main(["store", "stats", "--root", str(store.root)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("table"))
    assert header.split() == [
        "table",
        "version",
        "rows",
        "fragments",
        "versions",
        "tags",
        "latest",
        "on",
        "disk",
    ]
    clips_line = next(line for line in out.splitlines() if line.startswith("clips "))
    assert clips_line.split()[2:4] == ["120", "40"]
    assert "videos.video_id_idx" in out and "video " in out

    assert main(["store", "stats", "--json", "--root", str(store.root)]) == 0
    assert json.loads(capsys.readouterr().out)["tables"]["clips"]["rows"] == 120

    assert main(["store", "compact", "--root", str(store.root)]) == 0
    assert "clips: 120 rows, fragments 40 -> 1" in capsys.readouterr().out
    proc = hold_in_subprocess(store.root, "with job_lock(sys.argv[1], 'caption')")
    try:
        assert main(["store", "vacuum", "--root", str(store.root)]) == 2
    finally:
        release(proc)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "running job (caption" in err
    assert main(["store", "vacuum", "--root", str(store.root), "--set", "store.keep_versions=1"]) == 0
    assert "vacuum: clips: versions" in capsys.readouterr().out


def test_store_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown key .store.keep_version.*keep_versions"):
        parse_config({"store": {"keep_version": 3}})
    with pytest.raises(
        ConfigError, match=r"store\.keep_versions: Input should be greater than or equal to 1"
    ):
        parse_config({"store": {"keep_versions": 0}})
    cfg = parse_config({"store": {"root": "x", "compact_fragment_bound": 10}}).store
    assert (cfg.root, cfg.compact_fragment_bound, cfg.keep_versions) == (Path("x"), 10, 5)


def test_indices_made_on_empty_tables_cover_rows_appended_later(tmp_path):
    store = Store(tmp_path / "store")
    store.root.mkdir()
    store.create(CLIPS)
    store.create(VIDEOS)
    assert len(ensure_indices(store)) == 3
    store.append(CLIPS, clip_rows("a", 3, 100))
    assert sorted(ensure_indices(store)) == ["clips.clip_id_idx extended", "clips.video_id_idx extended"]
    plan = store.require(CLIPS).scanner(filter="clip_id = 'a:1.000'", columns=["clip_id"]).explain_plan()
    assert "ScalarIndexQuery" in plan

"""Round trips on a real Lance dataset on disk."""

import os
import subprocess
import sys
import textwrap

import lance
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from store import (
    CLIPS,
    CLIPS_SCHEMA,
    ROW_ID,
    VIDEOS,
    VIDEOS_SCHEMA,
    ClipReader,
    ColumnStaging,
    Store,
    StoreError,
)


def cid(video_id: str, i: int) -> str:
    return f"{video_id}:{i:.3f}"


def _clips(video_id: str, n: int, size: int = 70_000) -> pa.Table:
    rows = {name: [None] * n for name in CLIPS_SCHEMA.names}
    rows.update(
        clip_id=[cid(video_id, i) for i in range(n)],
        video_id=[video_id] * n,
        clip_index=list(range(n)),
        start_s=[float(i) for i in range(n)],
        end_s=[i + 1.0 for i in range(n)],
        video=[bytes([i]) * size for i in range(n)],
        thumbnail=[b"jpeg"] * n,
    )
    return pa.table(rows, schema=CLIPS_SCHEMA)


def keyed(store: Store, table: pa.Table) -> pa.Table:
    """`table` (keyed by clip_id) with each clip's stable row id, as a stage's work list carries it."""
    ids = pa.Table.from_batches(list(store.scan(CLIPS, ["clip_id"])))
    return table.join(ids, "clip_id", join_type="inner").sort_by(ROW_ID)


def _video(video_id: str, status: str = "ok", error: str | None = None) -> pa.Table:
    rows = {name: [None] for name in VIDEOS_SCHEMA.names}
    rows.update(video_id=[video_id], uri=[f"/footage/{video_id}.mp4"], status=[status], error=[error])
    return pa.table(rows, schema=VIDEOS_SCHEMA)


def test_blob_column_round_trip_and_projection(tmp_store):
    tmp_store.append(CLIPS, _clips("a", 3))
    tmp_store.append(CLIPS, _clips("b", 2))
    ds = tmp_store.clips_dataset()
    assert ds.count_rows() == 5
    assert "blob" in str(ds.schema.field("video").type)  # stored as a Lance blob, not inline binary
    got = tmp_store.read_clip_bytes([cid("a", 2), cid("b", 0)])
    assert got == {cid("a", 2): bytes([2]) * 70_000, cid("b", 0): bytes([0]) * 70_000}
    table = tmp_store.read_clips(["clip_id", "start_s"], filter="video_id = 'b'")
    assert table.column_names == ["clip_id", "start_s"]
    assert table.column("clip_id").to_pylist() == [cid("b", 0), cid("b", 1)]


def test_orphan_clips_of_an_unfinished_video_are_removed(tmp_store):
    tmp_store.create(CLIPS)
    tmp_store.commit_split(tmp_store_fragments(tmp_store, _clips("done", 2)), _video("done"))
    tmp_store.journal_pending(["killed"])
    tmp_store.append(CLIPS, _clips("killed", 3))  # the job died before committing this video's row
    assert tmp_store.remove_orphan_clips() == 1
    assert tmp_store.remove_orphan_clips() == 0  # the journal is cleared
    assert set(tmp_store.read_clips(["video_id"]).column(0).to_pylist()) == {"done"}
    assert tmp_store.done_video_ids() == {"done"}


def tmp_store_fragments(store: Store, table: pa.Table) -> list[str]:
    from store import write_fragment_json

    return write_fragment_json(store.clips_uri, table, CLIPS_SCHEMA)


def test_reads_by_row_id_equal_reads_by_clip_id(tmp_store):
    for v in "abc":
        tmp_store.append(CLIPS, _clips(v, 4, size=100 + ord(v)))
    work = tmp_store.work_list(columns=("clip_id", "start_s"))
    reader = ClipReader.at(tmp_store.root, work.version)
    rows = work.rows.take([7, 0, 11, 3])  # any order, across fragments
    by_row = reader.blobs(rows[ROW_ID].to_pylist())
    by_id = tmp_store.read_clip_bytes(rows["clip_id"].to_pylist())
    assert by_row == [by_id[c] for c in rows["clip_id"].to_pylist()]
    cols = reader.columns(rows[ROW_ID].to_pylist(), ["clip_id", "start_s"])
    assert cols["clip_id"].to_pylist() == rows["clip_id"].to_pylist()
    assert cols["start_s"].to_pylist() == rows["start_s"].to_pylist()


def test_add_columns_replaces_a_stage_without_rewriting_blobs(tmp_store):
    tmp_store.append(CLIPS, _clips("a", 4))
    blob_files_before = _blob_files(tmp_store)
    first = tmp_store.add_columns(
        keyed(tmp_store, pa.table({"clip_id": [cid("a", 0), cid("a", 1)], "sharpness": [1.5, 2.5]})),
        stage="score",
        config={"threshold": 1},
        models={"sharpness": "laplacian-v1"},
    )
    tmp_store.add_columns(
        keyed(tmp_store, pa.table({"clip_id": [cid("a", 3)], "sharpness": [9.0]})),
        stage="score",
        config={"threshold": 2},
    )
    table = tmp_store.read_clips(["clip_id", "sharpness"]).to_pydict()
    assert table["sharpness"] == [None, None, None, 9.0]  # replaced, not merged with the old values
    assert _blob_files(tmp_store) == blob_files_before
    record = tmp_store.stage_records()["score"]
    assert record["config"] == {"threshold": 2} and record["columns"] == ["sharpness"]
    # every version opens, older ones with their own columns
    for v in tmp_store.versions():
        lance.dataset(tmp_store.clips_uri, version=v["version"]).count_rows()
    old = lance.dataset(tmp_store.clips_uri, version=first)
    assert old.to_table(columns=["sharpness"]).column(0).to_pylist()[:2] == [1.5, 2.5]
    with pytest.raises(StoreError, match="unknown stage 'bad'"):
        tmp_store.add_columns(keyed(tmp_store, pa.table({"clip_id": [cid("a", 0)], "x": [1]})), "bad", {})
    with pytest.raises(StoreError, match="does not declare"):
        tmp_store.add_columns(
            keyed(tmp_store, pa.table({"clip_id": [cid("a", 0)], "video": [b""]})), "score", {}
        )


def test_staging_resumes_exactly_once(tmp_store):
    tmp_store.append(CLIPS, _clips("a", 3))
    staging = ColumnStaging(tmp_store, "caption")
    first = keyed(tmp_store, pa.table({"clip_id": [cid("a", 0)], "caption": ["first"]}))
    staging.append(first)
    # a re-run after a kill sees what is done and a retried batch does not duplicate a clip
    assert staging.done_row_ids().to_pylist() == first[ROW_ID].to_pylist()
    staging.append(
        keyed(tmp_store, pa.table({"clip_id": [cid("a", 0), cid("a", 1)], "caption": ["again", "b"]}))
    )
    staging.merge_into_clips({"model": "tiny"})
    captions = tmp_store.read_clips(["clip_id", "caption"]).sort_by("clip_id").to_pydict()
    assert captions["caption"] == ["again", "b", None]
    assert tmp_store.clips_dataset().count_rows() == 3
    staging.reset()
    assert staging.done_row_ids() is None


def test_staging_stays_compact_over_many_appends(tmp_store):
    """A long pass appends thousands of small batches; the staging's fragments and versions stay
    bounded (a commit's cost grows with them) and every staged row is still there, in order."""
    import numpy as np

    from store.column_staging import _STAGING_FRAGMENT_BOUND

    staging = ColumnStaging(tmp_store, "score")
    appends, rows = 3 * _STAGING_FRAGMENT_BOUND, 4
    for i in range(appends):
        ids = np.arange(i * rows, (i + 1) * rows, dtype=np.uint64)
        staging.append(pa.table({ROW_ID: ids, "clip_id": [f"c{j}" for j in ids], "motion": ids / 10.0}))
    ds = lance.dataset(staging.uri)
    assert len(ds.get_fragments()) <= _STAGING_FRAGMENT_BOUND
    assert len(ds.versions()) <= _STAGING_FRAGMENT_BOUND
    assert staging.done_row_ids().to_pylist() == list(range(appends * rows))
    assert ds.to_table(columns=["motion"])["motion"].to_pylist() == [j / 10.0 for j in range(appends * rows)]


def test_merge_updates_only_the_staged_rows_of_existing_columns(tmp_store):
    """A second run (clips added by a later split) leaves the earlier values as they are."""
    tmp_store.append(CLIPS, _clips("a", 3))
    staging = ColumnStaging(tmp_store, "caption")
    staging.append(keyed(tmp_store, pa.table({"clip_id": [cid("a", 0), cid("a", 1)], "caption": ["x", "y"]})))
    staging.merge_into_clips({})
    staging.reset()
    tmp_store.append(CLIPS, _clips("b", 2))
    staging.append(keyed(tmp_store, pa.table({"clip_id": [cid("b", 1), cid("a", 2)], "caption": ["z", "w"]})))
    staging.merge_into_clips({})
    got = dict(zip(*tmp_store.read_clips(["clip_id", "caption"]).to_pydict().values(), strict=True))
    assert got == {cid("a", 0): "x", cid("a", 1): "y", cid("a", 2): "w", cid("b", 0): None, cid("b", 1): "z"}
    assert pc.count_distinct(tmp_store.read_clips(["clip_id"])["clip_id"]).as_py() == 5


def test_other_schema_version_is_refused(tmp_path):
    store = Store(tmp_path)
    schema = CLIPS_SCHEMA.with_metadata({"reelforge.schema_version": "0"})
    lance.write_dataset(schema.empty_table(), store.clips_uri, schema=schema)
    with pytest.raises(StoreError, match="schema version 0"):
        store.clips_dataset()


def test_tables_read_without_reelforge(tmp_store):
    """Plain lance, pandas, DuckDB and Polars read the tables; the script imports no reelforge module."""
    tmp_store.append(CLIPS, _clips("a", 3))
    tmp_store.append(VIDEOS, _video("a"))
    tmp_store.append(VIDEOS, _video("bad", status="error", error="zero-byte file"))
    tmp_store.add_columns(
        keyed(tmp_store, pa.table({"clip_id": [cid("a", 1)], "motion": [0.25]})), "score", {}
    )
    script = textwrap.dedent(
        f"""
        import sys, lance, duckdb, polars as pl
        clips = lance.dataset({tmp_store.clips_uri!r})
        videos = lance.dataset({tmp_store.videos_uri!r})
        df = clips.to_table(columns=["clip_id", "motion"]).to_pandas()
        assert df.motion.notna().sum() == 1, df
        errors = duckdb.sql("select video_id, error from videos where status = 'error'").fetchall()
        assert errors == [("bad", "zero-byte file")], errors
        n = duckdb.sql("select count(*) from clips where start_s >= 1").fetchall()[0][0]
        assert n == 2, n
        pl_df = pl.scan_pyarrow_dataset(clips).select("clip_id", "end_s").collect()
        assert pl_df.height == 3
        blob = clips.read_blobs("video", indices=[2])[0][1]
        assert blob == bytes([2]) * 70_000
        assert not any(m.split(".")[0] in ("pipelines", "curate", "caption", "train") for m in sys.modules)
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_store.root
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def _blob_files(store: Store) -> dict[str, int]:
    data = os.path.join(store.clips_uri, "data")
    return {
        os.path.relpath(os.path.join(d, f), data): os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(data)
        for f in files
        if f.endswith(".blob") or _is_blob_bearing(os.path.join(d, f))
    }


def _is_blob_bearing(path: str) -> bool:
    return os.path.getsize(path) > 100_000  # the 70 KB payloads live in these files, new columns are tiny

"""Killed Ray workers and killed jobs: the result equals a clean run, nothing lost, nothing twice.

A clean split + score of the built-in sample footage is the reference. Then:
- workers: a thread SIGKILLs Ray workers of this process while they run split / score tasks;
- jobs: `reelforge split|score|caption` runs as a subprocess, is SIGKILLed as soon as it has
  committed its first results, and is run again with the same command.
Scoring uses the model-free scorers (motion, quality, frame-signature dedup) so runs stay short;
the resume logic under test is the same for the model stages.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.config import load_config
from pipelines.jobs.caption import run_caption
from pipelines.jobs.score import run_score
from pipelines.jobs.split import run_split
from store import Store

from .chat_server import ChatServer
from .faults import (
    WorkerKiller,
    caption_command,
    cli_command,
    committed_versions,
    kill_when,
    open_every_version,
    reap,
    run_job,
    start_job,
)

pytestmark = pytest.mark.slow

SPLIT_SET = ["split.commit_every=1"]
SCORE_SET = [
    "score.aesthetic.enabled=false",
    "score.embedding.enabled=false",
    "score.ocr.enabled=false",
    "score.dedup.signature=frame_signature",
    "score.decode_batch_size=2",
    "score.commit_every=2",
]
VIDEO_COLUMNS = ["video_id", "uri", "status", "error", "num_clips", "num_frames", "boundaries"]
CLIP_KEY_COLUMNS = [
    "clip_id",
    "video_id",
    "start_s",
    "end_s",
    "start_frame",
    "end_frame",
    "num_frames",
]  # not size_bytes: libx264 output differs by a few bytes from run to run (see the reliability report)


def config(root: Path):
    return load_config("demo", [f"store.root={root}", *SPLIT_SET, *SCORE_SET])


def cli_args(command: str, root: Path, ray_tmp: str, *extra: str) -> list[str]:
    sets = [a for s in [*SPLIT_SET, *SCORE_SET] for a in ("--set", s)]
    return [
        command,
        "--config",
        "demo",
        "--root",
        str(root),
        *sets,
        "--set",
        f"ray.temp_dir={ray_tmp}",
        *extra,
    ]


def sorted_table(store: Store, table: str, columns: list[str]) -> pa.Table:
    key = "clip_id" if table == "clips" else "uri"
    return store.read(table, columns).sort_by(key)


def score_columns(store: Store) -> list[str]:
    base = set(Store(store.root).require("clips").schema.names)
    from store import CLIPS_SCHEMA

    return ["clip_id", *sorted(base - set(CLIPS_SCHEMA.names))]


def assert_same_split(store: Store, reference: Store) -> None:
    clips = store.read_clips(columns=["clip_id"])
    assert pc.count_distinct(clips["clip_id"]).as_py() == clips.num_rows, "duplicate clip ids"
    assert sorted_table(store, "clips", CLIP_KEY_COLUMNS).equals(
        sorted_table(reference, "clips", CLIP_KEY_COLUMNS)
    )
    assert sorted_table(store, "videos", VIDEO_COLUMNS).equals(
        sorted_table(reference, "videos", VIDEO_COLUMNS)
    )


def assert_same_scores(store: Store, reference: Store) -> None:
    columns = score_columns(reference)
    assert score_columns(store) == columns
    ours, theirs = sorted_table(store, "clips", columns), sorted_table(reference, "clips", columns)
    assert ours.num_rows == theirs.num_rows
    for name in columns:
        a, b = ours[name], theirs[name]
        if pa.types.is_floating(a.type):
            # OpenCV's threaded kernels sum in a varying order: equal up to float rounding, not bit for bit.
            assert a.is_null().equals(b.is_null()), name
            np.testing.assert_allclose(
                a.to_numpy(zero_copy_only=False),
                b.to_numpy(zero_copy_only=False),
                rtol=1e-6,
                atol=1e-12,
                err_msg=name,
            )
        else:
            assert a.equals(b), name


def assert_every_version_opens(store: Store) -> None:
    for uri in (
        store.videos_uri,
        store.clips_uri,
        *(str(p) for p in (store.root / "staging").glob("*.lance")),
    ):
        counts = open_every_version(uri)
        assert counts, uri


@pytest.fixture(scope="module")
def reference(ray_session, sample_footage, tmp_path_factory):
    """Clean runs: `split` (the store right after split) and `scored` (after split + score)."""
    split_root = tmp_path_factory.mktemp("ref_split")
    run_split(config(split_root), [str(sample_footage)], progress=False)
    scored_root = tmp_path_factory.mktemp("ref_scored") / "store"
    shutil.copytree(split_root, scored_root)
    run_score(config(scored_root), progress=False)
    return {"split": Store(split_root), "scored": Store(scored_root)}


@pytest.fixture
def ray_tmp():
    path = tempfile.mkdtemp(prefix="rfk-")  # short: Ray's socket paths must stay under ~100 chars
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_reference_has_clips_and_scores(reference):
    assert reference["split"].read_clips(columns=["clip_id"]).num_rows >= 8
    scored = reference["scored"].read_clips(columns=["clip_id", "motion", "score_error"])
    assert pc.all(pc.is_valid(scored["motion"])).as_py()


# ---- killed workers ------------------------------------------------------------------------------------


def test_split_survives_killed_workers(reference, sample_footage, tmp_path):
    killer = WorkerKiller(["ray::Map(task)"], kills=2)
    killer.start()
    try:
        summary = run_split(config(tmp_path), [str(sample_footage)], progress=False)
    finally:
        killed = killer.stop()
    assert killed, "no split worker was caught running"
    print(f"\nsplit: killed {len(killed)} worker(s) {killed}; {summary.lines()[0]}")
    assert_same_split(Store(tmp_path), reference["split"])


def test_score_survives_killed_workers(reference, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(reference["split"].root, root)
    killer = WorkerKiller(["ray::MapBatches(decode_and_measure)"], kills=2, busy_s=0.2)
    killer.start()
    try:
        summary = run_score(config(root), progress=False)
    finally:
        killed = killer.stop()
    assert killed, "no score worker was caught running"
    print(f"\nscore: killed {len(killed)} worker(s) {killed}; {summary.lines()[0]}")
    assert_same_scores(Store(root), reference["scored"])


# ---- killed jobs -----------------------------------------------------------------------------------------


def test_split_job_killed_then_rerun_equals_clean_run(reference, sample_footage, tmp_path, ray_tmp):
    root = tmp_path / "store"
    log = tmp_path / "split.log"
    store = Store(root)
    args = cli_args("split", root, ray_tmp, "--set", "split.concurrency=1", str(sample_footage))
    job = start_job(cli_command(args), log)
    try:
        # The first file committed (videos v1 = created empty, v2 = the first file's row): kill.
        killed = kill_when(job, lambda: committed_versions(store.videos_uri) >= 2)
    finally:
        reap(job)
    assert killed, f"the split job ended before it could be killed:\n{log.read_text()[-2000:]}"
    done_at_kill = store.read("videos", ["uri"]).num_rows
    assert 0 < done_at_kill < 4
    assert run_job(cli_command(args), log) == 0, log.read_text()[-3000:]
    assert_same_split(store, reference["split"])
    assert_every_version_opens(store)
    print(
        f"\nsplit job: killed after {done_at_kill} file(s), rerun completed; {log.read_text().splitlines()[-1]}"
    )


def test_score_job_killed_then_rerun_equals_clean_run(reference, tmp_path, ray_tmp):
    root = tmp_path / "store"
    shutil.copytree(reference["split"].root, root)
    log = tmp_path / "score.log"
    store = Store(root)
    staging = root / "staging" / "score.lance"
    args = cli_args("score", root, ray_tmp)
    job = start_job(cli_command(args), log)
    try:
        killed = kill_when(job, lambda: committed_versions(staging) >= 1)
    finally:
        reap(job)
    assert killed, f"the score job ended before it could be killed:\n{log.read_text()[-2000:]}"
    staged_at_kill = open_every_version(staging)
    assert run_job(cli_command(args), log) == 0, log.read_text()[-3000:]
    assert_same_scores(store, reference["scored"])
    assert_every_version_opens(store)
    total = store.read_clips(columns=["clip_id"]).num_rows
    assert max(staged_at_kill.values()) < total
    print(f"\nscore job: killed with {max(staged_at_kill.values())}/{total} clips staged; rerun completed")


CAPTION_COLUMNS = [
    "clip_id",
    "caption",
    "caption_error",
    "caption_model",
    "caption_prompt_version",
    "caption_params",
]


def test_caption_job_killed_then_rerun_equals_clean_run(reference, tmp_path, ray_tmp):
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(reference["split"].root, clean_root)
    shutil.copytree(reference["split"].root, killed_root)
    staging = killed_root / "staging" / "caption.lance"
    log = tmp_path / "caption.log"
    # One request at a time, each taking 0.3 s: the job is still running after its first commit.
    with ChatServer(delay_s=0.3) as server:
        sets = [
            "caption.engine=openai",
            "caption.only_selected=false",  # split only: no filter has run
            "caption.openai.launch_server=false",
            "caption.model=tiny-test-vlm",
            f"caption.openai.base_url=http://127.0.0.1:{server.port}/v1",
            "caption.openai.retries=0",
            "caption.openai.concurrency=1",
            "caption.frames.num_frames=2",
            "caption.batch_size=2",
            "caption.flush_every=1",
            "caption.decode_concurrency=1",
        ]
        run_caption(load_config("demo", [f"store.root={clean_root}", *sets]), progress=False)
        command = caption_command([f"store.root={killed_root}", f"ray.temp_dir={ray_tmp}", *sets])
        job = start_job(command, log)
        try:
            killed = kill_when(job, lambda: committed_versions(staging) >= 1)
        finally:
            reap(job)
        assert killed, f"the caption job ended before it could be killed:\n{log.read_text()[-2000:]}"
        staged_at_kill = max(open_every_version(staging).values())
        assert run_job(command, log) == 0, log.read_text()[-3000:]
    killed_store, clean_store = Store(killed_root), Store(clean_root)
    ours = killed_store.read_clips(columns=CAPTION_COLUMNS).sort_by("clip_id")
    theirs = clean_store.read_clips(columns=CAPTION_COLUMNS).sort_by("clip_id")
    assert pc.count_distinct(ours["clip_id"]).as_py() == ours.num_rows
    assert pc.all(pc.is_valid(ours["caption"])).as_py(), ours["caption_error"].to_pylist()
    assert ours.equals(theirs)
    staged = killed_store.read_clips(columns=["clip_id"]).num_rows
    assert staged_at_kill < staged
    assert_every_version_opens(killed_store)
    print(f"\ncaption job: killed with {staged_at_kill}/{staged} clips staged; rerun completed")

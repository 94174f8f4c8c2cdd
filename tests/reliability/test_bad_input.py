"""The split job over every kind of bad input: it returns, records each file once, keeps what decodes.

One real split run (Ray Data, in-process on the session's Ray) over the generated corpus of
tests/reliability/corpus.py plus ../shared/footage/broken and formats/ when present.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from curate.probe import reason_of
from media import decode_check
from pipelines.config import load_config
from pipelines.jobs.split import run_split
from store import Store

from .corpus import Expect, build_corpus

pytestmark = pytest.mark.slow

# Real files from ../shared/footage/broken (see its corrupt_samples.json) and what they must give.
SHARED_BROKEN = {
    # 1 bad packet of 50: the other frames decode and give a clip; the row names the loss.
    "corrupted.mp4": Expect("ok", frozenset({"corrupt_packets"}), "some"),
    # 0 of 51 frames decode.
    "invalid-bitstream.webm": Expect("error", frozenset({"undecodable_bitstream"}), "none"),
    # The mdat box runs past the end of the file; 30 frames decode and are kept.
    "sample_mdat_too_long.mp4": Expect("ok", frozenset(), "some"),
}


@pytest.fixture(scope="module")
def corpus_run(ray_session, tmp_path_factory, request):
    corpus = tmp_path_factory.mktemp("bad_corpus")
    expected = {str(corpus / name): e for name, e in build_corpus(corpus).items()}
    inputs = [str(corpus)]
    try:
        shared = request.getfixturevalue("shared_footage")
    except pytest.skip.Exception:
        shared = None
    if shared is not None:
        inputs += [str(shared / "broken"), str(shared / "formats")]
        expected |= {str(shared / "broken" / n): e for n, e in SHARED_BROKEN.items()}
    store_root = tmp_path_factory.mktemp("bad_store")
    # Short files and the 4K sample keep the run small; clip rules stay at their defaults.
    cfg = load_config("demo", [f"store.root={store_root}"])
    cwd = Path.cwd()
    os.chdir(corpus)  # a name that reached a shell would create PWNED here
    try:
        summary = run_split(cfg, inputs, progress=False)
    finally:
        os.chdir(cwd)
    store = Store(store_root)
    videos = store.read("videos").to_pylist()
    clips = store.read_clips(columns=["clip_id", "video_id", "uri", "num_frames"])
    return {
        "corpus": corpus,
        "shared": shared,
        "expected": expected,
        "summary": summary,
        "videos": videos,
        "clips": clips,
        "store": store,
    }


def _inputs_of(run) -> set[str]:
    found = {str(p) for p in run["corpus"].iterdir()}
    if run["shared"] is not None:
        for sub in ("broken", "formats"):
            found |= {str(p) for p in (run["shared"] / sub).iterdir() if p.suffix != ".json"}
    return found


def test_every_input_is_recorded_exactly_once(corpus_run):
    uris = Counter(row["uri"] for row in corpus_run["videos"])
    assert {u: n for u, n in uris.items() if n > 1} == {}
    assert set(uris) == _inputs_of(corpus_run)
    summary = corpus_run["summary"]
    assert summary.files == len(uris) and summary.ok + summary.failed == len(uris)
    assert summary.duplicates == []


def test_clips_belong_to_recorded_files_and_are_unique(corpus_run):
    clips = corpus_run["clips"]
    assert pc.count_distinct(clips["clip_id"]).as_py() == clips.num_rows
    by_video = Counter(clips["video_id"].to_pylist())
    rows = {row["video_id"]: row for row in corpus_run["videos"]}
    assert set(by_video) <= set(rows)
    for video_id, row in rows.items():
        assert row["num_clips"] == by_video.get(video_id, 0), row["uri"]
        if row["status"] == "error":
            assert by_video.get(video_id, 0) == 0 and row["error"], row["uri"]
        elif not by_video.get(video_id):
            # An ok file without clips must say why (e.g. too short).
            assert row["error"], row["uri"]


def test_each_bad_file_has_its_specific_reason(corpus_run):
    rows = {row["uri"]: row for row in corpus_run["videos"]}
    clips_per_uri = Counter(corpus_run["clips"]["uri"].to_pylist())
    wrong = {}
    for uri, expect in corpus_run["expected"].items():
        row = rows[uri]
        reasons = {reason_of(part) for part in (row["error"] or "").split(" | ") if part}
        got_clips = "some" if clips_per_uri.get(uri) else "none"
        reason_ok = bool(reasons & expect.reasons) if expect.reasons else not reasons
        if row["status"] != expect.status or got_clips != expect.clips or not reason_ok:
            wrong[Path(uri).name] = (row["status"], got_clips, row["error"])
    assert wrong == {}


def test_error_messages_are_specific(corpus_run):
    generic = {"", "internal_error"}
    for row in corpus_run["videos"]:
        if row["status"] == "error":
            assert reason_of(row["error"]) not in generic, (row["uri"], row["error"])
            assert len(row["error"]) > len(reason_of(row["error"])) + 5, row["error"]  # a detail follows


def test_shared_formats_all_split(corpus_run):
    if corpus_run["shared"] is None:
        pytest.skip("../shared/footage is absent")
    formats = str(corpus_run["shared"] / "formats")
    failed = {
        Path(r["uri"]).name: r["error"]
        for r in corpus_run["videos"]
        if r["uri"].startswith(formats) and r["status"] != "ok"
    }
    assert failed == {}


def test_kept_clips_of_damaged_files_decode_fully(corpus_run):
    store: Store = corpus_run["store"]
    clips = corpus_run["clips"].to_pylist()
    damaged = ("truncated_50.mp4", "truncated_90.mp4", "corrupted.mp4", "sample_mdat_too_long.mp4")
    chosen = [c for c in clips if Path(c["uri"]).name in damaged]
    assert {Path(c["uri"]).name for c in chosen} >= {"truncated_50.mp4", "truncated_90.mp4"}
    data = store.read_clip_bytes([c["clip_id"] for c in chosen])
    for clip in chosen:
        seen = decode_check(data[clip["clip_id"]])
        assert seen.frames == clip["num_frames"] > 0, clip["uri"]
        assert not (seen.bad_packets or seen.demux_error), clip["uri"]


def test_file_names_never_reach_a_shell(corpus_run):
    corpus = corpus_run["corpus"]
    assert not (corpus / "PWNED").exists() and not (corpus / "PWNED2").exists()
    assert not Path("PWNED").exists() and not Path("PWNED2").exists()
    meta = [r for r in corpus_run["videos"] if "touch PWNED" in r["uri"]]
    assert len(meta) == 1 and meta[0]["status"] == "ok" and meta[0]["num_clips"] > 0


def test_reasons_summary_counts_every_failure(corpus_run):
    summary = corpus_run["summary"]
    from_rows = Counter(
        reason_of(part) for r in corpus_run["videos"] for part in (r["error"] or "").split(" | ") if part
    )
    assert dict(summary.reasons) == dict(from_rows)
    print("\nbad-input corpus:", len(corpus_run["videos"]), "files;", dict(sorted(from_rows.items())))

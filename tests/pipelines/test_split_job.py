"""The split Ray job: every input once (clips or an error row), resume without duplicates, scenes-only."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.compute as pc
import pytest

from pipelines.config import PipelineConfig
from pipelines.jobs.split import InputError, resolve_inputs, run_scenes_only, run_split
from store import CLIPS, VIDEOS, Store


def make_inputs(folder, sample_footage):
    """The sample footage plus bad files with video extensions, in a folder."""
    folder.mkdir()
    for video in sample_footage.glob("*.*"):
        if not video.name.endswith(".json"):
            shutil.copyfile(video, folder / video.name)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text named.mkv").write_text("not a video\n" * 50)
    (folder / "random;$(x).webm").write_bytes(os.urandom(50_000))
    os.symlink(folder / "gone.mp4", folder / "dangling.mp4")
    (folder / "readme.txt").write_text("ignored: not a video extension")
    return folder


def config(store_root, **split):
    return PipelineConfig.model_validate({"store": {"root": str(store_root)}, "split": split})


@pytest.mark.slow
def test_split_job_every_input_once_and_resume(tmp_path, sample_footage, ray_session):
    inputs = make_inputs(tmp_path / "in put", sample_footage)
    cfg = config(tmp_path / "store", commit_every=2)
    paths = resolve_inputs([str(inputs)], cfg.input)
    assert len(paths) == 8 and not any(p.endswith(".txt") for p in paths)

    summary = run_split(cfg, [str(inputs)], progress=False)
    store = Store(cfg.store.root)
    videos = store.read(VIDEOS).to_pylist()
    assert sorted(v["uri"] for v in videos) == sorted(paths)  # every input exactly once
    by_name = {os.path.basename(v["uri"]): v for v in videos}
    assert by_name["empty.mp4"]["error"].startswith("empty_file")
    assert by_name["text named.mkv"]["error"].startswith("not_a_media_file")
    assert by_name["random;$(x).webm"]["error"].startswith("not_a_media_file")
    assert by_name["dangling.mp4"]["error"].startswith("file_missing")
    assert all(
        by_name[n]["status"] == "error" and by_name[n]["num_clips"] == 0
        for n in ("empty.mp4", "dangling.mp4")
    )
    cuts = by_name["cuts.mp4"]
    assert cuts["status"] == "ok" and [b["frame"] for b in cuts["boundaries"]] == [50, 100, 150, 200]
    assert cuts["num_clips"] == 5 and cuts["duration_s"] == pytest.approx(10.0)
    assert by_name["vfr.mp4"]["is_vfr"]

    clips = store.read_clips(columns=["clip_id", "video_id", "num_frames", "start_s", "end_s"])
    assert clips.num_rows == summary.clips == sum(v["num_clips"] for v in videos)
    assert pc.count_distinct(clips.column("clip_id")).as_py() == clips.num_rows
    assert (summary.ok, summary.failed) == (4, 4)
    some = clips.column("clip_id").to_pylist()[:2]
    blobs = store.read_clip_bytes(some)
    assert all(blobs[c][4:8] == b"ftyp" for c in some)

    # A second run finds everything done and adds nothing.
    again = run_split(cfg, [str(inputs)], progress=False)
    assert again.skipped == 8 and again.clips == 0
    assert store.read_clips(columns=["clip_id"]).num_rows == clips.num_rows

    # A job killed between the clip commit and the video-row commit: journalled clips without a video row.
    cuts_id = cuts["video_id"]
    store.journal_pending([cuts_id])
    store.require(VIDEOS).delete(f"video_id = '{cuts_id}'")
    resumed = run_split(cfg, [str(inputs)], progress=False)
    assert resumed.orphans_removed == 1 and resumed.skipped == 7 and resumed.clips == 5
    after = store.read_clips(columns=["clip_id"]).column("clip_id").to_pylist()
    assert sorted(after) == sorted(clips.column("clip_id").to_pylist())  # same ids, no duplicates
    assert len(store.read(VIDEOS).to_pylist()) == 8
    assert store.dataset(CLIPS).validate() is None


def test_scenes_only_writes_boundaries_json(tmp_path, sample_footage, ray_session):
    out = tmp_path / "scenes.json"
    cfg = config(tmp_path / "unused-store")
    entries = run_scenes_only(
        cfg, out, [str(sample_footage / "cuts.mp4"), str(sample_footage / "vfr.mp4")], progress=False
    )
    written = json.loads(out.read_text())
    assert written == entries and [os.path.basename(e["path"]) for e in written] == ["cuts.mp4", "vfr.mp4"]
    assert [b["frame"] for b in written[0]["boundaries"]] == [50, 100, 150, 200]
    assert written[1]["boundaries"][0] == {"frame": 45, "seconds": pytest.approx(1.8), "kind": "cut"}
    assert not (tmp_path / "unused-store").exists()


def test_inputs_from_glob_and_list_file(tmp_path, sample_footage):
    listing = tmp_path / "files.txt"
    listing.write_text(f"# sample\n{sample_footage / 'cuts.mp4'}\nmissing.mp4\n")
    cfg = PipelineConfig()
    assert len(resolve_inputs([str(listing)], cfg.input)) == 2  # a listed missing file becomes an error row
    assert len(resolve_inputs([str(sample_footage / "*.mp4")], cfg.input)) == 3
    with pytest.raises(InputError, match="not found"):
        resolve_inputs([str(tmp_path / "nothing-here")], cfg.input)
    with pytest.raises(InputError, match="no video files"):
        resolve_inputs([str(tmp_path)], cfg.input)


@pytest.mark.parametrize("num_cpus", [0.5, 1, 2])
def test_split_task_gives_opencv_its_cpus(tmp_path, sample_footage, num_cpus):
    """OpenCV ignores OMP_NUM_THREADS; a 1-CPU task left at a thread per core takes another task's core."""
    import cv2

    from pipelines.jobs.split_worker import split_one

    store = Store(tmp_path / "store")
    store.root.mkdir()
    store.create(CLIPS)
    before = cv2.getNumThreads()
    cv2.setNumThreads(8)
    try:
        cfg = config(store.root, num_cpus=num_cpus).split
        result = split_one(str(sample_footage / "cuts.mp4"), cfg, store.clips_uri, frozenset())
        assert result["clips"] > 0
        assert cv2.getNumThreads() == max(1, int(num_cpus))
    finally:
        cv2.setNumThreads(before)

"""The one-pass split cuts the same clips as detection followed by a separate extraction pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate import single_pass
from curate.clip_output import ClipFailure
from curate.clip_plan import plan_clips
from curate.extract import extract_clips
from curate.probe import probe_file
from curate.scenes import scan_file
from curate.single_pass import SinglePass
from curate.split_config import SplitConfig
from media.decode import Deadline


def two_pass(path: Path, cfg: SplitConfig) -> list[tuple[int, int, int, bytes, bytes]]:
    probe = probe_file(path, cfg.probe)
    scan = scan_file(path, cfg.detect)
    plans = plan_clips(scan, cfg.clips)
    clips = extract_clips(path, plans, scan, probe.width, probe.height, probe.rotation, cfg.extract)
    return [_key(c) for c in clips]


def one_pass(path: Path, cfg: SplitConfig) -> tuple[SinglePass, list[tuple[int, int, int, bytes, bytes]]]:
    probe = probe_file(path, cfg.probe, decode_sample=False)
    run = SinglePass(path, cfg, probe.width, probe.height, Deadline(None))
    return run, [_key(c) for c in run.run()]


def _key(clip) -> tuple[int, int, int, bytes, bytes]:
    assert not isinstance(clip, ClipFailure), clip.message
    return clip.plan.index, clip.plan.start_frame, clip.plan.end_frame, clip.data, clip.thumbnail


@pytest.mark.parametrize(
    "rules",
    [
        {},
        {"trim_s": 0.0, "min_length_s": 0.5, "max_length_s": 1.5},
        {"long_scenes": "first", "max_length_s": 1.0, "drop_transitions": False},
    ],
)
def test_one_pass_cuts_the_clips_of_two_passes(sample_footage, rules):
    cfg = SplitConfig.model_validate({"clips": rules})
    for name in ("cuts.mp4", "looks.mp4"):
        run, clips = one_pass(sample_footage / name, cfg)
        assert clips and clips == two_pass(sample_footage / name, cfg)
        assert not run.second_pass


def test_thumbnails_do_not_depend_on_when_candidates_are_shrunk(sample_footage, monkeypatch):
    """The one-pass writer shrinks the older thumbnail candidates once they pass a byte budget; with a
    budget of one frame every candidate but the newest is shrunk early, and the thumbnails (and clips)
    must still be those of the two-pass path, which shrinks only the middle frame."""
    from curate import stream_writer

    monkeypatch.setattr(stream_writer, "_HELD_BYTES", 1)
    shrunk: list[int] = []
    shrink = stream_writer.thumbnail_frame
    monkeypatch.setattr(
        stream_writer, "thumbnail_frame", lambda frame, *a: (shrunk.append(frame.width), shrink(frame, *a))[1]
    )
    cfg = SplitConfig.model_validate({"extract": {"thumbnail_width": 96}})  # below the clips' 320 px
    run, clips = one_pass(sample_footage / "cuts.mp4", cfg)
    assert clips and clips == two_pass(sample_footage / "cuts.mp4", cfg)
    assert not run.second_pass
    # Every candidate was shrunk once as the next frame came (not only the middle at the end):
    # the clips' frames minus the first half, which stops being a candidate first, and the newest.
    frames = sum(end - start for _, start, end, _, _ in clips)
    assert len(shrunk) >= frames // 2 - len(clips) and set(shrunk) == {320}


@pytest.mark.slow
def test_one_pass_on_real_fades_and_cuts(shared_footage):
    video = shared_footage / "multishot" / "fades.mp4"
    run, clips = one_pass(video, SplitConfig())
    assert clips == two_pass(video, SplitConfig()) and not run.second_pass


def test_a_full_delay_line_finishes_in_a_second_pass(sample_footage, monkeypatch):
    # A delay line allowed to hold only a few frames overflows at once: the file's clips then
    # come from the extraction-only second pass, still exactly the planned ones.
    monkeypatch.setattr(single_pass, "_MAX_DELAY_BYTES", 1)
    video = sample_footage / "cuts.mp4"
    run, clips = one_pass(video, SplitConfig())
    assert run.second_pass and clips == two_pass(video, SplitConfig())


@pytest.mark.parametrize(
    ("split", "threads"),
    [
        ({}, 1),
        ({"num_cpus": 2}, 2),
        ({"detect": {"decode_threads": 0}}, 0),
        ({"clips": {"long_scenes": "drop"}}, 1),
    ],
)
def test_a_split_task_decodes_with_the_cpus_it_was_given(sample_footage, monkeypatch, split, threads):
    """A task decodes with as many threads as its Ray CPUs (one by default), in the one-pass split
    and the two-pass one (`long_scenes: drop`), unless decode_threads says otherwise; libavcodec's
    own count (0) is a thread per core of the machine for every task on it."""
    from curate.split_file import VideoSplit
    from media import decode

    seen: list[int] = []
    configure = decode.configure_threads
    monkeypatch.setattr(decode, "configure_threads", lambda stream, n: (seen.append(n), configure(stream, n)))
    job = VideoSplit(sample_footage / "cuts.mp4", SplitConfig.model_validate(split))
    assert list(job.clips()) and job.status == "ok"
    assert seen and set(seen) == {threads}

import hashlib
import json

import numpy as np
import pytest

from curate.probe import probe_file
from curate.split_config import ProbeConfig
from media import read_clip
from pipelines.sample_footage import MOVIES, load_ground_truth, write_sample_footage


def _decode(path):
    clip = read_clip(path, fmt="gray")
    frames = [(float(t), f.astype(np.float32)) for t, f in zip(clip.times_s, clip.frames, strict=True)]
    return probe_file(path, ProbeConfig(), decode_sample=False).codec, frames


def test_every_movie_matches_its_ground_truth(sample_footage):
    names = sorted(p.name for p in sample_footage.iterdir() if not p.name.endswith(".gt.json"))
    assert names == sorted(m.name for m in MOVIES)
    for movie in MOVIES:
        truth = load_ground_truth(sample_footage / movie.name)
        codec, frames = _decode(sample_footage / movie.name)
        assert codec == {"libx264": "h264", "libvpx-vp9": "vp9"}[truth["codec"]]
        assert len(frames) == truth["num_frames"]
        times = [t for t, _ in frames]
        diffs = [float(np.abs(frames[i][1] - frames[i - 1][1]).mean()) for i in range(1, len(frames))]
        for cut, cut_s in zip(truth["cuts"], truth["cuts_s"], strict=True):
            assert times[cut] == pytest.approx(cut_s, abs=1e-6)
            # the frame difference at a hard cut dwarfs the differences of the frames around it
            around = diffs[cut - 6 : cut - 1] + diffs[cut : cut + 5]
            assert diffs[cut - 1] > 1.8 * max(around), (movie.name, cut)
        steps = np.diff(times)
        assert (np.ptp(steps) > 0.01) == truth["variable_frame_rate"], movie.name


def test_shots_have_the_looks_the_scorers_must_tell_apart(sample_footage):
    truth = load_ground_truth(sample_footage / "looks.mp4")
    _, frames = _decode(sample_footage / "looks.mp4")
    by_label = {s["label"]: s for s in truth["shots"]}
    dark = by_label["dark_chelsea"]
    normal = by_label["pan_coffee"]
    assert np.mean([f.mean() for _, f in frames[dark["start_frame"] : dark["end_frame"]]]) < 25
    assert np.mean([f.mean() for _, f in frames[normal["start_frame"] : normal["end_frame"]]]) > 70
    assert [t["kind"] for t in truth["transitions"]] == ["dissolve"]


@pytest.mark.slow
def test_generation_is_deterministic(tmp_path, sample_footage):
    write_sample_footage(tmp_path)
    for movie in MOVIES:
        ours = hashlib.sha256((tmp_path / movie.name).read_bytes()).hexdigest()
        fixture = hashlib.sha256((sample_footage / movie.name).read_bytes()).hexdigest()
        assert ours == fixture, movie.name
        assert json.loads((tmp_path / f"{movie.name}.gt.json").read_text()) == load_ground_truth(
            sample_footage / movie.name
        )

"""Each stage decodes a clip at most once, and only the frames it needs.

media.count_decodes sees every container the media layer opens, every decoding pass and every
decoded frame, per input; each stage's real per-clip function runs under it and is held to its
budget (split, score, caption, encode, the report's previews, evaluation, export's check). The
clips are the split's own clips of the sample footage.
"""

from __future__ import annotations

import pytest

from caption.frames import sample_frames
from curate.borders import file_content_box
from curate.config import BorderConfig, FrameSamplingConfig
from curate.eval_config import EvalConfig
from curate.frames import decode_clip as score_decode
from curate.split_config import SplitConfig
from curate.split_file import VideoSplit
from curate.vbench import read_video
from media import count_decodes
from media.decode import source_label
from pipelines.export import clip_problem
from pipelines.report.media import animated_preview
from train.config import Bucket
from train.loader import decode_clip as train_decode


@pytest.fixture(scope="module")
def split_run(sample_footage):
    video = sample_footage / "cuts.mp4"
    with count_decodes() as log:
        job = VideoSplit(video, SplitConfig())
        clips = list(job.clips())
    assert job.status == "ok" and len(clips) == 5
    return video, job, clips, log


def test_split_decodes_its_source_once_and_no_clip(split_run):
    video, job, clips, log = split_run
    source = str(video)
    assert job.probe is not None
    # One decoding pass over every frame, for detection and extraction together, and the border
    # sample (a few frames spread over the file, split.extract.crop_borders); the third open is
    # the probe reading the header.
    with count_decodes() as border_log:
        file_content_box(video, BorderConfig())
    border_passes, border_frames = border_log.passes[source], border_log.frames[source]
    assert log.passes[source] == 1 + border_passes
    assert log.frames[source] == job.probe.num_frames + border_frames
    assert log.opens[source] == 3
    # 8 frames, keyframes where a slot holds one, else decoded on from the last: 44 of 250 here
    # (a seek to each slot's middle and decoding on to it: 212).
    assert border_frames < job.probe.num_frames // 4
    for clip in clips:  # verification reads each clip's packets: an open, no decoding
        label = source_label(clip.data)
        assert log.opens[label] == 1 and log.passes[label] == 0 and log.frames[label] == 0


def test_score_decodes_each_clip_once_up_to_its_last_sampled_frame(split_run):
    _, _, clips, _ = split_run
    for clip in clips:
        with count_decodes() as log:
            frames = score_decode(
                clip.data, FrameSamplingConfig(count=3), motion_width=64, motion_run_length=2
            )
        label = source_label(clip.data)
        assert log.opens[label] == 1 and log.passes[label] == 1
        # Up to the last sampled frame and the one after it (its motion run), never the whole clip.
        last_needed = round(frames.times_s[-1] * clip.fps) + 2
        assert log.frames[label] == frames.frames_decoded == last_needed < clip.num_frames


def test_caption_decodes_each_clip_once_up_to_its_last_sampled_frame(split_run):
    _, _, clips, _ = split_run
    for clip in clips:
        with count_decodes() as log:
            sampled = sample_frames(clip.data, num_frames=4, max_pixels=64 * 64)
        label = source_label(clip.data)
        assert log.opens[label] == 1 and log.passes[label] == 1
        assert log.frames[label] == round(sampled.timestamps_s[-1] * clip.fps) + 1 < clip.num_frames


def test_encode_decodes_only_up_to_the_bucket_frames(split_run):
    _, _, clips, _ = split_run
    bucket = Bucket(height=32, width=32, frames=9)
    for clip in clips:
        with count_decodes() as log:
            video = train_decode(clip.data, bucket)
        label = source_label(clip.data)
        assert video.shape == (9, 32, 32, 3)
        assert log.opens[label] == 1 and log.passes[label] == 1
        # The middle 9 frames: decoding stops after the last of them.
        assert log.frames[label] == (clip.num_frames - 9) // 2 + 9


def test_report_preview_decodes_each_clip_once(split_run):
    _, _, clips, _ = split_run
    for clip in clips:
        with count_decodes() as log:
            animated_preview(clip.data, frames=4, width=32)
        label = source_label(clip.data)
        assert log.opens[label] == 1 and log.passes[label] == 1 and log.frames[label] < clip.num_frames


def test_eval_decodes_each_video_once_up_to_its_frame_cap(split_run):
    _, _, clips, _ = split_run
    cfg = EvalConfig(max_frames=6)
    for clip in clips:
        with count_decodes() as log:
            video = read_video(clip.data, cfg)
        label = source_label(clip.data)
        assert len(video.frames) == 6
        assert log.opens[label] == 1 and log.passes[label] == 1 and log.frames[label] == 6


def test_export_check_decodes_each_clip_once(split_run):
    _, _, clips, _ = split_run
    for clip in clips:
        label = source_label(clip.data)
        with count_decodes() as log:
            assert clip_problem(clip.data, clip.num_frames, "decode") is None
        assert log.opens[label] == 1 and log.passes[label] == 1 and log.frames[label] == clip.num_frames
        with count_decodes() as log:
            assert clip_problem(clip.data, clip.num_frames, "open") is None
        assert log.opens[label] == 1 and log.frames[label] == 1

"""media.slots: one frame per slot of a file, reached with as little decoding as the seeks allow."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from media import count_decodes, encode_mp4
from media.decode import source_label
from media.slots import frames_across

FRAMES, RATE, SLOTS = 120, 24, 8


def sliding_pattern() -> list[np.ndarray]:
    """A smooth pattern sliding a pixel a frame: no scene change for the encoder to put a keyframe at."""
    yy, xx = np.mgrid[0:96, 0:128]
    grey = [(120 + 60 * np.sin((xx + i) / 6.0) * np.cos(yy / 9.0)).astype(np.uint8) for i in range(FRAMES)]
    return [np.repeat(g[..., None], 3, axis=2) for g in grey]


def keyframe_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(p.is_keyframe for p in container.demux(container.streams.video[0]) if p.size)


def picked(data: bytes) -> tuple[list[av.VideoFrame], int, int]:
    with count_decodes() as log:
        frames = frames_across(data, SLOTS)
    label = source_label(data)
    assert log.opens[label] == 1
    return frames, log.passes[label], log.frames[label]


def assert_one_frame_per_slot(frames: list[av.VideoFrame]) -> None:
    slot = FRAMES / RATE / SLOTS
    assert len(frames) == SLOTS
    for i, frame in enumerate(frames):
        assert frame.time is not None and i * slot - 1e-6 <= frame.time < (i + 1) * slot, (i, frame.time)


@pytest.mark.parametrize("preset", ["ultrafast", "veryfast"])  # without and with B-frames
def test_one_group_of_pictures_is_decoded_at_most_once(preset):
    data = encode_mp4(sliding_pattern(), RATE, preset=preset, gop=10 * FRAMES)
    assert keyframe_count(data) == 1
    frames, passes, decoded = picked(data)
    assert_one_frame_per_slot(frames)
    # One pass that goes on from slot to slot (a seek per slot decoded ~4x the file from its start).
    assert passes == 1 and decoded <= FRAMES


@pytest.mark.parametrize("preset", ["ultrafast", "veryfast"])
def test_a_slot_holding_a_keyframe_costs_about_one_decoded_frame(preset):
    # A keyframe every 14 frames, slots of 15: some slots hold theirs after the middle.
    data = encode_mp4(sliding_pattern(), RATE, preset=preset, gop=FRAMES // SLOTS - 1)
    frames, passes, decoded = picked(data)
    assert_one_frame_per_slot(frames)
    assert all(f.key_frame for f in frames)
    # A seek per slot landing on its last keyframe: the frames decoded are those keyframes, and at
    # most one more per slot that frame threading had in flight.
    assert passes == SLOTS and decoded <= 2 * SLOTS


def test_an_undecodable_input_gives_no_frame():
    assert frames_across(b"not a video at all", SLOTS) == []

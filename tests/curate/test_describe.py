"""The camera, motion and text scores in words, and the training prompts composed from them."""

from __future__ import annotations

import pyarrow as pa
import pytest
from score_clips import store_with

from curate.describe import camera_words, describe, motion_words, text_words
from train.clip_index import build_index
from train.config import DataConfig
from train.prompts import render_prompts


def test_scores_in_words():
    assert camera_words("pan_left", 0.05) == "the camera pans left slowly"
    assert camera_words("zoom_in", 0.5) == "the camera zooms in quickly"
    assert camera_words("tilt_up", 0.15) == "the camera tilts up steadily"
    assert (
        camera_words("static", 0.0) == "static camera"
        and camera_words("shaky", 0.9) == "handheld, shaky camera"
    )
    assert camera_words("complex", 0.2) == "the camera moves freely" and camera_words(None, None) is None
    assert (
        motion_words(0.05) == "the subject moves fast" and motion_words(0.0) == "nothing in the scene moves"
    )
    assert motion_words(None) is None
    assert text_words(0.04, 0.03, True, False) == "burned-in subtitles"
    assert text_words(0.01, 0.01, False, True) == "a logo in a corner"
    assert text_words(0.05, 0.0, False, False) == "text in the scene"
    assert (
        text_words(0.0, 0.0, False, False) == "no on-screen text"
        and text_words(None, None, None, None) is None
    )


def test_describe_a_table_of_scores_with_nulls():
    table = pa.table(
        {
            "camera_motion": ["static", None],
            "camera_speed": [0.0, None],
            "object_motion": [0.08, None],
            "text_area": [0.0, None],
        }
    )
    words = describe(table)
    assert words["caption_camera"].to_pylist() == ["static camera", None]
    assert words["caption_motion"].to_pylist() == ["the subject moves fast", None]
    assert words["caption_text"].to_pylist() == ["no on-screen text", None]


def test_prompt_template_is_rendered_at_training_time():
    columns = {
        "caption": ["a cat on a sofa", "a red car", None],
        "caption_camera": ["static camera", None, None],
    }
    prompts = render_prompts(columns, "{caption}, {caption_camera}.", 3)
    assert prompts == ["a cat on a sofa, static camera.", "a red car.", ""]
    assert render_prompts({"caption": ["a dog "]}, "{caption}", 1) == ["a dog"]
    for bad in ("no fields here", "{caption", "{0}"):
        with pytest.raises(ValueError, match="prompt_template"):
            DataConfig(prompt_template=bad)


def test_a_template_naming_a_missing_column_is_refused(tmp_store):
    store_with(tmp_store, {"v:a": b"x"})
    clips = tmp_store.require("clips")
    clips.add_columns({"caption": "'a caption'"})
    with pytest.raises(ValueError, match="caption_camera"):
        build_index(tmp_store.clips_uri, DataConfig(prompt_template="{caption} {caption_camera}."))

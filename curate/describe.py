"""The camera, motion and text scores in words, for prompts: caption_camera, caption_motion, caption_text.

They are written next to the VLM's caption, never into it: the trainer composes each training prompt
from `train.data.prompt_template` (e.g. "{caption} {caption_camera}."), so the wording is chosen at
training time, and the caption stage may pass the camera words to the VLM as context.

Speeds are in frame fractions per second (curate/camera.py); a null score gives a null phrase.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

# (upper bound, adverb): camera_speed / object_motion in frame fractions per second.
_SPEED_WORDS = ((0.08, "slowly"), (0.3, "steadily"), (float("inf"), "quickly"))
_MOVES = {
    "pan_left": "the camera pans left",
    "pan_right": "the camera pans right",
    "tilt_up": "the camera tilts up",
    "tilt_down": "the camera tilts down",
    "zoom_in": "the camera zooms in",
    "zoom_out": "the camera zooms out",
}
# object_motion under STILL_SCENE: nothing moves but the camera; under SLOW_SUBJECT: slowly.
STILL_SCENE, SLOW_SUBJECT = 0.002, 0.02
# text_area over SCENE_TEXT without overlay: text in the scene (signs, labels).
SCENE_TEXT = 0.01


def _speed(value: float) -> str:
    return next(word for bound, word in _SPEED_WORDS if value < bound)


def camera_words(label: str | None, speed: float | None) -> str | None:
    """The camera label and speed as caption words, or None when unmeasured."""
    if label is None:
        return None
    if label == "static":
        return "static camera"
    if label == "shaky":
        return "handheld, shaky camera"
    if label == "complex":
        return "the camera moves freely"
    return f"{_MOVES[label]} {_speed(speed or 0.0)}"


def motion_words(object_motion: float | None) -> str | None:
    """The object motion as caption words, or None when unmeasured."""
    if object_motion is None:
        return None
    if object_motion < STILL_SCENE:
        return "nothing in the scene moves"
    return "the subject moves slowly" if object_motion < SLOW_SUBJECT else "the subject moves fast"


def text_words(
    text_area: float | None, overlay: float | None, subtitles: bool | None, logo: bool | None
) -> str | None:
    """The on-screen text scores as caption words, or None when unmeasured."""
    if text_area is None and overlay is None:
        return None
    parts = []
    if subtitles:
        parts.append("burned-in subtitles")
    if logo:
        parts.append("a logo in a corner")
    if (overlay or 0.0) > 0 and not parts:
        parts.append("text overlaid on the picture")
    if not parts and (text_area or 0.0) > SCENE_TEXT:
        parts.append("text in the scene")
    return " and ".join(parts) if parts else "no on-screen text"


CAPTION_COLUMNS = ("caption_camera", "caption_motion", "caption_text")


def describe(table: pa.Table) -> dict[str, pa.Array]:
    """The three phrases of every row of a table of scores (columns it lacks count as null)."""

    def column(name: str) -> list[Any]:
        return table[name].to_pylist() if name in table.column_names else [None] * table.num_rows

    label, speed, moving = column("camera_motion"), column("camera_speed"), column("object_motion")
    area, overlay = column("text_area"), column("overlay_text_area")
    subtitles, logo = column("subtitle_band"), column("corner_logo")
    return {
        "caption_camera": pa.array([camera_words(*r) for r in zip(label, speed, strict=True)], pa.string()),
        "caption_motion": pa.array([motion_words(m) for m in moving], pa.string()),
        "caption_text": pa.array(
            [text_words(*r) for r in zip(area, overlay, subtitles, logo, strict=True)], pa.string()
        ),
    }


def with_descriptions(table: pa.Table) -> pa.Table:
    """`table` plus (or with replaced) the three phrase columns."""
    for name, values in describe(table).items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table

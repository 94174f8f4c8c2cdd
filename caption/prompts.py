"""Versioned caption prompts.

A prompt is identified by (variant, version) and the stage records `"<variant>/v<version>"` with
every caption, so captions made with different wording stay distinguishable. Published versions
are never edited: a change in wording is a new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PromptVariant = Literal["detailed", "short", "tags"]


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned caption prompt: the system and user text sent with the frames."""

    variant: PromptVariant
    version: int
    system: str
    user: str

    @property
    def id(self) -> str:
        """The prompt's id as recorded with each caption: "variant/vN"."""
        return f"{self.variant}/v{self.version}"


_TEMPLATES: tuple[PromptTemplate, ...] = (
    PromptTemplate(
        variant="detailed",
        version=1,
        system="You are an expert video annotator writing training captions for a text-to-video model.",
        user=(
            "Describe this video clip in one paragraph of plain prose (60-120 words). Cover the main "
            "subjects and their appearance, what they do and how they move, the setting, lighting and "
            "colours, and the camera's framing and motion (static, pan, tilt, zoom, tracking). Describe "
            "only what is visible; do not guess names, brands or intentions. Start directly with the "
            "content, not with phrases like 'The video shows'."
        ),
    ),
    PromptTemplate(
        variant="short",
        version=1,
        system="You are an expert video annotator writing training captions for a text-to-video model.",
        user=(
            "Write one sentence (at most 25 words) that describes the main subject, action and setting "
            "of this video clip. Start directly with the content."
        ),
    ),
    PromptTemplate(
        variant="tags",
        version=1,
        system="You are an expert video annotator tagging clips for a text-to-video dataset.",
        user=(
            "List 5 to 15 short lowercase tags for this video clip, separated by commas: subjects, "
            "actions, setting, lighting, style and camera motion. Output only the tags."
        ),
    ),
)


# Appended to the prompt's id when the measured camera words go with the request (caption.camera_context).
CAMERA_CONTEXT_SUFFIX = "+camera"


def prompt_id(variant: str, version: int, camera_context: bool) -> str:
    """What `caption_prompt_version` records: the template's id, and whether measured words went along."""
    return get_prompt(variant, version).id + (CAMERA_CONTEXT_SUFFIX if camera_context else "")


def measured_context(camera_words: str | None, motion_words: str | None) -> str | None:
    """The score stage's camera and motion words as one context sentence; None when neither is known
    (a clip the motion scorer could not measure gets no context, never a guess)."""
    parts = [w for w in (camera_words, motion_words) if w]
    return "; ".join(parts) if parts else None


def user_text(prompt: PromptTemplate, context: str | None) -> str:
    """The user turn's text: the prompt, then the measured camera motion as context when there is one."""
    if context is None:
        return prompt.user
    return (
        f"{prompt.user}\n\nMeasured from the footage's optical flow: {context}. Use this for the camera "
        "motion where the frames agree with it."
    )


def get_prompt(variant: str, version: int) -> PromptTemplate:
    """The prompt template of this variant and version; ValueError names the known ones."""
    for template in _TEMPLATES:
        if template.variant == variant and template.version == version:
            return template
    known = sorted(t.id for t in _TEMPLATES)
    raise ValueError(f"unknown caption prompt {variant}/v{version}; known prompts: {', '.join(known)}")


def all_prompts() -> tuple[PromptTemplate, ...]:
    """Every known prompt template."""
    return _TEMPLATES

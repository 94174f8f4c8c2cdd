"""Turn raw VLM output into a training caption, or reject it with a reason.

VLMs open most answers with a stock phrase ("The video shows ...") that carries no information and,
left in, teaches the video model to expect it in every prompt; small or overloaded models also
degenerate into loops ("a dog a dog a dog ..."). Both are handled here, on plain strings.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_SUBJECT = r"(?:the|this|these|a)\s+(?:short\s+)?(?:video|clip|footage|scene|image|images|frames?|sequence)(?:\s+clip)?"
_VERB = (
    r"(?:shows|show|depicts|depict|features|feature|captures|capture|displays|display|presents|"
    r"showcases|showcase|illustrates|portrays|is\s+showing|appears\s+to\s+show|begins\s+with|opens\s+with)"
)
# Stock openings, tried repeatedly so "In this video, the footage shows ..." loses both parts.
_STOCK_OPENINGS = (
    re.compile(rf"^{_SUBJECT}\s+{_VERB}\s+(?:that\s+|how\s+)?", re.IGNORECASE),
    re.compile(
        rf"^(?:in|throughout|within)\s+{_SUBJECT}\s*,?\s*(?:we\s+(?:can\s+)?see\s+|there\s+(?:is|are)\s+)?",
        re.IGNORECASE,
    ),
    re.compile(
        r"^(?:here\s+(?:is|we\s+see)|we\s+(?:can\s+)?see|caption|description)\s*[:,]?\s*", re.IGNORECASE
    ),
    re.compile(r"^(?:sure|certainly|okay|ok)[!,.]\s*(?:here\s+is\s+[^:]*:\s*)?", re.IGNORECASE),
)
_WHITESPACE = re.compile(r"\s+")
# Control characters and U+FFFD (bytes that did not decode): never part of a caption.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class CleanCaption:
    """A model's caption after cleaning: the text, or why it was rejected."""

    text: str | None
    # Why the caption was rejected (text is None then); None when accepted.
    error: str | None
    truncated: bool = False


def strip_stock_openings(text: str) -> str:
    """The text without the stock openings models start captions with ("The video shows")."""
    changed = True
    while changed:
        changed = False
        for pattern in _STOCK_OPENINGS:
            stripped = pattern.sub("", text, count=1)
            if stripped != text:
                text = stripped.lstrip(" ,:;-")
                changed = True
    return text[:1].upper() + text[1:] if text else text


def collapse_whitespace(text: str) -> str:
    """The text with every run of whitespace made one space, stripped at both ends."""
    return _WHITESPACE.sub(" ", text).strip()


def repetition_problem(text: str) -> str | None:
    """Why the text is a degenerate loop, or None. Needs enough words to judge."""
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 8:
        return None
    # The same n-gram back to back many times: "a dog a dog a dog a dog".
    for n in range(1, 6):
        run = 1
        for i in range(n, len(words) - n + 1, n):
            if words[i : i + n] == words[i - n : i]:
                run += 1
                if run >= 4 and run * n >= 8:
                    return f"repeated text: '{' '.join(words[i : i + n])}' {run}+ times in a row"
            else:
                run = 1
    # Few distinct words overall: a loop with small variations.
    distinct = len(set(words)) / len(words)
    if len(words) >= 20 and distinct < 0.25:
        top, count = Counter(words).most_common(1)[0]
        return f"repeated text: only {distinct:.0%} distinct words ('{top}' x{count})"
    return None


def _truncate(text: str, max_chars: int) -> str:
    head = text[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    # Keep whole sentences when that keeps at least half of the allowed length.
    if ends and ends[-1] >= max_chars // 2:
        return head[: ends[-1]]
    cut = head.rfind(" ")
    return (head[:cut] if cut >= max_chars // 2 else head).rstrip(" ,;:-")


def clean_caption(raw: str | None, min_chars: int, max_chars: int) -> CleanCaption:
    """Clean a model's raw caption, or say why it cannot be used (empty, too short, looping)."""
    if raw is None or not raw.strip():
        return CleanCaption(None, "empty output")
    text = collapse_whitespace(_UNPRINTABLE.sub("", raw))
    text = text.strip("\"'`* ")
    text = strip_stock_openings(text)
    if not _WORD.search(text):
        return CleanCaption(None, f"no words in output: {raw[:60]!r}")
    problem = repetition_problem(text)
    if problem is not None:
        return CleanCaption(None, problem)
    truncated = False
    if len(text) > max_chars:
        text = _truncate(text, max_chars)
        truncated = True
    if len(text) < min_chars:
        return CleanCaption(
            None, f"too short after cleanup: {len(text)} chars < min_chars={min_chars} ({text!r})"
        )
    return CleanCaption(text, None, truncated)

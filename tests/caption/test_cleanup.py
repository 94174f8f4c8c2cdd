from __future__ import annotations

import pytest

from caption.cleanup import clean_caption, repetition_problem, strip_stock_openings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The video shows a dog running on a beach.", "A dog running on a beach."),
        ("This clip depicts two people talking.", "Two people talking."),
        ("In this video, a red car drives through rain.", "A red car drives through rain."),
        ("In the video, we see a cat on a sofa.", "A cat on a sofa."),
        ("The footage captures how waves break on rocks.", "Waves break on rocks."),
        ("Sure! Here is a description: A man cooks pasta.", "A man cooks pasta."),
        (
            "A video of a sunset over the sea.",
            "A video of a sunset over the sea.",
        ),  # content, not a stock opening
    ],
)
def test_stock_openings_are_stripped(raw, expected):
    assert strip_stock_openings(raw) == expected


def test_whitespace_quotes_and_unprintables_are_cleaned():
    result = clean_caption('  "The video shows  a\n\n dog\x1e running\ufffd   on grass."  ', 8, 200)
    assert result.error is None
    assert result.text == "A dog running on grass."


@pytest.mark.parametrize("raw", [None, "", "   \n\t "])
def test_empty_output_is_rejected(raw):
    result = clean_caption(raw, 8, 200)
    assert result.text is None and result.error == "empty output"


def test_too_short_is_rejected_with_the_length():
    result = clean_caption("The video shows a cat.", 8, 200)
    assert result.text is None
    assert "too short" in result.error and "min_chars=8" in result.error


def test_too_long_is_cut_at_a_sentence_or_word_boundary():
    text = (
        "A brown dog runs along a sandy beach at sunrise. Waves roll in from the left. "
        "Gulls circle above the water while the camera tracks the dog from a low angle. "
        "Then it jumps into the sea and swims far away."
    )
    result = clean_caption(text, 8, 100)
    assert result.error is None and result.truncated
    assert len(result.text) <= 100 and result.text.endswith(".")
    words = " ".join(f"word{i}" for i in range(40))  # no sentence end: cut at a space
    cut = clean_caption(words, 8, 60)
    assert len(cut.text) <= 60 and cut.truncated
    assert words.startswith(cut.text.lower() + " ")  # the first letter is capitalised


@pytest.mark.parametrize(
    "raw",
    [
        "a dog a dog a dog a dog a dog a dog",
        "the the the the the the the the the",
        "A man walks. " + "and then and then and then and then and then and then",
        " ".join(["cat", "dog"] * 5 + ["cat"] * 20),
    ],
)
def test_degenerate_repetition_is_rejected(raw):
    result = clean_caption(raw, 8, 2000)
    assert result.text is None
    assert result.error.startswith("repeated text")


def test_normal_text_is_not_flagged_as_repetition():
    text = (
        "A woman in a red coat walks her dog along a snowy street lined with trees while cars pass "
        "slowly; the camera tracks her from the side in soft evening light."
    )
    assert repetition_problem(text) is None
    assert clean_caption(text, 8, 2000).text == text


def test_symbols_only_are_rejected():
    result = clean_caption("... --- !!!", 1, 200)
    assert result.text is None and "no words" in result.error

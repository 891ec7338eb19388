"""Step segmentation, fed one token piece at a time as the monitor does (pure Python, no model)."""

from __future__ import annotations

import pytest

from sia_monitor.errors import SIAError
from sia_monitor.probing.segmentation import CompletedStep, StepSegmenter


def feed_all(segmenter: StepSegmenter, pieces: list[str]) -> list[CompletedStep]:
    steps = []
    for piece in pieces:
        step = segmenter.feed(piece)
        if step is not None:
            steps.append(step)
    return steps


def test_line_mode_spans_empty_lines_and_answer_line() -> None:
    pieces = ["First", " add", " 2", ".", "\n", "\n", "Then", " 5", "\n\n", "The", " answer", " is", " 5", "."]
    segmenter = StepSegmenter("line")
    steps = feed_all(segmenter, pieces)
    assert [s.text for s in steps] == ["First add 2.", "Then 5"]  # the empty line "\n" is no step
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 5), (6, 9)]
    assert "".join(pieces[0:5]).strip() == steps[0].text and "".join(pieces[6:9]).strip() == steps[1].text
    assert all(s.at_line_start and not s.is_answer for s in steps)
    assert segmenter.pending_text == "The answer is 5."

    answer = segmenter.feed("\n")
    assert answer is not None and answer.is_answer and answer.text == "The answer is 5."
    assert (answer.token_start, answer.token_end) == (9, 15)


def test_line_mode_boxed_answer_and_newline_inside_a_piece() -> None:
    segmenter = StepSegmenter("line")
    steps = feed_all(segmenter, ["So", " x", " =", " 3", ".\n", "\\boxed{3}", "\n"])
    assert [s.text for s in steps] == ["So x = 3.", "\\boxed{3}"]
    assert [s.is_answer for s in steps] == [False, True]
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 5), (5, 7)]


def test_line_mode_only_whitespace_lines_give_no_steps() -> None:
    segmenter = StepSegmenter("line")
    assert feed_all(segmenter, ["\n", "  ", "\n", "\n\n"]) == []
    step = segmenter.feed("Done\n")
    assert step is not None and (step.token_start, step.token_end) == (4, 5)


def test_sentence_mode_splits_sentences_not_list_markers_or_decimals() -> None:
    pieces = ["1", ".", " Tom", " pays", " 3", ".", "5", " dollars", ".", " He", " has", " 2", " left", "!",
              " Why", "?", " Because", "\n", "2", ".", " Next"]
    segmenter = StepSegmenter("sentence")
    steps = feed_all(segmenter, pieces)
    assert [s.text for s in steps] == ["1. Tom pays 3.5 dollars.", "He has 2 left!", "Why?", "Because"]
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 9), (9, 14), (14, 16), (16, 18)]
    # A step that ends at '.', '!' or '?' does not end a line: the probe suffix needs a newline first.
    assert [s.at_line_start for s in steps] == [False, False, False, True]
    assert segmenter.pending_text == "2. Next"


def test_sentence_mode_closing_quote_or_bracket_stays_with_its_sentence() -> None:
    steps = feed_all(StepSegmenter("sentence"), ["He", " said", " \"", "stop", ".\"", " Then"])
    assert [s.text for s in steps] == ['He said "stop."']


def test_regex_mode_closes_where_the_pattern_ends_the_text() -> None:
    pieces = ["a", " b", ";", " c", ";;", " d", " e", ";"]
    segmenter = StepSegmenter("regex", pattern=r";+")
    steps = feed_all(segmenter, pieces)
    assert [s.text for s in steps] == ["a b;", "c;;", "d e;"]
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 3), (3, 5), (5, 8)]
    assert not any(s.at_line_start for s in steps)


def test_regex_mode_can_use_lines() -> None:
    steps = feed_all(StepSegmenter("regex", pattern=r"\n"), ["x", "\n", "y", "\n"])
    assert [(s.text, s.at_line_start) for s in steps] == [("x", True), ("y", True)]


@pytest.mark.parametrize(
    ("mode", "pattern", "fragment"),
    [("regex", "([unclosed", "invalid"), ("regex", None, "needs a pattern"), ("regex", "", "needs a pattern"),
     ("paragraph", None, "Unknown step mode")],
)
def test_bad_mode_or_regex_is_a_user_error(mode: str, pattern: str | None, fragment: str) -> None:
    with pytest.raises(SIAError, match=fragment):
        StepSegmenter(mode, pattern)  # type: ignore[arg-type]

"""Parsing, normalising and comparing answers: the probe, the answer line and the grade must agree."""

from __future__ import annotations

import pytest

from sia_monitor.answers import (
    NUMERIC,
    AnswerSpace,
    normalize_number,
    parse_answer,
    parse_choices,
    same_answer,
    states_answer,
)
from sia_monitor.errors import SIAError

LETTERS = AnswerSpace("choice", labels=("A", "B", "C", "D"), options=("meter", "kilometer", "soft", "hard"))
DIGITS = AnswerSpace("choice", labels=("1", "2", "3", "4"), options=("red", "blue", "green", "yellow"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,000", "1000"), ("18.0", "18"), ("$5", "5"), ("0.50", "0.5"), ("3/4", "0.75"), ("-2", "-2"),
     ("1,450,000", "1450000"), ("22090603.0", "22090603"), ("5.", "5"), ("abc", None), ("", None), ("1/0", None)],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: 40 + 2 = 42\nThe answer is 42.", "42"),
        ("So we get \\boxed{1,200}", "1200"),
        ("The answer is $18.50", "18.5"),
        ("The answer is -3.", "-3"),
        ("Answer: 12", "12"),
        ("The total is \\boxed{3}.\nThe answer is 5.", "5"),  # the later statement wins...
        ("The answer is 5.\nSo the final result is \\boxed{8}", "8"),  # ...whichever form it takes
        ("The answer is \\boxed{7}. Then again, the answer is 9", "9"),  # also on one line
        ("The answer is \\boxed{7}", "7"),
        ("I added 3 and 4 to get 7.", "7"),
        ("", None),
    ],
)
def test_parse_answer_numeric(text: str, expected: str | None) -> None:
    assert parse_answer(text, NUMERIC) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B)", "B"),
        ("The correct answer is D) soft.", "D"),
        ("The answer is: C", "C"),
        ("Final answer: B) kilometer.", "B"),
        ("A meter is short.\nThe answer is (C).", "C"),
        ("The answer is (b)", "B"),
        ("The answer is kilometer.", "B"),  # option text, whole words: not "meter"
        ("The answer is a kilometer.", "B"),  # the article "a" is not label A
        ("I cannot decide.", None),
    ],
)
def test_parse_answer_letter_choice(text: str, expected: str | None) -> None:
    assert parse_answer(text, LETTERS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("The answer is (3)", "3"), ("The answer is 2.", "2"), ("The answer is: 4) yellow", "4"),
     ("The answer is blue", "2")],
)
def test_parse_answer_numeric_labels(text: str, expected: str) -> None:
    assert parse_answer(text, DIGITS) == expected


def test_parse_answer_candidates_takes_the_last_mentioned() -> None:
    space = AnswerSpace("candidates", candidates=("Paris", "London"))
    assert parse_answer("London? No. The answer is Paris", space) == "Paris"


@pytest.mark.parametrize(
    ("text", "labels", "options"),
    [
        ("A) red B) blue C) green", ("A", "B", "C"), ("red", "blue", "green")),
        ("A) red\nB) blue\nC) green", ("A", "B", "C"), ("red", "blue", "green")),
        ("(A) x (B) y", ("A", "B"), ("x", "y")),
        ("a) x b) y", ("A", "B"), ("x", "y")),
        ("1. a 2. b", ("1", "2"), ("a", "b")),
        ("A. 1.5 m B. 2.5 m", ("A", "B"), ("1.5 m", "2.5 m")),
    ],
)
def test_parse_choices(text: str, labels: tuple[str, ...], options: tuple[str, ...]) -> None:
    space = parse_choices(text)
    assert (space.kind, space.labels, space.options) == ("choice", labels, options)


@pytest.mark.parametrize("text", ["just text", "", "A) only one", "A) red A) blue", "stray A) red B) blue"])
def test_parse_choices_rejects(text: str) -> None:
    with pytest.raises(SIAError, match="choices"):
        parse_choices(text)


def test_same_answer() -> None:
    assert same_answer("18.0", "18", NUMERIC)
    assert same_answer("1,000", "1000", NUMERIC)
    assert same_answer("18.00001", "18", NUMERIC)  # within the relative tolerance
    assert not same_answer("18.01", "18", NUMERIC)
    assert same_answer("18.01", "18", NUMERIC, tolerance=1e-2)
    assert not same_answer(None, "18", NUMERIC)
    assert not same_answer("abc", "18", NUMERIC)
    assert same_answer("b", "B", LETTERS)
    assert not same_answer("C", "B", LETTERS)
    assert same_answer("3", "3", DIGITS)


@pytest.mark.parametrize(
    ("line", "expected"),
    [("The answer is 5", True), ("So the final answer: 5", True), ("\\boxed{5}", True),
     ("Step 1: add 3 and 2.", False), ("The answers differ.", False)],
)
def test_states_answer(line: str, expected: bool) -> None:
    assert states_answer(line) is expected


def test_answer_space_validation_and_round_trip() -> None:
    assert NUMERIC.size == float("inf") and LETTERS.size == 4
    assert AnswerSpace.from_json(LETTERS.to_json()) == LETTERS
    for bad in (lambda: AnswerSpace("free"), lambda: AnswerSpace("choice", labels=("A",)),  # type: ignore[arg-type]
                lambda: AnswerSpace("candidates")):
        with pytest.raises(SIAError):
            bad()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18 - 9 = 9\n\nTherefore, Paco ate 9 more cookies than those he gave to his friend.", "9"),
        ("4 + 8 = 12\nThe final number of birds sitting on the fence is 12 birds.", "12"),
        ("\\[49 + 40 = 89\\]\n\nSo, the store had a total of 89 bottles altogether.\n\n", "89"),
        ("I cannot tell.", None),
    ],
)
def test_numeric_answer_stated_in_prose(text: str, expected: str | None) -> None:
    assert parse_answer(text, NUMERIC) == expected


def test_choice_in_prose_needs_an_explicit_label() -> None:
    space = parse_choices("A) red B) blue C) green")
    assert parse_answer("So the correct option is (B) blue.", space) == "B"
    assert parse_answer("A plant is green because of chlorophyll.", space) is None

"""Parsing, normalising and comparing answers: the probe, the answer line and the grade must agree."""

from __future__ import annotations

import pytest

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import (
    NUMERIC,
    AnswerSpace,
    normalize_number,
    parse_answer,
    parse_choices,
    same_answer,
    split_inline_choices,
    states_answer,
)

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
        ("(a) x\n(b) y\n(c) z", ("A", "B", "C"), ("x", "y", "z")),
        ("1) x 2) y 3) z", ("1", "2", "3"), ("x", "y", "z")),
        ("A: x B: y", ("A", "B"), ("x", "y")),
        ("A) red, B) blue, C) green", ("A", "B", "C"), ("red", "blue", "green")),
        ("A) 1. B) 2.", ("A", "B"), ("1.", "2.")),  # "1." inside an option of the "A)" style is not a label
        ("A) x b) y B) z", ("A", "B"), ("x b) y", "z")),  # another style is option text
    ],
)
def test_parse_choices(text: str, labels: tuple[str, ...], options: tuple[str, ...]) -> None:
    space = parse_choices(text)
    assert (space.kind, space.labels, space.options) == ("choice", labels, options)


@pytest.mark.parametrize("text", ["just text", "", "A) only one", "A) red A) blue", "stray A) red B) blue",
                                  "A) red C) blue", "B) red C) blue", "A) red b) blue", "A) red B. blue",
                                  "A) B) blue"])
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


@pytest.mark.parametrize(
    ("question", "stem", "labels", "options"),
    [
        ("Which is a mammal? A) cat B) fish C) bird", "Which is a mammal?", "ABC", ("cat", "fish", "bird")),
        ("Which is a mammal? a) cat b) fish", "Which is a mammal?", "AB", ("cat", "fish")),
        ("Which is a mammal? A. cat B. fish", "Which is a mammal?", "AB", ("cat", "fish")),
        ("Which is a mammal? (A) cat (B) fish (C) bird", "Which is a mammal?", "ABC", ("cat", "fish", "bird")),
        ("Which is a mammal? (a) cat (b) fish", "Which is a mammal?", "AB", ("cat", "fish")),
        ("Which is a mammal? 1) cat 2) fish", "Which is a mammal?", "12", ("cat", "fish")),
        ("Which is a mammal? 1. cat 2. fish 3. owl", "Which is a mammal?", "123", ("cat", "fish", "owl")),
        ("Which is a mammal?\nA) cat\nB) fish\nC) bird", "Which is a mammal?", "ABC", ("cat", "fish", "bird")),
        ("Which is a mammal?\n\n1. cat\n2. fish\n", "Which is a mammal?", "12", ("cat", "fish")),
        ("Pick the mammal:\n(a) cat\n(b) fish", "Pick the mammal:", "AB", ("cat", "fish")),
        ("Pick the mammal. A) cat B) fish", "Pick the mammal.", "AB", ("cat", "fish")),
        ("A ball is dropped.\nWhat falls?\nA) ball\nB) sky", "A ball is dropped.\nWhat falls?", "AB", ("ball", "sky")),
        ("How long is it? A. 1.5 m B. 2.5 m", "How long is it?", "AB", ("1.5 m", "2.5 m")),
        ("What is 2+3? A) 4 B) 5 C) 6 D) 7 E) 8", "What is 2+3?", "ABCDE", ("4", "5", "6", "7", "8")),
        ("What is the total? A) 5, B) 7, C) 12", "What is the total?", "ABC", ("5", "7", "12")),
        ("What is 1+1? A) 1. B) 2.", "What is 1+1?", "AB", ("1.", "2.")),
        ('He said "which one?" (A) this (B) that', 'He said "which one?"', "AB", ("this", "that")),
        # prose labels before the stem ends are skipped; the options after it are found
        ("Plan A) costs 5 and plan B) costs 7. Which is cheaper?\nA) plan A\nB) plan B",
         "Plan A) costs 5 and plan B) costs 7. Which is cheaper?", "AB", ("plan A", "plan B")),
    ],
)
def test_split_inline_choices(question: str, stem: str, labels: str, options: tuple[str, ...]) -> None:
    found = split_inline_choices(question)
    assert found is not None
    assert found[0] == stem
    assert (found[1].kind, found[1].labels, found[1].options) == ("choice", tuple(labels), options)
    assert question.startswith(stem) and found[1] == parse_choices(question[len(stem):])  # the rest is the options


@pytest.mark.parametrize(
    "question",
    [
        "Plan A) costs 5 and plan B) costs 7. What is the total cost?",
        "He scored 3. Then 5 more. How many?",
        "Section A) has 4 rows and section B) has 6. How many rows?",
        "A) costs 5 and B) costs 7. What is the total?",  # no stem before the first label
        "Box A) holds 3 balls.\nBox B) holds 4 balls.\nHow many balls?",
        "Group A. has 3 and group B. has 4. What is the total?",
        "Step 1. Add 3 and 4. Step 2. Multiply by 2. What is the result?",
        "He ran 1. 5 km and 2. 3 km. How far did he run?",
        "A farmer has:\n1. 5 cows\n2. 3 pigs\nHow many animals does he have?",  # a list inside the question
        "There are 2 boxes. 1. Box one has 3 balls. 2. Box two has 4 balls. How many balls?",
        "John has 5 apples. A) He eats 2. B) He buys 3. How many apples does he have?",
        "Dr. A. Smith and B. Jones met. How many people met?",
        "The price rose 1.5 times. What is 2.5 times 4?",
        "What is 1.5 + 2.5? Round to 1. decimal.",
        "A baker made 24 muffins and sold 9. How many are left?",
        "Which is bigger? A) 5",  # one option
        "Which is bigger? A) 5 C) 7",  # out of order
        "Which is bigger? B) 5 C) 7",  # not from A
        "Which is bigger? A) 5 b) 7",  # mixed case
        "Which is bigger? A) 5 B. 7",  # mixed closing mark
        "Which is bigger? (A) 5 B) 7",  # mixed brackets
        "Which is bigger? A)5 B)7",  # labels must stand alone
        "",
        "   ",
    ],
)
def test_split_inline_choices_leaves_other_questions_alone(question: str) -> None:
    assert split_inline_choices(question) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("so the answer is \\boxed{\\frac{1}{2}}", "0.5"),
    ("The answer is \\(\\dfrac{15}{3}\\).", "5"),
    ("The answer is \\tfrac{3}{4} of the cake", "0.75"),
    ("The answer is \\frac{1,000}{4}", "250"),
])
def test_latex_fractions_are_one_number(text: str, expected: str) -> None:
    assert parse_answer(text, NUMERIC) == expected


def test_answer_key_groups_equal_answers() -> None:
    """The one normaliser votes group by: equal values, labels and option texts share a key."""
    from sia_monitor.tasks.answers import answer_key

    same = [["18", "18.0", "18.00"], ["1,000", "1000"], ["1/2", "0.5", "\\frac{1}{2}", "\\dfrac{2}{4}"]]
    for group in same:
        assert len({answer_key(a, NUMERIC) for a in group}) == 1, group
    assert len({answer_key(group[0], NUMERIC) for group in same}) == len(same)
    space = parse_choices("A) red B) blue C) green")
    assert {answer_key(a, space) for a in ("b", "B", "(B)", "Blue", " blue ")} == {"B"}
    assert answer_key("green", space) == "C" != answer_key("A", space)
    assert answer_key(None, NUMERIC) is None and answer_key("  ", space) is None
    words = AnswerSpace("candidates", candidates=("Yes", "No"))
    assert answer_key("yes", words) == answer_key("YES", words) != answer_key("no", words)


def test_the_letter_of_the_correct_option_is_an_answer_line() -> None:
    """The default model ends 27 of its 1024 committed ARC traces this way; an earlier option's "D)" was read."""
    space = AnswerSpace("choice", labels=tuple("ABCD"), options=("w", "x", "y", "z"))
    text = "D) z - This option is too specific.\n\nTherefore, the letter of the correct option is C."
    assert parse_answer(text, space) == "C"
    assert parse_answer("The correct letter of the correct option is B.", space) == "B"
    # "option is" followed by prose states nothing: the explicit label on the last line still counts
    assert parse_answer("Therefore, the best explanation is:\n\nD) z - This option is the most accurate", space) == "D"

"""Answer spaces, and the one place where answers are parsed, normalised and compared.

Why one module: the probe's candidate answers, the final answer read from the generated text and the grading
against a gold answer must agree on what "the same answer" means (`18`, `18.0`, `1,000`, `$5`, `(B)`);
if each did its own parsing, the entropy curve and the correctness label would silently disagree.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Literal

from sia_monitor.errors import SIAError

AnswerKind = Literal["numeric", "choice", "candidates"]
ANSWER_KINDS: tuple[str, ...] = ("numeric", "choice", "candidates")

_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
# "answer is" / "answer:", and "... the correct option (choice, letter) is E": the small models' other answer line
# (a label right after "is": "This option is too specific" states nothing)
_ANSWER_LINE = re.compile(r"(?:answer\s*(?:is|:)|(?:option|choice|letter)\s+is\s+(?=\(?[A-J1-9]\)?(?:[\s.,;:!)]|$)))"
                          r"\s*[:\s]*(.+)", re.IGNORECASE)
# An option label: "A)", "(A)", "A.", "A:" (also a-e and 1-5), standing alone and followed by white space, so
# "1.5", "B)x" or "(A)-like" are never labels.
_LABEL = re.compile(r"(?<!\S)(?P<open>\()?(?P<label>[A-Ea-e1-5])(?P<close>(?(open)\)|[).:]))(?=\s)")
_LABEL_RUNS = ("ABCDE", "abcde", "12345")
# Where inline options may begin: at the start of a line, or right after the end of the question stem
# ("...?", "...:", "...." or "...!", maybe closed by a quote or bracket) and white space. This is what tells
# "Which is larger? A) 5 B) 7" from "Plan A) costs 5 and plan B) costs 7."
_STEM_END = re.compile(r"(?:^|\n)[ \t]*$|[?:.!][\"')\]]?\s+$")


@dataclass(frozen=True)
class AnswerSpace:
    """What answers look like: numbers, option labels, or a given list of strings.

    `labels` are the option labels for `choice` (e.g. A-D or 1-4, as the question writes them);
    `options` their texts (may be empty when only labels are known); `candidates` the strings for
    `candidates`.
    """

    kind: AnswerKind
    labels: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise SIAError(f"Unknown answer type '{self.kind}'.", f"Use one of: {', '.join(ANSWER_KINDS)}.")
        if self.kind == "choice" and len(self.labels) < 2:
            raise SIAError("A choice question needs at least two options.", 'Pass --choices "A) ... B) ...".')
        if self.kind == "candidates" and not self.candidates:
            raise SIAError("The 'candidates' answer type needs at least one candidate answer.")

    @property
    def size(self) -> float:
        """Number of possible answers (infinite for numbers): calibrators normalise entropy by its log."""
        if self.kind == "choice":
            return float(len(self.labels))
        if self.kind == "candidates":
            return float(len(self.candidates))
        return math.inf

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "labels": list(self.labels), "options": list(self.options),
                "candidates": list(self.candidates)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AnswerSpace:
        return cls(
            kind=data["kind"],  # type: ignore[arg-type]
            labels=tuple(data.get("labels", ()) or ()),  # type: ignore[arg-type]
            options=tuple(data.get("options", ()) or ()),  # type: ignore[arg-type]
            candidates=tuple(data.get("candidates", ()) or ()),  # type: ignore[arg-type]
        )


NUMERIC = AnswerSpace("numeric")


def _label_style(match: re.Match[str]) -> tuple[bool, str, int]:
    """A label's style: bracketed or not, its closing mark, and which run (A-E, a-e, 1-5) it belongs to."""
    label = match.group("label")
    return bool(match.group("open")), match.group("close"), next(i for i, run in enumerate(_LABEL_RUNS) if label in run)


def _option_run(text: str, first: re.Match[str]) -> list[tuple[str, str]]:
    """The (label, option text) pairs from `first` to the end of `text`: labels in order, one style throughout.

    Why in order and one style: "A) 1. B) 2." has options "1." and "2.", not a label "1"; a label of
    another style or out of order is part of an option's text.
    """
    style = _label_style(first)
    run = _LABEL_RUNS[style[2]]
    chain = [first]
    for match in _LABEL.finditer(text, first.end()):
        if len(chain) == len(run):
            break
        if match.group("label") == run[len(chain)] and _label_style(match) == style:
            chain.append(match)
    ends = [m.start() for m in chain[1:]] + [len(text)]
    return [(m.group("label").upper(), text[m.end():end].strip().rstrip(",;").strip())
            for m, end in zip(chain, ends, strict=True)]


def parse_choices(text: str) -> AnswerSpace:
    """Parse `"A) first B) second"` into a choice space.

    Accepted labels: `A)`, `(A)`, `A.`, `A:`, lower-case `a)` ..., and `1)` / `1.` ... (A-E or 1-5), inline or
    one per line, starting at the first label and running in order in one style.
    """
    stripped = text.strip()
    first = _LABEL.match(stripped)
    pairs = _option_run(stripped, first) if first and first.group("label") in "Aa1" else []
    if len(pairs) < 2:
        raise SIAError(
            f"Could not parse the choices {text!r}.",
            'Write them as "A) first option B) second option" (labels A-E or 1-5, in order).',
        )
    if any(not option for _, option in pairs):
        raise SIAError(f"The choices {text!r} leave an option empty.", 'Write them as "A) first B) second".')
    return AnswerSpace("choice", labels=tuple(label for label, _ in pairs), options=tuple(o for _, o in pairs))


def split_inline_choices(question: str) -> tuple[str, AnswerSpace] | None:
    """Split a question that ends with its options into (the stem, the choice space), else return None.

    Why this strict: the options must be recognised without `--choices`, but a numeric word problem must never
    be mistaken for multiple choice ("Plan A) costs 5 and plan B) costs 7. What is the total cost?"). So the
    first label is A, a or 1 and starts a line or follows the end of the stem ("?", ":", ".", "!" and white
    space); at least two options run in order in one label style to the end of the question; the stem is not
    empty; and no option spans lines or asks a question (that is prose after a list, not options). Labels:
    `A)`, `(A)`, `A.`, `A:`, `a)`, `1)`, `1.` and the like, inline or one per line.
    """
    for first in _LABEL.finditer(question):
        if first.group("label") not in "Aa1" or not _STEM_END.search(question, 0, first.start()):
            continue
        stem = question[: first.start()].strip()
        pairs = _option_run(question, first)
        if not stem or len(pairs) < 2 or any(not o or "\n" in o or "?" in o for _, o in pairs):
            continue
        return stem, parse_choices(question[first.start():])
    return None


def normalize_number(text: str) -> str | None:
    """Canonical string of a number: `"1,000"`→`"1000"`, `"18.0"`→`"18"`, `"$5"`→`"5"`, `"0.50"`→`"0.5"`.

    Returns None when `text` holds no number. Fractions `a/b` are evaluated.
    """
    cleaned = text.strip().replace("$", "").replace(",", "").replace(" ", "")
    cleaned = cleaned.rstrip(".")
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:/(\d+(?:\.\d+)?))?", cleaned)
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2):
        denominator = float(match.group(2))
        if denominator == 0:
            return None
        value /= denominator
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e6 else repr(value)


_FRACTION = re.compile(r"\\[dt]?frac\{\s*(-?[\d.,]+)\s*\}\{\s*([\d.,]+)\s*\}")


def numbers_in(text: str) -> list[str]:
    """Every number written in `text`, normalised, in order of appearance (duplicates kept)."""
    found = []
    for match in _NUMBER.finditer(text):
        normal = normalize_number(match.group(0))
        if normal is not None:
            found.append(normal)
    return found


_EXPRESSION = re.compile(r"[\d(][\d\s.,+\-*/×÷()]*[\d)]")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError("not plain arithmetic")


def arithmetic_results(text: str) -> list[str]:
    """Values of the plain arithmetic expressions written in `text` ("24 - 9" gives "15"), in order.

    Why: a reasoning line often writes the computation before its result ("Muffins left = 24 - 9"), and
    the result is then the likeliest answer although it is not yet written anywhere.
    """
    results = []
    for match in _EXPRESSION.finditer(text.replace("\\times", "*").replace("\\div", "/")):
        expression = match.group(0).replace("×", "*").replace("÷", "/").replace(",", "")
        if not re.search(r"\d\s*[-+*/]\s*[\d(]", expression):
            continue
        try:
            value = _evaluate(ast.parse(expression.strip(), mode="eval"))
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, OverflowError):
            continue
        normal = normalize_number(repr(value)) if math.isfinite(value) else None
        if normal is not None:
            results.append(normal)
    return results


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    begin = i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin : i - 1] if depth == 0 else None


def _answer_fragment(text: str) -> str | None:
    """The part of the text that states the final answer: the last `\\boxed{}` or 'answer is' clause."""
    boxed = _boxed(text)
    start, clause = -1, None
    for match in _ANSWER_LINE.finditer(text):
        start, clause, base = match.start(), match.group(1), match.start(1)
    # A clause runs to the end of its line, so a later 'answer is' on the same line sits inside it.
    while clause is not None and (match := _ANSWER_LINE.search(clause)):
        start, clause, base = base + match.start(), match.group(1), base + match.start(1)
    if clause is not None and (boxed is None or start > text.rfind("\\boxed{")):
        inner = _boxed(clause)
        return inner if inner is not None else clause
    return boxed


def _last_line_with(text: str, pattern: re.Pattern[str]) -> str:
    for line in reversed(text.strip().splitlines()):
        if pattern.search(line):
            return line
    return ""


def parse_answer(text: str, space: AnswerSpace) -> str | None:
    """The final answer stated in a generated text, normalised for `space`, or None if it states none."""
    fragment = _answer_fragment(text)
    if space.kind == "numeric":
        if fragment is None:
            # No answer phrase: the model stated it in prose ("Therefore, the basket contains 35 peaches.").
            # Measured on 1000 SVAMP traces of the default model: 64 ended like this. Take the last number
            # of the last line that has one.
            numbers = numbers_in(_last_line_with(text, _NUMBER))
            return numbers[-1] if numbers else None
        fragment = re.sub(r"\\(?:text|mathrm)\{[^}]*\}|\\[,!;]", "", fragment)
        fragment = _FRACTION.sub(r"\1/\2", fragment)  # \frac{1}{2} is the number 1/2, not "1" then "2"
        numbers = numbers_in(fragment)
        return numbers[0] if numbers else None
    if space.kind == "choice":
        if fragment is None:
            # Prose without an answer phrase: only an explicit "(B)" or "B)" counts, never a bare capital.
            labels = "|".join(re.escape(label) for label in space.labels)
            explicit = re.compile(rf"\(({labels})\)|(?<![A-Za-z0-9])({labels})\)")
            match = None
            for match in explicit.finditer(_last_line_with(text, explicit)):
                pass
            return (match.group(1) or match.group(2)).upper() if match else None
        labels = "|".join(re.escape(label) for label in space.labels)
        label_re = rf"(?<![A-Za-z0-9])\(?({labels})(?![A-Za-z0-9])"
        # Labels as written first; a lowercase "a" is more often the article ("a kilometer") than a label.
        if match := re.search(label_re, fragment):
            return match.group(1).upper()
        hits = [(len(option), label) for label, option in zip(space.labels, space.options, strict=False)
                if option and re.search(rf"(?<![A-Za-z0-9]){re.escape(option)}(?![A-Za-z0-9])", fragment,
                                        re.IGNORECASE)]
        if hits:  # the longest whole-word match, so "kilometer" is not read as option "meter"
            return max(hits)[1]
        match = re.search(label_re, fragment, re.IGNORECASE)
        return match.group(1).upper() if match else None
    haystack = (fragment or text).lower()
    hits = [(haystack.rfind(c.lower()), c) for c in space.candidates if c.lower() in haystack]
    return max(hits)[1] if hits else None


def answer_key(answer: str | None, space: AnswerSpace) -> str | None:
    """The one form of an answer that equal answers share, so votes and tallies group them: numbers by value
    (`18`, `18.0`; `1,000`, `1000`; `1/2`, `0.5`), option labels case-insensitively and an option's text as its
    label, candidate strings case-insensitively. None for no answer."""
    if answer is None or not answer.strip():
        return None
    text = answer.strip()
    if space.kind == "numeric":
        value = normalize_number(_FRACTION.sub(r"\1/\2", text))
        return value if value is not None else text
    if space.kind == "choice":
        for label, option in zip(space.labels, space.options, strict=False):
            if text.lower() in (label.lower(), f"({label.lower()})", option.strip().lower()):
                return label.upper()
        return text.upper()
    return text.casefold()


def states_answer(line: str) -> bool:
    """Whether a line of reasoning is the final-answer line (which is not itself a reasoning step)."""
    return bool(_ANSWER_LINE.search(line)) or "\\boxed{" in line


def same_answer(predicted: str | None, gold: str, space: AnswerSpace, tolerance: float = 1e-4) -> bool:
    """Grade `predicted` against `gold`: numbers within a relative tolerance, labels case-insensitively."""
    if predicted is None:
        return False
    if space.kind == "numeric":
        a, b = normalize_number(predicted), normalize_number(gold)
        if a is None or b is None:
            return False
        return math.isclose(float(a), float(b), rel_tol=tolerance, abs_tol=tolerance)
    return predicted.strip().lower() == gold.strip().lower()


@dataclass
class AnswerDistribution:
    """What a probe returns: a distribution over normalised answers, its entropy, and the mass it covered.

    `probs` are renormalised over the answers the estimator enumerated; `covered` is the model's total
    probability on those answers before renormalising (1.0 = nothing was missed).
    """

    probs: dict[str, float] = field(default_factory=dict)
    covered: float = 0.0

    @property
    def entropy_bits(self) -> float:
        return -sum(p * math.log2(p) for p in self.probs.values() if p > 0)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probs.items(), key=lambda kv: -kv[1])[:k]

    @classmethod
    def from_masses(cls, masses: dict[str, float]) -> AnswerDistribution:
        total = sum(masses.values())
        if total <= 0:
            return cls({}, 0.0)
        return cls({a: m / total for a, m in masses.items()}, min(total, 1.0))

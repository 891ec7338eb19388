"""Deciding, one token at a time, where a reasoning step ends.

Why incremental: the monitor runs inside `generate`, once per token. Re-decoding the whole text each token
would cost O(n^2); instead each token id is decoded once (memoised per tokenizer) and appended to the
current step's text, and the boundary rule looks only at that text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import states_answer

SegmenterMode = Literal["line", "sentence", "regex"]
SEGMENTER_MODES: tuple[str, ...] = ("line", "sentence", "regex")
_SENTENCE_END = re.compile(r"(?<![\d\s])[.!?]['\")\]]?$|\n")


class TokenText:
    """Decodes single token ids, memoised; byte pieces that split a UTF-8 character are held back."""

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer
        self._memo: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        text = self._memo.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id], skip_special_tokens=False)  # type: ignore[attr-defined]
            self._memo[token_id] = text
        return text

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=False)  # type: ignore[attr-defined]


@dataclass
class CompletedStep:
    """A finished piece of text: a reasoning step, or the final-answer line (`is_answer`)."""

    text: str
    token_start: int  # index among generated tokens, inclusive
    token_end: int  # exclusive
    is_answer: bool
    at_line_start: bool  # whether the probe suffix can follow directly (else it needs a newline first)


@dataclass
class StepSegmenter:
    """Per-row state machine: feed generated token pieces, get a `CompletedStep` when one closes.

    Modes: `line` (default) ends a step at a newline closing a non-empty line; `sentence` also at
    '.', '!' or '?' (not after a digit, so "1." list markers and decimals don't split); `regex` when
    `pattern` matches at the end of the current step's text.
    """

    mode: SegmenterMode = "line"
    pattern: str | None = None
    _text: list[str] = field(default_factory=list)
    _start: int = 0
    _count: int = 0
    _regex: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if self.mode not in SEGMENTER_MODES:
            raise SIAError(f"Unknown step mode '{self.mode}'.", f"Use one of: {', '.join(SEGMENTER_MODES)}.")
        if self.mode == "regex":
            if not self.pattern:
                raise SIAError("Step mode 'regex' needs a pattern.", "Pass --step-regex PATTERN.")
            try:
                self._regex = re.compile(self.pattern)
            except re.error as exc:
                raise SIAError(f"The step regex {self.pattern!r} is invalid: {exc}.") from exc

    def _closes(self, text: str, piece: str) -> bool:
        if self.mode == "line":
            return "\n" in piece
        if self.mode == "sentence":
            return bool(_SENTENCE_END.search(text.rstrip(" ")))
        assert self._regex is not None
        return any(m.end() == len(text) for m in self._regex.finditer(text))

    def feed(self, piece: str) -> CompletedStep | None:
        """Add the next generated token's text; return the step it closes, if any."""
        self._text.append(piece)
        self._count += 1
        text = "".join(self._text)
        if not self._closes(text, piece):
            return None
        start = self._start
        self._text.clear()
        self._start = self._count
        if not text.strip():
            return None
        return CompletedStep(
            text=text.strip(),
            token_start=start,
            token_end=self._count,
            is_answer=states_answer(text),
            at_line_start=text.endswith("\n"),
        )

    @property
    def pending_text(self) -> str:
        return "".join(self._text)

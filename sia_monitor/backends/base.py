"""The one interface between generation and everything downstream of it.

Why a protocol: the guardrail (`live.LiveBackend`, `GuardedRun`), the TUI's live source and `collect` need
the same few things from whatever generates: one generation streamed as `MonitorEvent`s, a batch of
trajectories, cancelling, stopping one row, forcing the answer line, and the identity (model id, step mode,
calibrator) the records carry. Depending on this rather than on transformers lets a serving-engine client
stand in for the in-process `in_process.Monitor`, which is the first implementation.

Contract, for a new backend:
- `stream` yields token and step events in order, then exactly one final event; setting `cancel` (or closing
  the iterator) stops it within a token, and the final event still comes (finish_reason `cancelled`).
- `generate` returns one trajectory per question, in order; `on_event` hears every row's events as they
  happen, each row's final event the moment that row ends; a row handed to `row_stopper.stop(row)` ends with
  finish_reason `stopped`; `budgets` (optional) gives each question its own token budget, at most the
  settings' `max_new_tokens`, and a row that spends it ends with finish_reason `length`. An empty batch
  returns [].
- `sample` generates samples of one question for a vote: `first` start together; after every token (once the
  rows that ended have had their final events) `schedule(running)` says how many new samples to start in
  the freed rows, or None to end the rest now (finish_reason `cancelled`). Sample k is row k in events and
  for `row_stopper`; a stopped row frees its compute at once. Returns every started sample, in order.
- `force_answer` has the model write its answer line now, after `reasoning`; returns (line, parsed answer,
  tokens generated).
- `distribution_after` is the answer distribution a probe reads after the chat prompt and given generated
  token ids (so two backends can be compared on one prefix); `with_options` is the same model with another
  step mode and scorer.

Implementations: `in_process.Monitor` (transformers, in this process) and `engine.EngineBackend` (a serving
engine over HTTP).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sia_monitor.errors import SIAError
from sia_monitor.scoring import StepScorer
from sia_monitor.tasks.answers import AnswerDistribution, AnswerSpace
from sia_monitor.trajectory import MonitorEvent, Trajectory

if TYPE_CHECKING:
    from sia_monitor.probing.segmentation import SegmenterMode
    from sia_monitor.probing.stopping import RowStopper


@dataclass
class GenerationSettings:
    """Decoding settings recorded with every trajectory (greedy when temperature is 0)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        # Checked here so every caller (CLI, library, TUI resamples) is refused alike: transformers would
        # otherwise run a negative or NaN temperature greedily and say nothing.
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise SIAError(f"--temperature must be 0 (greedy) or a positive number, not {self.temperature}.")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise SIAError(f"top_p must be in (0, 1], not {self.top_p}.")
        if self.max_new_tokens < 1:
            raise SIAError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}.")

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature > 0:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def as_batch(questions: str | Sequence[str], spaces: AnswerSpace | Sequence[AnswerSpace]
             ) -> tuple[list[str], list[AnswerSpace]]:
    """`generate`'s arguments as one list of questions and one answer space per question."""
    questions = [questions] if isinstance(questions, str) else list(questions)
    return questions, [spaces] * len(questions) if isinstance(spaces, AnswerSpace) else list(spaces)


def check_budgets(budgets: Sequence[int] | None, rows: int, max_new_tokens: int) -> None:
    """Refuse per-row token budgets that do not give each row 1 to `max_new_tokens` tokens."""
    if budgets is not None and (len(budgets) != rows or not all(1 <= b <= max_new_tokens for b in budgets)):
        raise SIAError(f"budgets must give each of the {rows} questions 1 to {max_new_tokens} tokens.")


@runtime_checkable
class Backend(Protocol):
    """A model that generates with the SIA probe attached (see the module docstring for the contract)."""

    segmenter: str  # the step mode ("line", "sentence", "regex")
    step_regex: str | None
    scorer: StepScorer | None  # fills each step's p_correct; None: entropy only

    @property
    def model_id(self) -> str:
        """The id trajectories record and calibrators are matched against."""
        ...

    def stream(
        self,
        question: str,
        space: AnswerSpace,
        settings: GenerationSettings | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
    ) -> Iterator[MonitorEvent]: ...

    def generate(
        self,
        questions: str | Sequence[str],
        spaces: AnswerSpace | Sequence[AnswerSpace],
        settings: GenerationSettings | None = None,
        on_event: Callable[[MonitorEvent], None] | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
        budgets: Sequence[int] | None = None,
    ) -> list[Trajectory]: ...

    def sample(
        self,
        question: str,
        space: AnswerSpace,
        settings: GenerationSettings | None = None,
        first: int = 1,
        schedule: Callable[[int], int | None] | None = None,
        on_event: Callable[[MonitorEvent], None] | None = None,
        cancel: threading.Event | None = None,
        row_stopper: RowStopper | None = None,
    ) -> list[Trajectory]: ...

    def force_answer(
        self, question: str, space: AnswerSpace, reasoning: str, max_new_tokens: int = 16
    ) -> tuple[str, str | None, int]: ...

    def distribution_after(
        self, question: str, space: AnswerSpace, tokens: Sequence[int], at_line_start: bool = True
    ) -> AnswerDistribution: ...

    def with_options(self, segmenter: SegmenterMode, step_regex: str | None, scorer: StepScorer | None
                     ) -> Backend: ...

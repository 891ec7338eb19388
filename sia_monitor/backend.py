"""The one interface between generation and everything downstream of it.

Why a protocol: the guardrail (`live.LiveBackend`, `GuardedRun`), the TUI's live source and `collect` need
the same few things from whatever generates: one generation streamed as `MonitorEvent`s, a batch of
trajectories, cancelling, stopping one row, forcing the answer line, and the identity (model id, step mode,
calibrator) the records carry. Depending on this rather than on transformers lets a serving-engine client
stand in for the in-process `runner.Monitor`, which is the first implementation.

Contract, for a new backend:
- `stream` yields token and step events in order, then exactly one final event; setting `cancel` (or closing
  the iterator) stops it within a token, and the final event still comes (finish_reason `cancelled`).
- `generate` returns one trajectory per question, in order; `on_event` hears every row's events as they
  happen, each row's final event the moment that row ends; a row handed to `row_stopper.stop(row)` ends with
  finish_reason `stopped`. An empty batch returns [].
- `force_answer` has the model write its answer line now, after `reasoning`; returns (line, parsed answer,
  tokens generated).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .answers import AnswerSpace
from .scoring import StepScorer
from .trajectory import MonitorEvent, Trajectory

if TYPE_CHECKING:
    from .runner import GenerationSettings
    from .stopping import RowStopper


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
    ) -> list[Trajectory]: ...

    def force_answer(
        self, question: str, space: AnswerSpace, reasoning: str, max_new_tokens: int = 16
    ) -> tuple[str, str | None, int]: ...

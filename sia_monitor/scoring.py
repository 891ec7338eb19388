"""What a step scorer (a fitted calibrator) sees, and the one method it must have.

The monitor computes `p_correct` live from a `Prefix`; the calibrator is trained on `Prefix.of(trajectory, k)`
for every k of saved trajectories. Because both go through this one view, the features a calibrator was
fitted on are exactly the ones it gets at run time. The core library defines only the interface, so it does
not depend on scikit-learn; `calibrators/` implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sia_monitor.tasks.answers import AnswerSpace
from sia_monitor.trajectory import StepRecord, Trajectory


@dataclass(frozen=True)
class Prefix:
    """A generation as it stood right after its k-th reasoning step (k = len(steps)).

    `token_entropy` / `token_confidence` hold the per-token signals of the tokens generated so far
    (`steps[-1].tokens_so_far` of them).
    """

    question: str
    space: AnswerSpace
    steps: Sequence[StepRecord]
    token_entropy: Sequence[float]
    token_confidence: Sequence[float]

    @classmethod
    def of(cls, trajectory: Trajectory, k: int) -> Prefix:
        """The prefix of a saved trajectory after its first k steps (1 <= k <= number of steps)."""
        if not 1 <= k <= len(trajectory.steps):
            raise ValueError(f"k={k} is outside 1..{len(trajectory.steps)}")
        tokens = trajectory.steps[k - 1].tokens_so_far
        return cls(
            question=trajectory.question,
            space=trajectory.answer_space,
            steps=trajectory.steps[:k],
            token_entropy=trajectory.token_entropy[:tokens],
            token_confidence=trajectory.token_confidence[:tokens],
        )


class StepScorer(Protocol):
    """Anything that turns a partial trajectory into P(the final answer will be correct)."""

    def p_correct(self, prefix: Prefix) -> float: ...


def p_correct_curve(scorer: StepScorer, trajectory: Trajectory) -> list[float]:
    """P(correct) after each step of a saved trajectory: the scorer's own batched `curve` where it has one
    (a fitted calibrator does), else one `p_correct` per prefix."""
    curve = getattr(scorer, "curve", None)
    if curve is not None:
        return list(curve(trajectory))
    return [scorer.p_correct(Prefix.of(trajectory, k)) for k in range(1, len(trajectory.steps) + 1)]

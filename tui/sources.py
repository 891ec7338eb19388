"""Where the app's events come from: one protocol, two implementations, so the app never asks which it has.

Both wrap a `sia_monitor.guardrail.guarded.GuardedRun`, so the guardrail, the user's stop / resample and pausing
behave the same on a live model and on a saved file; only the attempt backend differs (`LiveBackend`
generates, `ReplayBackend` plays records back at their recorded pace times `speed`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from sia_monitor.guardrail.guarded import GuardedRun
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.replay import ReplayBackend, load_replay
from sia_monitor.scoring import StepScorer
from sia_monitor.tasks.answers import AnswerSpace
from sia_monitor.trajectory import MonitorEvent, Trajectory

if TYPE_CHECKING:
    from sia_monitor.backends.base import Backend, GenerationSettings


@runtime_checkable
class EventSource(Protocol):
    """What the app needs from a source of events. `events()` blocks and runs in a worker thread; every
    other method may be called from the UI thread while it runs and takes effect within one token."""

    mode: Literal["live", "replay"]
    model_id: str
    question: str
    space: AnswerSpace
    segmenter: str
    calibrated: bool  # whether steps carry P(correct)

    @property
    def policy(self) -> GuardrailPolicy: ...
    @property
    def auto(self) -> bool: ...
    @auto.setter
    def auto(self, value: bool) -> None: ...
    @property
    def paused(self) -> bool: ...

    def events(self) -> Iterator[MonitorEvent]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self) -> None: ...
    def resample(self) -> None: ...
    def another(self) -> bool: ...
    def cancel(self) -> None: ...
    def describe(self) -> str: ...
    def recorded_seconds(self, attempt: int, tokens: int) -> float | None: ...


class _GuardedSource:
    """The shared half: a `GuardedRun` and the controls, forwarded."""

    mode: Literal["live", "replay"]
    run: GuardedRun

    @property
    def policy(self) -> GuardrailPolicy:
        return self.run.policy

    @property
    def auto(self) -> bool:
        return self.run.auto

    @auto.setter
    def auto(self, value: bool) -> None:
        self.run.auto = value

    @property
    def paused(self) -> bool:
        return self.run.paused

    def events(self) -> Iterator[MonitorEvent]:
        return self.run.events()

    def pause(self) -> None:
        self.run.pause()

    def resume(self) -> None:
        self.run.resume()

    def stop(self) -> None:
        self.run.stop()

    def resample(self) -> None:
        self.run.resample()

    def another(self) -> bool:
        return self.run.another()

    def cancel(self) -> None:
        self.run.cancel()


class LiveSource(_GuardedSource):
    """A question generated now by a backend (`sia_monitor.backends.base.Backend`, e.g. a loaded `Monitor`); with
    P(correct) when the backend has a scorer."""

    mode: Literal["live", "replay"] = "live"

    def __init__(
        self,
        monitor: Backend,
        question: str,
        space: AnswerSpace,
        settings: GenerationSettings | None = None,
        policy: GuardrailPolicy | None = None,
        auto: bool = False,
    ) -> None:
        from sia_monitor.guardrail.live import LiveBackend
        from sia_monitor.probing.monitor import segmenter_label

        policy = policy or GuardrailPolicy()
        self.backend = LiveBackend(monitor, question, space, settings, policy)
        self.run = GuardedRun(self.backend, policy, auto=auto)
        self.model_id = monitor.model_id
        self.question = question
        self.space = space
        self.segmenter = segmenter_label(monitor.segmenter, monitor.step_regex)
        self.calibrated = monitor.scorer is not None

    def describe(self) -> str:
        settings = self.backend.settings_for(self.run.attempt)
        sampling = f"T {settings.temperature:g}, seed {settings.seed}" if settings.temperature > 0 else "greedy"
        return f"live · {sampling}"

    def recorded_seconds(self, attempt: int, tokens: int) -> float | None:
        return None


class ReplaySource(_GuardedSource):
    """Saved trajectories played back as events: `speed` 1 = recorded pace, 4 = four times faster, 0 = at once.

    `scorer` gives P(correct) to steps saved without it (a calibrator for the trajectories' model and answer
    type); without one, the replay shows the entropy only.
    """

    mode: Literal["live", "replay"] = "replay"

    def __init__(
        self,
        trajectories: Sequence[Trajectory],
        speed: float = 1.0,
        scorer: StepScorer | None = None,
        policy: GuardrailPolicy | None = None,
        auto: bool = False,
    ) -> None:
        self.backend = ReplayBackend(trajectories, speed, scorer)
        self.run = GuardedRun(self.backend, policy or GuardrailPolicy(), auto=auto)
        first = self.backend.trajectories[0]
        self.model_id = first.model_id
        self.question = first.question
        self.space = first.answer_space
        self.segmenter = first.segmenter
        self.calibrated = self.backend.calibrated
        self.speed = speed

    @classmethod
    def from_file(cls, path: str | Path, item: int = 0, **kwargs: object) -> ReplaySource:
        """Record `item` of a trajectory file (its later records of the same question are its resamples)."""
        return cls(load_replay(path, item), **kwargs)  # type: ignore[arg-type]

    def describe(self) -> str:
        pace = "no wait" if self.speed == 0 else f"×{self.speed:g}"
        return f"replay {pace}"

    def recorded_seconds(self, attempt: int, tokens: int) -> float | None:
        index = min(attempt, len(self.backend.trajectories) - 1)
        return tokens * self.backend.token_seconds(index)

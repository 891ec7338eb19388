"""Guarded generation: a `GuardrailPolicy` acting on a trace while it is generated (or replayed).

One engine, `GuardedRun`, serves both a live model and a saved trajectory: it reads the events of one
attempt from an `AttemptBackend`, asks the policy after every step, and on a decision cancels the attempt
(the backend's generation sees the cancel within one token), then stops, resamples (a new attempt) or forces
the answer line. Every decision is yielded as a `decision` event and recorded in the attempt's
`Trajectory.decisions`; `finish_reason` says how each attempt ended (eos, length, stopped, resampled,
accepted, cancelled). A UI thread can act too (`stop`, `resample`, `pause`, `cancel`, `auto`): those calls
are thread-safe and take effect within one token.

Pausing blocks the producer rather than buffering: `PauseGate.wait()` is called once per token (live: from a
StoppingCriteria inside `generate`; replay: between events), so a paused generation costs no CPU, loses no
event, and resumes exactly where it was.

This module does not import torch: the live backend (`live.LiveBackend`) is imported only when used, so a
replay starts without loading the model stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sia_monitor.guardrail.policy import Action, Decision, GuardrailPolicy
from sia_monitor.tasks.answers import same_answer
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory


class PauseGate:
    """Holds a producer while paused. `wait()` returns at once when open, or as soon as `cancel` is set."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def wait(self, cancel: threading.Event | None = None) -> None:
        while not self._open.wait(0.05):
            if cancel is not None and cancel.is_set():
                return


@dataclass
class ForcedAnswer:
    """The answer line written after reasoning was cut short, and how it was obtained."""

    line: str
    answer: str | None
    tokens: int  # tokens the model generated for it (0 when read from the probe, in a replay)
    source: str  # "model" (a short greedy generate) or "probe" (the last step's top answer)


class AttemptBackend(Protocol):
    """Where the events of one attempt come from: a live model (`live.LiveBackend`) or a saved trace
    (`replay.ReplayBackend`)."""

    model_id: str
    question: str
    max_attempts: int | None  # None: as many as asked for

    def run(self, attempt: int, cancel: threading.Event, gate: PauseGate) -> Iterator[MonitorEvent]:
        """Token and step events of attempt `attempt` (0 = the first), then exactly one final event.

        Must stop within one token of `cancel` being set (and still send the final event), and call
        `gate.wait(cancel)` between tokens.
        """
        ...

    def force_answer(self, trajectory: Trajectory) -> ForcedAnswer:
        """The answer line for a trajectory whose reasoning was cut short by an `accept` decision."""
        ...

    def tokens_saved(self, trajectory: Trajectory, final: MonitorEvent) -> dict[str, int]:
        """What stopping early saved: `tokens_saved` when known (a replay knows how long the trace ran),
        else `tokens_saved_at_most` (the unspent budget)."""
        ...


@dataclass
class GuardedResult:
    """A finished guarded run: the attempt kept, every attempt in order, and every decision taken."""

    best: Trajectory
    attempts: list[Trajectory]
    decisions: list[Decision] = field(default_factory=list)


class GuardedRun:
    """One question, one or more attempts, the policy watching each step. Iterate `events()` in one thread;
    call `stop()`, `resample()`, `pause()`, `resume()`, `cancel()` or set `auto` from any other.

    `auto`: whether the policy acts (a user's keys act either way). Without a `policy` it never does.
    """

    def __init__(self, backend: AttemptBackend, policy: GuardrailPolicy | None = None, auto: bool = True) -> None:
        self.backend = backend
        self.policy = policy or GuardrailPolicy()
        self.auto = auto if policy is not None else False
        self.gate = PauseGate()
        self.attempts: list[Trajectory] = []
        self.decisions: list[Decision] = []
        self.steps: list[StepRecord] = []  # the current attempt's steps so far
        self.attempt = 0
        self.finished = False
        self._lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._closed = False
        self._request: tuple[Action, str] | None = None

    # -- control, from any thread ---------------------------------------------------------------------------
    def stop(self, reason: str = "stopped by the user") -> None:
        """End the current attempt now and keep it; no further attempts."""
        self._ask("stop", reason)

    def resample(self, reason: str = "resampled by the user") -> None:
        """Abandon the current attempt and start a new one (new seed, temperature bump)."""
        self._ask("resample", reason)

    def cancel(self) -> None:
        """End everything now (quit): the current attempt ends as `cancelled` and is kept, nothing is lost."""
        with self._lock:
            self._closed = True
            if self._cancel is not None:
                self._cancel.set()
        self.gate.resume()

    def another(self) -> bool:
        """After the run has ended, open one more attempt (a new seed; the next `events()` call generates it).

        Why: a user who stopped a trace, or read a finished one, may still want a second opinion; the new
        attempt joins `attempts` and the kept one is chosen again over all of them. False when there is none
        to give: the run is still going, it was cancelled (quit), or a replay has no further saved trace.
        """
        with self._lock:
            limit = self.backend.max_attempts
            if not self.finished or self._closed or (limit is not None and self.attempt + 1 >= limit):
                return False
            self.finished = False
            self.attempt += 1
            return True

    def pause(self) -> None:
        self.gate.pause()

    def resume(self) -> None:
        self.gate.resume()

    @property
    def paused(self) -> bool:
        return self.gate.paused

    def _ask(self, action: Action, reason: str) -> None:
        with self._lock:
            if self.finished or self._closed:
                return
            if self._request is None:
                self._request = (action, reason)
            if self._cancel is not None:
                self._cancel.set()
        self.gate.resume()  # a stop while paused must not wait for a resume

    def _take_request(self, tokens: int) -> Decision | None:
        with self._lock:
            request, self._request = self._request, None
        if request is None:
            return None
        action, reason = request
        value = self.steps[-1].p_correct if self.steps else None
        return Decision(action, reason, len(self.steps), tokens, "user", value, by="user")

    # -- the run --------------------------------------------------------------------------------------------
    def events(self) -> Iterator[MonitorEvent]:
        """Every attempt's token, step, decision and final events, in order. Each event's `detail` names its
        attempt; each final event says whether another attempt follows (`more`) and, on the last, which
        attempt is kept (`best`)."""
        while True:
            cancel = threading.Event()
            with self._lock:
                self._cancel = cancel
                if self._closed:
                    cancel.set()
            self.steps = []
            tokens = 0
            decision: Decision | None = None
            final: MonitorEvent | None = None
            for event in self.backend.run(self.attempt, cancel, self.gate):
                event.detail = {**event.detail, "attempt": self.attempt}
                if event.kind == "final":
                    final = event
                    continue
                if event.kind == "token":
                    tokens += 1
                elif event.kind == "step" and event.step is not None:
                    self.steps.append(event.step)
                    tokens = max(tokens, event.step.tokens_so_far)
                yield event
                if decision is None:
                    decision = self._take_request(tokens)
                    if decision is None and event.kind == "step" and self.auto and not cancel.is_set():
                        decision = self.policy.decide(self.steps, self.attempt, self.backend.question)
                    if decision is not None:
                        cancel.set()  # the backend's generation stops within one token
                        decision = self._record(decision)
                        yield decision.event(attempt=self.attempt)
            if decision is None:  # a user's request that arrived as the attempt ended
                decision = self._take_request(tokens)
                if decision is not None:
                    decision = self._record(decision)
                    yield decision.event(attempt=self.attempt)
            if final is None or final.trajectory is None:
                raise RuntimeError("the attempt backend ended without a final event")
            trajectory = yield from self._settle(final, decision)
            self.attempts.append(trajectory)
            more = decision is not None and decision.action == "resample" and not self._closed
            detail: dict[str, Any] = {"attempt": self.attempt, "more": more}
            if not more:
                with self._lock:
                    self.finished = True
                    self._cancel = None
                detail["best"] = best = self.best_index()
                for earlier in self.attempts:  # so a saved file says which attempt was kept
                    earlier.generation["best_attempt"] = best
            yield MonitorEvent("final", row=final.row, trajectory=trajectory, detail=detail)
            if not more:
                return
            self.attempt += 1

    def _record(self, decision: Decision) -> Decision:
        """Keep the decision; a resample with no trace left to resample (a replay's last record) stops."""
        limit = self.backend.max_attempts
        if decision.action == "resample" and limit is not None and self.attempt + 1 >= limit:
            reason = decision.reason.split("; resampling")[0] + "; no other saved trace to resample"
            decision = Decision("stop", reason, decision.step, decision.tokens, decision.signal, decision.value,
                                decision.by)
        self.decisions.append(decision)
        return decision

    def _settle(self, final: MonitorEvent, decision: Decision | None) -> Iterator[MonitorEvent]:
        """Apply the decision to the attempt's trajectory (finish reason, forced answer, record); yields the
        forced answer line as a token event so a viewer sees it written."""
        trajectory = final.trajectory
        assert trajectory is not None
        trajectory.generation = {**trajectory.generation, "attempt": self.attempt}
        if decision is None:
            return trajectory
        saved = self.backend.tokens_saved(trajectory, final) if trajectory.finish_reason != "eos" else {}
        record = decision.to_detail(attempt=self.attempt, **saved)
        if decision.action == "accept" and trajectory.finish_reason != "eos":
            forced = self.backend.force_answer(trajectory)
            yield MonitorEvent("token", text="\n" + forced.line, detail={"attempt": self.attempt, "forced": True})
            trajectory.final_text = trajectory.final_text.rstrip() + "\n" + forced.line
            trajectory.parsed_answer = forced.answer
            trajectory.finish_reason = "accepted"
            trajectory.generation["forced_answer"] = {"tokens": forced.tokens, "source": forced.source}
            record["answer"] = forced.answer
        elif trajectory.finish_reason != "eos":
            trajectory.finish_reason = {"stop": "stopped", "resample": "resampled"}.get(decision.action, "stopped")
        trajectory.decisions.append(record)
        if trajectory.gold is not None:
            trajectory.correct = same_answer(trajectory.parsed_answer, trajectory.gold, trajectory.answer_space)
        return trajectory

    # -- results --------------------------------------------------------------------------------------------
    def best_index(self) -> int:
        return self.policy.best(self.attempts)

    def result(self) -> GuardedResult:
        """The outcome; only after `events()` is exhausted."""
        if not self.attempts:
            raise RuntimeError("the run has not produced an attempt yet")
        return GuardedResult(self.attempts[self.best_index()], list(self.attempts), list(self.decisions))


"""From checked requests to monitored generations: what the worker thread runs.

A request alone: every choice is one `GuardedRun` over the backend, exactly what `sia-monitor run` and the TUI
run, so a step's `sia` fields are the `StepRecord`s that `Monitor.stream` gives for the same question and
seed. Requests batched together (`run_jobs` with several): one `Backend.generate` over their questions, a row
each; a row whose client leaves or whose stop string matches is stopped alone (`RowStopper`), the others go
on. Only requests the guardrail merely observes are batched: acting on a trace (stop, resample, accept) is
`GuardedRun`'s, one trace at a time. `stop` strings are applied to the text as it streams: text that might be the start of a stop string is held
back until it is known not to be, and a match ends the generation (cancelled within a token) with the text
cut before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from sia_monitor.backends.base import Backend, GenerationSettings
from sia_monitor.guardrail.guarded import GuardedRun
from sia_monitor.guardrail.live import LiveBackend
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.serve.engine import Job
from sia_monitor.tasks.answers import AnswerSpace
from sia_monitor.trajectory import MonitorEvent, Trajectory


class StopCutter:
    """Applies `stop` strings to streamed text: `feed` returns what may be shown now, `flush` the rest."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.text = ""  # everything shown so far
        self.hit = False
        self._held = ""

    def feed(self, piece: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            self.text += piece
            return piece
        held = self._held + piece
        cuts = [i for i in (held.find(stop) for stop in self.stops) if i >= 0]
        if cuts:
            shown, self._held, self.hit = held[: min(cuts)], "", True
        else:
            keep = max((k for stop in self.stops for k in range(1, len(stop)) if held.endswith(stop[:k])), default=0)
            shown, self._held = held[: len(held) - keep], held[len(held) - keep:]
        self.text += shown
        return shown

    def flush(self) -> str:
        shown, self._held = self._held, ""
        self.text += shown
        return shown

    def relay(self, event: MonitorEvent, index: int, put: Callable[[Any], None], stop: Callable[[], None]) -> None:
        """Hand a token, step or decision event of choice `index` on as the stop strings allow: text that may
        start a stop string is held back, a match calls `stop` (within a token), and nothing past it is sent."""
        if event.kind == "token":
            shown = self.feed(event.text)
            if self.hit:
                stop()
            if shown:
                put(ChoiceItem(index, MonitorEvent("token", text=shown, detail=event.detail)))
        elif not self.hit:  # steps and decisions after a stop string are past the text shown
            put(ChoiceItem(index, event))

    def release(self, event: MonitorEvent, index: int, put: Callable[[Any], None]) -> None:
        """At the final event: hand on the text held back, since no stop string can follow it now."""
        if rest := self.flush():
            put(ChoiceItem(index, MonitorEvent("token", text=rest, detail=event.detail)))


@dataclass
class ChoiceItem:
    """What the worker hands the request's handler: an event of choice `index`. A final item carries the
    kept attempt's trajectory, the text shown (cut at a stop string) and whether a stop string matched."""

    index: int
    event: MonitorEvent
    text: str = ""
    hit_stop: bool = False


@dataclass
class Generation:
    """One request, checked and resolved, ready to run: one `settings` per choice (`n`)."""

    backend: Backend
    question: str
    space: AnswerSpace
    settings: list[GenerationSettings]
    policy: GuardrailPolicy
    auto: bool
    stops: list[str] = field(default_factory=list)
    seeded: bool = False  # the client chose the seed: run alone, so the same seed gives the same text

    def batch_key(self) -> Hashable | None:
        """What a request must share with others to run in one batch with them (None: it runs alone): one
        choice, an observing guardrail, no seed of its own, and the same sampling settings, step mode and
        calibrator (each row keeps its own token budget). A batch has one seed and its rows' bf16 sums may
        round differently than alone, so a client that fixed a seed gets a generation of its own."""
        if self.auto or self.seeded or len(self.settings) != 1:
            return None
        settings, backend = self.settings[0], self.backend
        return (id(backend.scorer), backend.segmenter, backend.step_regex, settings.temperature, settings.top_p)

    def run(self, put: Callable[[Any], None], job: Job) -> None:
        """In the worker: generate each choice in turn, handing its events to `put` as they happen."""
        for index, settings in enumerate(self.settings):
            if job.cancelled.is_set():
                return
            self._run_choice(index, settings, put, job)

    def _run_choice(self, index: int, settings: GenerationSettings, put: Callable[[Any], None], job: Job) -> None:
        run = GuardedRun(LiveBackend(self.backend, self.question, self.space, settings, self.policy), self.policy,
                         auto=self.auto)
        job.on_cancel(run.cancel)
        cutters: list[StopCutter] = []
        cutter = StopCutter(self.stops)
        for event in run.events():
            if event.kind == "final":
                cutter.release(event, index, put)
                cutters.append(cutter)
                if event.detail.get("more"):  # a resample: the next attempt starts with a new text
                    cutter = StopCutter(self.stops)
            else:
                cutter.relay(event, index, put, run.cancel)
        best = run.best_index()
        kept: Trajectory = run.attempts[best]
        shown = cutters[best]
        put(ChoiceItem(index, MonitorEvent("final", trajectory=kept, detail={"attempts": len(run.attempts)}),
                       text=shown.text, hit_stop=shown.hit))


def run_jobs(jobs: list[Job]) -> None:
    """The engine's runner: one job as its own guarded generation, several as one batched generation."""
    if len(jobs) == 1:
        jobs[0].payload.run(jobs[0].put, jobs[0])
    else:
        _run_batch(jobs)


def _run_batch(jobs: list[Job]) -> None:
    generations: list[Generation] = [job.payload for job in jobs]
    stopper, cancel = RowStopper(), threading.Event()
    cutters = [StopCutter(generation.stops) for generation in generations]
    lock = threading.Lock()
    gone: set[int] = set()

    def leave(row: int) -> None:  # a client went away: stop its row; the last one to go stops the batch
        stopper.stop(row)
        with lock:
            gone.add(row)
            if len(gone) == len(jobs):
                cancel.set()

    for row, job in enumerate(jobs):
        job.on_cancel(lambda row=row: leave(row))

    def dispatch(event: MonitorEvent) -> None:
        job, cutter = jobs[event.row], cutters[event.row]
        if event.kind == "final":
            cutter.release(event, 0, job.put)
            job.put(ChoiceItem(0, MonitorEvent("final", trajectory=event.trajectory, detail={"attempts": 1}),
                               text=cutter.text, hit_stop=cutter.hit))
        else:
            cutter.relay(event, 0, job.put, lambda: stopper.stop(event.row))

    first = generations[0]
    budgets = [g.settings[0].max_new_tokens for g in generations]
    first.backend.generate([g.question for g in generations], [g.space for g in generations],
                           replace(first.settings[0], max_new_tokens=max(budgets)), on_event=dispatch, cancel=cancel,
                           row_stopper=stopper, budgets=budgets)

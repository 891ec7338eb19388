"""A live vote: samples of one question generated together on a backend, with `vote.VotePolicy` acting while
they run — a failing sample killed at the step that condemns it, a new sample started in every row that
frees up, and drawing stopped as soon as the vote is decided.

The decisions are the ones `vote.simulate` computes from the saved samples, by construction: a kill reads
the same steps through the same rule (`VotePolicy.kill_at` on each prefix), samples join in the same order
as lanes free up on the same token clock (one tick per forward; a sample occupies its rows for
`vote.occupancy` ticks), and the adaptive stop is asked after the same ballots. A test and
`benchmarks/vote_live.py` check it.

No torch here: the backend does the generating (`Backend.sample`); this module only listens and decides.
Thread-safe controls (`kill`, `stop`) let a UI act on a running vote.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from sia_monitor.backends.base import Backend, GenerationSettings
from sia_monitor.errors import SIAError
from sia_monitor.guardrail.policy import Decision
from sia_monitor.guardrail.vote import Ballot, VotePolicy, VoteResult, decided, result
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace, answer_key
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory
from sia_monitor.worker import stream_from_worker

VoteEventKind = Literal["started", "step", "killed", "finished", "cancelled", "vote"]

# What a vote samples with unless told otherwise: the settings the committed vote samples were drawn with.
DEFAULT_VOTE_SETTINGS = GenerationSettings(max_new_tokens=384, temperature=0.7)


@dataclass
class VoteEvent:
    """One thing that happened in a vote. `sample`: which one (its start order); `tally`: the vote so far,
    with every `finished`, `killed` and `cancelled` event and with the final `vote` event (`final` True)."""

    kind: VoteEventKind
    sample: int | None = None
    step: StepRecord | None = None
    trajectory: Trajectory | None = None
    tally: VoteResult | None = None
    final: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind}
        if self.sample is not None:
            data["sample"] = self.sample
        if self.step is not None:
            data["step"] = {"index": self.step.index, "entropy_bits": self.step.entropy_bits,
                            "top": [list(t) for t in self.step.top[:3]], "p_correct": self.step.p_correct,
                            "tokens_so_far": self.step.tokens_so_far}
        if self.trajectory is not None:
            data["answer"] = self.trajectory.parsed_answer
            data["tokens"] = self.trajectory.n_tokens
            data["finish_reason"] = self.trajectory.finish_reason
        if self.tally is not None:
            data["vote"] = vote_record(self.tally)
        if self.kind == "vote":
            data["final"] = self.final
        return data


def vote_record(vote: VoteResult) -> dict[str, Any]:
    """The vote's JSON form (events, `--save`): answer, confidence, tally and cost; no trajectories."""
    return {"answer": vote.answer, "confidence": vote.confidence, "weights": {a: round(w, 4) for a, w in
            vote.weights.items()}, "counts": vote.counts, "tokens": vote.tokens, "stopped_early": vote.stopped_early,
            "ballots": [asdict(b) for b in vote.ballots]}


class LiveVote:
    """One vote on a live backend. `run()` blocks until it is over and returns the `VoteResult` (with every
    sample's trajectory in `samples`, kills recorded in their `decisions`); `on_event` hears `VoteEvent`s as
    they happen, from the generating thread."""

    def __init__(
        self,
        backend: Backend,
        question: str,
        space: AnswerSpace = NUMERIC,
        policy: VotePolicy | None = None,
        settings: GenerationSettings | None = None,
        on_event: Callable[[VoteEvent], None] | None = None,
    ) -> None:
        self.backend = backend
        self.question = question
        self.space = space
        self.policy = policy or VotePolicy()
        self.settings = settings or DEFAULT_VOTE_SETTINGS
        if self.settings.temperature <= 0 and self.policy.samples > 1:
            raise SIAError("A vote needs samples that differ: give --temperature above 0.")
        self.on_event = on_event
        self.cancel = threading.Event()
        self.stopper = RowStopper()
        self._lock = threading.Lock()
        self._steps: dict[int, list[StepRecord]] = {}
        self._kills: dict[int, Decision] = {}
        self._ballots: list[Ballot] = []
        self._started = 0
        self._user_stop = False
        self.wall_s = 0.0

    # -- controls, from any thread --------------------------------------------------------------------------
    def kill(self, sample: int) -> None:
        """Kill a running sample now, as the policy would (it frees its row and does not vote)."""
        with self._lock:
            if sample in self._steps and sample not in self._kills:
                steps = self._steps[sample]
                self._kills[sample] = Decision("stop", "killed by the user", len(steps),
                                               steps[-1].tokens_so_far if steps else 0, "user",
                                               steps[-1].p_correct if steps else None, by="user")
                self.stopper.stop(sample)

    def stop(self) -> None:
        """End the vote at the next token: running samples are cancelled, no new one starts."""
        self._user_stop = True

    # -- the vote ---------------------------------------------------------------------------------------
    def stream(self) -> Iterator[VoteEvent]:
        """Run the vote in a worker thread and yield its events here as they happen (the last is the final
        `vote` event, whose tally is the result). Ctrl-C or closing the iterator ends the vote at the next
        token; what finished still votes."""
        listener = self.on_event

        def produce(put: Callable[[VoteEvent], None]) -> None:
            def hear(event: VoteEvent) -> None:
                if listener is not None:
                    listener(event)
                put(event)

            self.on_event = hear
            try:
                self.run()
            finally:
                self.on_event = listener

        return stream_from_worker(produce, self.stop, "sia-monitor-vote")

    def run(self) -> VoteResult:
        began = time.perf_counter()
        first = min(self.policy.width, self.policy.samples)
        for sample in range(first):
            self._start(sample)
        self._started = first
        samples = self.backend.sample(self.question, self.space, self.settings, first=first,
                                      schedule=self._schedule, on_event=self._hear, cancel=self.cancel,
                                      row_stopper=self.stopper)
        self.wall_s = time.perf_counter() - began
        stopped_early = len(samples) < self.policy.samples or any(
            b.status == "cancelled" for b in self._ballots)
        vote = replace(result(self._ballots, stopped_early=stopped_early), samples=samples)
        for ballot in vote.ballots:
            samples[ballot.sample].generation["vote"] = {
                "sample": ballot.sample, "status": ballot.status, "weight": round(ballot.weight, 4),
                "tokens": ballot.tokens, "policy": self.policy.to_json(), "answer": vote.answer,
                "confidence": vote.confidence}
        self._emit(VoteEvent("vote", tally=vote, final=True))
        return vote

    def _start(self, sample: int) -> None:
        self._steps[sample] = []
        self._emit(VoteEvent("started", sample=sample))

    def _schedule(self, running: int) -> int | None:
        """Asked by the backend after every token: how many samples to start now; None ends the vote."""
        over = self._user_stop or self.cancel.is_set() or decided(self.policy, self._ballots)
        if over:
            return None if running or self._started < self.policy.samples else 0
        start = min(self.policy.width - running, self.policy.samples - self._started)
        for sample in range(self._started, self._started + max(start, 0)):
            self._start(sample)
        self._started += max(start, 0)
        return max(start, 0)

    def _hear(self, event: MonitorEvent) -> None:
        sample = event.row
        if event.kind == "step" and event.step is not None:
            with self._lock:
                steps = self._steps[sample]
                steps.append(event.step)
                killed = sample in self._kills
            self._emit(VoteEvent("step", sample=sample, step=event.step))
            if not killed and self.policy.kill is not None:
                decision = self.policy.kill.decide(steps, question=self.question)
                if decision is not None and decision.action in ("stop", "resample"):
                    with self._lock:
                        self._kills.setdefault(sample, replace(decision, action="stop"))
                    self.stopper.stop(sample)
        elif event.kind == "final" and event.trajectory is not None:
            self._ballots.append(self._ballot(sample, event.trajectory))
            ballot = self._ballots[-1]
            kind: VoteEventKind = "killed" if ballot.status == "killed" else (
                "cancelled" if ballot.status == "cancelled" else "finished")
            self._emit(VoteEvent(kind, sample=sample, trajectory=event.trajectory, tally=result(self._ballots)))

    def _ballot(self, sample: int, trajectory: Trajectory) -> Ballot:
        with self._lock:
            kill = self._kills.get(sample)
        if kill is not None:
            trajectory.decisions.append(kill.to_detail(kind="vote-kill"))
            trajectory.finish_reason = "stopped"
            tokens = kill.tokens + 1 if kill.by == "policy" else trajectory.n_tokens
            return Ballot(sample, None, 0.0, "killed", tokens, kill.step)
        if trajectory.finish_reason == "cancelled":
            return Ballot(sample, None, 0.0, "cancelled", trajectory.n_tokens)
        return Ballot(sample, answer_key(trajectory.parsed_answer, self.space), self.policy.weight(trajectory),
                      "done", trajectory.n_tokens)

    def _emit(self, event: VoteEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)


def run_vote(
    backend: Backend,
    question: str,
    space: AnswerSpace = NUMERIC,
    policy: VotePolicy | None = None,
    settings: GenerationSettings | None = None,
    on_event: Callable[[VoteEvent], None] | None = None,
) -> VoteResult:
    """Vote over samples of `question` on `backend` (see `LiveVote`); returns the answer and what it cost."""
    return LiveVote(backend, question, space, policy, settings, on_event).run()

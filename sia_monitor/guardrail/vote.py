"""Self-consistency with the monitor: a vote over samples, weighted by how trustworthy each trace looked, with
failing samples killed mid-trace and sampling stopped once the vote is decided.

Three parts, each switchable in `VotePolicy`, so each one's worth can be measured on its own:
- **kill**: a running sample is stopped by the guardrail's own stop rule (`GuardrailPolicy.decide`: P(correct)
  below `stop_below` for `patience` steps); it frees its row and does not vote. Sample-count stoppers (ESC,
  Adaptive-Consistency) cannot do this: they only see finished answers.
- **weights**: a finished sample votes with its last step's P(correct) raised to `weight_power` (off: one
  vote each).
- **adaptive stop**: once at least `min_votes` samples have voted, drawing stops when the leading answer
  beats the runner-up with posterior probability ≥ `stop_confidence` (Adaptive-Consistency's Beta
  criterion, on vote shares rescaled to the number of votes, so weights move the decision but do not
  invent evidence).

Samples run `width` at a time: a sample that ends or is killed frees its row, and the next sample starts in
it at once. Pure logic over step records (no torch, no wall clock): the live vote (`live_vote.LiveVote`) and
the offline harness that replays saved samples (`simulate`) make the same decisions from the same records,
on the same token clock (`occupancy`). Answers are grouped by `tasks.answers.answer_key`, the one normaliser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sia_monitor.errors import SIAError
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.tasks.answers import AnswerSpace, answer_key
from sia_monitor.trajectory import Trajectory

# The kill rule: the guardrail's stop rule, without resampling (the vote draws new samples itself). Its
# thresholds, like every default of VotePolicy, were chosen on dev questions only (benchmarks/tune_vote.py:
# the fewest tokens at majority@8's accuracy on 100 SVAMP training questions x 8 samples; rerun 2026-12-08
# with the refitted hidden-state calibrator, which moved the kill's first step from 2 to 3).
DEFAULT_KILL = GuardrailPolicy(min_steps=3, stop_below=0.2, patience=1)


@dataclass(frozen=True)
class VotePolicy:
    """How many samples to draw and how many at once, and which of the three parts (kill, weights, adaptive
    stop) are on."""

    samples: int = 16
    width: int = 4
    kill: GuardrailPolicy | None = DEFAULT_KILL
    weighted: bool = True
    weight_power: float = 2.0
    adaptive_stop: bool = True
    stop_confidence: float = 0.7
    min_votes: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.samples < 1:
            problems.append("samples must be at least 1")
        if self.width < 1:
            problems.append("width must be at least 1")
        if self.weight_power < 0:
            problems.append("weight_power cannot be negative")
        if not 0.5 <= self.stop_confidence < 1:
            problems.append("stop_confidence must be at least 0.5 and below 1")
        if self.min_votes < 1:
            problems.append("min_votes must be at least 1")
        if problems:
            raise SIAError("Invalid vote policy: " + "; ".join(problems) + ".")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def kill_at(self, trajectory: Trajectory) -> int | None:
        """The number of steps after which the kill rule stops this sample (None: it runs to its end)."""
        if self.kill is None:
            return None
        for seen in range(1, len(trajectory.steps) + 1):
            decision = self.kill.decide(trajectory.steps[:seen], question=trajectory.question)
            if decision is not None and decision.action in ("stop", "resample"):
                return seen
        return None

    def weight(self, trajectory: Trajectory) -> float:
        """A finished sample's vote: its last P(correct) ** weight_power, or 1 (unweighted, or never scored)."""
        if not self.weighted or not trajectory.steps or trajectory.steps[-1].p_correct is None:
            return 1.0
        return max(trajectory.steps[-1].p_correct, 1e-6) ** self.weight_power


@dataclass
class Ballot:
    """One sample's part in the vote: its answer (grouped), its weight, how it ended, and what it cost."""

    sample: int
    answer: str | None
    weight: float
    status: Literal["done", "killed", "cancelled"]
    tokens: int  # generated up to its end, kill or cancellation
    killed_after_steps: int | None = None


@dataclass
class VoteResult:
    """The vote: the answer, the leader's share of the weight, the tally, every ballot, and the cost."""

    answer: str | None
    confidence: float
    weights: dict[str, float]
    counts: dict[str, int]
    ballots: list[Ballot] = field(default_factory=list)
    stopped_early: bool = False
    samples: list[Trajectory] = field(default_factory=list)  # a live vote's samples, in the order they started

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.ballots)


def tally(ballots: Sequence[Ballot]) -> tuple[dict[str, float], dict[str, int]]:
    """Weight and count per answer, over the ballots that voted (finished, with an answer); heaviest first."""
    weights: dict[str, float] = {}
    counts: dict[str, int] = {}
    for ballot in ballots:
        if ballot.status == "done" and ballot.answer is not None:
            weights[ballot.answer] = weights.get(ballot.answer, 0.0) + ballot.weight
            counts[ballot.answer] = counts.get(ballot.answer, 0) + 1
    order = sorted(weights, key=lambda a: (-weights[a], -counts[a], a))
    return {a: weights[a] for a in order}, {a: counts[a] for a in order}


def leader_probability(weights: dict[str, float], votes: int) -> float:
    """P(the leading answer is the true majority) under Adaptive-Consistency's Beta criterion:
    P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1), with v1, v2 the leader's and runner-up's shares of `votes`."""
    from scipy.special import betainc

    total = sum(weights.values())
    if votes < 1 or total <= 0:
        return 0.0
    shares = sorted((w / total * votes for w in weights.values()), reverse=True) + [0.0]
    return float(1.0 - betainc(shares[0] + 1.0, shares[1] + 1.0, 0.5))


def decided(policy: VotePolicy, ballots: Sequence[Ballot]) -> bool:
    """Whether the adaptive stop would stop drawing samples now."""
    if not policy.adaptive_stop:
        return False
    weights, counts = tally(ballots)
    votes = sum(counts.values())
    return votes >= policy.min_votes and leader_probability(weights, votes) >= policy.stop_confidence


def result(ballots: Sequence[Ballot], stopped_early: bool = False) -> VoteResult:
    weights, counts = tally(ballots)
    total = sum(weights.values())
    answer = next(iter(weights), None)
    confidence = weights[answer] / total if answer is not None and total > 0 else 0.0
    return VoteResult(answer, round(confidence, 4), weights, counts, list(ballots), stopped_early)


def occupancy(trajectory: Trajectory, killed_after: int | None) -> float:
    """Ticks (forwards) a sample holds its row: one per token drawn, the EOS included; a sample killed after
    a step also draws the token of the forward it was killed in. A cancelled (partial) sample never ends
    on its own: only the vote's stop ends it."""
    if killed_after is not None:
        return trajectory.steps[killed_after - 1].tokens_so_far + 1
    if trajectory.finish_reason == "cancelled":
        return float("inf")
    return trajectory.n_tokens + (trajectory.finish_reason == "eos")


def simulate(samples: Sequence[Trajectory], policy: VotePolicy, space: AnswerSpace) -> VoteResult:
    """Replay saved samples of one question as a live vote runs them, `policy.width` at a time.

    A token clock: `width` lanes each generate one sample, a token per tick; a lane whose sample ends or is
    killed takes the next sample on the next tick (as the live batch starts new samples in freed rows),
    until `policy.samples` have been started. After the ticks at which samples end, the adaptive stop may end
    the vote: samples still running are cancelled, and the tokens they had generated count in the cost.
    """
    plans = []  # per sample: its ticks, its ballot's status and tokens, the step it was killed after
    for index, trajectory in enumerate(samples[: policy.samples]):
        killed = policy.kill_at(trajectory)
        ticks = occupancy(trajectory, killed)
        tokens = int(ticks) if killed is not None else trajectory.n_tokens
        plans.append((index, trajectory, ticks, "killed" if killed is not None else "done", tokens, killed))
    running: list[tuple[int, tuple]] = []  # (tick it started at, plan)
    ballots: list[Ballot] = []
    clock = 0.0
    waiting = list(plans)
    while waiting or running:
        while waiting and len(running) < policy.width:
            running.append((int(clock), waiting.pop(0)))
        clock = min(start + plan[2] for start, plan in running)  # the first tick after the next end
        if clock == float("inf"):
            break  # only partial samples left: the saved vote was stopped by its user
        finished = [(start, plan) for start, plan in running if start + plan[2] == clock]
        running = [(start, plan) for start, plan in running if start + plan[2] != clock]
        for _, (index, trajectory, _, status, tokens, killed) in sorted(finished, key=lambda item: item[1][0]):
            answer = answer_key(trajectory.parsed_answer, space) if status == "done" else None
            weight = policy.weight(trajectory) if status == "done" else 0.0
            ballots.append(Ballot(index, answer, weight, status, tokens, killed))  # type: ignore[arg-type]
        if decided(policy, ballots):
            break
    for start, (index, trajectory, _, _, _, _) in running:
        generated = trajectory.n_tokens if clock == float("inf") else min(int(clock) - start, trajectory.n_tokens)
        ballots.append(Ballot(index, None, 0.0, "cancelled", generated))
    return result(ballots, stopped_early=bool(running or waiting))


def majority_answer(samples: Sequence[Trajectory], space: AnswerSpace) -> str | None:
    """Plain self-consistency: the most frequent answer (ties: the one reached first)."""
    counts: dict[str, int] = {}
    for trajectory in samples:
        key = answer_key(trajectory.parsed_answer, space)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return max(counts, key=lambda a: counts[a]) if counts else None

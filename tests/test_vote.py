"""The vote as pure logic, on hand-built samples: grouping, weights, the kill rule, the adaptive stop, and what
each sample costs when the vote is replayed `width` samples at a time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sia_monitor.errors import SIAError
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.vote import (
    Ballot,
    VotePolicy,
    decided,
    leader_probability,
    majority_answer,
    simulate,
    tally,
)
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.trajectory import StepRecord, Trajectory


def sample(answer: str | None, p: list[float], tokens_per_step: int = 10, tail: int = 5) -> Trajectory:
    """A finished sample: one step per P(correct) value, then `tail` tokens of answer line."""
    steps = [StepRecord(index=i, token_start=i * tokens_per_step, token_end=(i + 1) * tokens_per_step,
                        text=f"step {i}", entropy_bits=0.5, top=[(answer or "7", 0.8)], covered=0.9,
                        tokens_so_far=(i + 1) * tokens_per_step, p_correct=v) for i, v in enumerate(p)]
    return Trajectory("m", "What is 3 + 4?", NUMERIC, "The answer is ", "line", steps=steps, finish_reason="eos",
                      parsed_answer=answer, n_tokens=len(p) * tokens_per_step + tail, gold="7")


def test_tally_groups_equal_answers_and_counts_only_finished_votes() -> None:
    ballots = [Ballot(0, "7", 0.9, "done", 50), Ballot(1, "7", 0.5, "done", 50), Ballot(2, "8", 0.95, "done", 50),
               Ballot(3, None, 0.0, "killed", 20), Ballot(4, None, 0.0, "cancelled", 10), Ballot(5, None, 1, "done", 9)]
    weights, counts = tally(ballots)
    assert list(weights) == ["7", "8"] and weights["7"] == pytest.approx(1.4) and counts == {"7": 2, "8": 1}


def test_samples_group_through_the_answer_normaliser() -> None:
    samples = [sample("1000", [0.8] * 3), sample("1,000", [0.8] * 3), sample("999", [0.8] * 3)]
    assert majority_answer(samples, NUMERIC) == "1000"
    result = simulate(samples, VotePolicy(kill=None, adaptive_stop=False, width=3), NUMERIC)
    assert result.counts == {"1000": 2, "999": 1} and result.answer == "1000"


def test_leader_probability_is_the_beta_criterion() -> None:
    """Unanimous v votes: P(p > 1/2) for Beta(v + 1, 1) is 1 - 0.5 ** (v + 1)."""
    for votes in (1, 3, 4, 8):
        assert leader_probability({"7": float(votes)}, votes) == pytest.approx(1 - 0.5 ** (votes + 1))
    assert leader_probability({"7": 2.0, "8": 2.0}, 4) == pytest.approx(0.5)
    # weights rescale the shares, not the evidence: the same split at any scale gives the same probability
    assert leader_probability({"7": 0.3, "8": 0.1}, 4) == pytest.approx(leader_probability({"7": 3, "8": 1}, 4))


def test_adaptive_stop_waits_for_min_votes_and_can_be_switched_off() -> None:
    unanimous = [Ballot(i, "7", 1.0, "done", 10) for i in range(4)]
    strict = VotePolicy(stop_confidence=0.95, min_votes=3)
    assert not decided(strict, unanimous[:3])  # 0.9375 < 0.95
    assert decided(strict, unanimous)  # 0.969
    assert not decided(replace(strict, min_votes=5), unanimous)
    assert not decided(replace(strict, adaptive_stop=False), unanimous)
    assert decided(VotePolicy(), unanimous[:2])  # the default: 0.875 >= 0.8 after 2 votes


def test_kill_uses_the_guardrail_stop_rule() -> None:
    policy = VotePolicy(kill=GuardrailPolicy(min_steps=3, stop_below=0.2, patience=3))  # < 0.2 x3, from step 3
    assert policy.kill_at(sample("7", [0.5, 0.1, 0.1, 0.1, 0.1])) == 4
    assert policy.kill_at(sample("7", [0.1, 0.1, 0.1])) == 3
    assert policy.kill_at(sample("7", [0.1, 0.1, 0.5, 0.1])) is None
    assert VotePolicy(kill=None).kill_at(sample("7", [0.1] * 5)) is None


def test_weights_are_the_last_p_correct() -> None:
    assert VotePolicy(weight_power=1).weight(sample("7", [0.2, 0.6])) == pytest.approx(0.6)
    assert VotePolicy().weight(sample("7", [0.2, 0.6])) == pytest.approx(0.36)  # squared by default
    assert VotePolicy(weight_power=2).weight(sample("7", [0.2, 0.5])) == pytest.approx(0.25)
    assert VotePolicy(weighted=False).weight(sample("7", [0.2, 0.6])) == 1.0
    # a confident minority outweighs an unsure majority
    samples = [sample("8", [0.1, 0.3, 0.3]), sample("8", [0.2, 0.3, 0.3]), sample("7", [0.9, 0.9, 0.9])]
    assert simulate(samples, VotePolicy(kill=None, adaptive_stop=False), NUMERIC).answer == "7"
    assert simulate(samples, VotePolicy(kill=None, adaptive_stop=False, weighted=False), NUMERIC).answer == "8"


def test_one_lane_stops_after_four_unanimous_votes_and_pays_for_those_only() -> None:
    samples = [sample("7", [0.9] * 3) for _ in range(16)]  # 35 tokens each
    result = simulate(samples, VotePolicy(width=1, stop_confidence=0.95, min_votes=3), NUMERIC)
    assert result.answer == "7" and result.stopped_early and result.tokens == 4 * 35
    assert [b.status for b in result.ballots] == ["done"] * 4


def test_a_killed_sample_costs_its_tokens_up_to_the_kill_and_frees_its_lane() -> None:
    failing = sample("9", [0.1] * 10)  # killed after step 3 (token 30), with the token drawn as it was killed
    good = [sample("7", [0.9] * 3) for _ in range(3)]
    kill = GuardrailPolicy(min_steps=3, stop_below=0.2, patience=3)
    result = simulate([failing, *good], VotePolicy(kill=kill, adaptive_stop=False, width=2), NUMERIC)
    killed = [b for b in result.ballots if b.status == "killed"]
    assert len(killed) == 1 and killed[0].tokens == 31 and killed[0].killed_after_steps == 3
    assert result.counts == {"7": 3} and result.tokens == 31 + 3 * 35
    assert [b.sample for b in result.ballots] == [0, 1, 2, 3]  # the kill (tick 31) comes before sample 1 ends (36)


def test_stopping_cancels_running_samples_and_counts_their_partial_tokens() -> None:
    short = [sample("7", [0.9] * 3, tail=0) for _ in range(4)]  # 30 tokens
    long = [sample("7", [0.9] * 20) for _ in range(2)]  # 205 tokens, still running when the vote is decided
    result = simulate([*short[:2], *long, *short[2:]], VotePolicy(width=4), NUMERIC)
    cancelled = [b for b in result.ballots if b.status == "cancelled"]
    assert result.stopped_early and len(cancelled) == 2
    assert all(0 < b.tokens < 205 for b in cancelled)
    assert result.tokens == sum(b.tokens for b in result.ballots) < 4 * 30 + 2 * 205


def test_policy_refuses_bad_values() -> None:
    with pytest.raises(SIAError, match="samples must be at least 1"):
        VotePolicy(samples=0)
    with pytest.raises(SIAError, match="stop_confidence"):
        VotePolicy(stop_confidence=1.0)
    with pytest.raises(SIAError, match="width"):
        VotePolicy(width=0)


def test_the_clock_counts_a_forward_per_token_and_one_for_the_eos() -> None:
    """Lane 1 runs a 35-token sample (36 ticks with its EOS); the next sample starts at tick 36, so when lane
    0's long sample decides nothing, sample 2's tokens are counted from there: what the live batch does."""
    first, second = sample("7", [0.9] * 3), sample("7", [0.9] * 3)
    cut = Trajectory("m", "What is 3 + 4?", NUMERIC, "The answer is ", "line", finish_reason="length",
                     parsed_answer=None, n_tokens=50)
    result = simulate([cut, first, second], VotePolicy(kill=None, adaptive_stop=False, width=2), NUMERIC)
    assert [(b.sample, b.tokens) for b in result.ballots] == [(1, 35), (0, 50), (2, 35)]
    partial = Trajectory("m", "What is 3 + 4?", NUMERIC, "The answer is ", "line", finish_reason="cancelled",
                         n_tokens=12)
    stopped = simulate([partial, first], VotePolicy(kill=None, adaptive_stop=False, width=2), NUMERIC)
    assert [(b.sample, b.status, b.tokens) for b in stopped.ballots] == [(1, "done", 35), (0, "cancelled", 12)]

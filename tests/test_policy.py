"""The guardrail policy as pure logic, on hand-built step records: when it stops, resamples, accepts, or waits."""

from __future__ import annotations

import pytest

from sia_monitor.errors import SIAError
from sia_monitor.guardrail.policy import Decision, GuardrailPolicy
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.trajectory import StepRecord, Trajectory


def step(index: int, entropy: float = 0.5, p: float | None = None, top: str = "15", top_p: float = 0.8) -> StepRecord:
    tokens = 10 * (index + 1)
    return StepRecord(index=index, token_start=tokens - 10, token_end=tokens, text=f"step {index}",
                      entropy_bits=entropy, top=[(top, top_p), ("9", 1 - top_p)], covered=0.95,
                      tokens_so_far=tokens, p_correct=p)


def with_p(*values: float, top: str = "15") -> list[StepRecord]:
    return [step(i, p=v, top=top) for i, v in enumerate(values)]


def with_entropy(*values: float) -> list[StepRecord]:
    return [step(i, entropy=v) for i, v in enumerate(values)]


def trace(steps: list[StepRecord], finish: str = "eos") -> Trajectory:
    return Trajectory("m", "q", NUMERIC, "The answer is ", "line", steps=steps, finish_reason=finish,
                      n_tokens=steps[-1].tokens_so_far if steps else 0)


def test_stops_after_patience_steps_below_the_threshold() -> None:
    policy = GuardrailPolicy(min_steps=1, stop_below=0.3, patience=3)
    assert policy.decide(with_p(0.2)) is None
    assert policy.decide(with_p(0.2, 0.25)) is None
    decision = policy.decide(with_p(0.2, 0.25, 0.1))
    assert decision is not None and decision.action == "stop"
    assert decision.signal == "p_correct" and decision.value == 0.1
    assert decision.step == 3 and decision.tokens == 30
    assert "P(correct) < 0.30 for 3 steps" in decision.reason and "0.200 → 0.100" in decision.reason


def test_one_step_above_the_threshold_resets_the_streak() -> None:
    policy = GuardrailPolicy(min_steps=1, stop_below=0.3, patience=3)
    assert policy.decide(with_p(0.1, 0.2, 0.35, 0.2, 0.1)) is None
    assert policy.decide(with_p(0.1, 0.2, 0.35, 0.2, 0.1, 0.05)) is not None


def test_respects_min_steps() -> None:
    policy = GuardrailPolicy(min_steps=5, stop_below=0.3, patience=2)
    assert policy.decide(with_p(0.1, 0.1, 0.1, 0.1)) is None
    decision = policy.decide(with_p(0.1, 0.1, 0.1, 0.1, 0.1))
    assert decision is not None and decision.step == 5


def test_accepts_on_high_p_and_a_converged_answer() -> None:
    policy = GuardrailPolicy(min_steps=2, accept_above=0.9, converged_steps=2, converged_bits=0.5)
    steps = [step(0, 1.2, 0.5, "9"), step(1, 0.3, 0.92, "15"), step(2, 0.1, 0.95, "15")]
    assert policy.decide(steps[:2]) is None  # high P, but the top answer just changed
    decision = policy.decide(steps)
    assert decision is not None and decision.action == "accept" and decision.value == 0.95
    assert "answer 15 held 2 steps" in decision.reason


def test_does_not_accept_a_number_the_question_states() -> None:
    policy = GuardrailPolicy(min_steps=1, accept_above=0.9)
    steps = [step(0, 0.1, 0.95, "76"), step(1, 0.05, 0.97, "76")]
    question = "Each pack costs 76 dollars, with a discount of 25 dollars. What do you pay?"
    assert policy.decide(steps, question=question) is None  # sure of a given quantity, not of a result
    assert policy.decide(steps, question="What do you pay?") is not None
    assert GuardrailPolicy(min_steps=1, accept_above=0.9, accept_given_numbers=True).decide(steps, 0, question)


def test_does_not_accept_while_the_entropy_is_high_or_without_a_threshold() -> None:
    steps = [step(0, 0.9, 0.95), step(1, 0.8, 0.96)]
    assert GuardrailPolicy(min_steps=1, accept_above=0.9).decide(steps) is None  # entropy above converged_bits
    converged = [step(0, 0.1, 0.95), step(1, 0.05, 0.99)]
    assert GuardrailPolicy(min_steps=1, accept_above=0.9).decide(converged) is not None
    assert GuardrailPolicy(min_steps=1).decide(converged) is None  # accept_above=None: never accepts


def test_entropy_trend_fallback_without_p_correct() -> None:
    policy = GuardrailPolicy(min_steps=3, patience=3, entropy_above=1.0)
    decision = policy.decide(with_entropy(0.4, 1.2, 1.1, 1.5))
    assert decision is not None and decision.action == "stop" and decision.signal == "entropy"
    assert decision.value == 1.5 and "no calibrator" in decision.reason
    assert policy.decide(with_entropy(0.4, 1.6, 1.3, 1.1)) is None  # high but falling: still informative
    assert policy.decide(with_entropy(0.4, 1.2, 0.9, 1.5)) is None  # one step under the threshold
    assert policy.decide(with_entropy(1.2, 1.5)) is None  # before min_steps


def test_resamples_until_max_resamples_then_stops() -> None:
    policy = GuardrailPolicy(min_steps=1, patience=2, max_resamples=2)
    failing = with_p(0.1, 0.1)
    first = policy.decide(failing, resamples_used=0)
    second = policy.decide(failing, resamples_used=1)
    third = policy.decide(failing, resamples_used=2)
    assert first is not None and first.action == "resample" and "resampling (1 of 2)" in first.reason
    assert second is not None and second.action == "resample" and "(2 of 2)" in second.reason
    assert third is not None and third.action == "stop" and "no resamples left" in third.reason


def test_best_prefers_a_finished_trace_then_the_higher_score() -> None:
    policy = GuardrailPolicy()
    stopped_high = trace(with_p(0.9, 0.8), "stopped")
    finished_low = trace(with_p(0.4, 0.5), "eos")
    finished_high = trace(with_p(0.4, 0.7), "accepted")
    assert policy.best([stopped_high, finished_low]) == 1
    assert policy.best([finished_low, finished_high, stopped_high]) == 1
    assert policy.best([trace(with_p(0.2), "resampled"), trace(with_p(0.1), "stopped")]) == 0
    assert policy.best([trace(with_entropy(1.5), "eos"), trace(with_entropy(0.2), "eos")]) == 1  # lower entropy
    assert policy.best([finished_low, trace(with_p(0.4, 0.5), "eos")]) == 0  # ties: the earliest


def test_decision_round_trips_to_an_event() -> None:
    decision = Decision("stop", "why", 4, 40, "entropy", 1.5)
    event = decision.event(attempt=2)
    assert event.kind == "decision" and event.detail["attempt"] == 2 and event.detail["reason"] == "why"
    assert event.to_json()["detail"]["action"] == "stop"
    assert decision.describe() == "step 4 · stop · why"
    with pytest.raises(ValueError):
        Decision("explode", "", 0, 0, "user")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"patience": 0}, {"min_steps": 0}, {"stop_below": 1.5}, {"accept_above": 0.2, "stop_below": 0.3},
    {"max_resamples": -1}, {"entropy_above": -1.0},
])
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(SIAError, match="Invalid guardrail policy"):
        GuardrailPolicy(**kwargs)  # type: ignore[arg-type]

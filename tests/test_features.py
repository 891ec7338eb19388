"""Features of partial entropy curves: exact values on a hand-built trace, prefix-only dependence, scaling."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from calibrators.features import (
    COLUMN,
    FEATURE_NAMES,
    MONOTONIC_CST,
    TOKEN_WINDOW,
    entropy_scale,
    lowest_window_mean,
    prefix_features,
    trajectory_features,
)
from sia_monitor.scoring import Prefix
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace
from sia_monitor.trajectory import StepRecord, Trajectory

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does Tom have?"
ENTROPIES = (2.0, 1.0, 1.5, 0.5)
TOPS = (
    [("8", 0.5), ("3", 0.3)],
    [("8", 0.7), ("5", 0.2)],
    [("5", 0.5), ("8", 0.4)],
    [("8", 0.9), ("5", 0.05)],
)
TEXTS = ("Tom starts with 3 apples.", "He buys 5 more.", "3 times 5 is 15.", "So 3 + 5 = 8.")
TOKENS = (10, 20, 30, 40)
COVERED = (0.6, 0.7, 0.8, 0.95)
TOKEN_ENTROPY = [i / 10 for i in range(40)]
TOKEN_CONFIDENCE = [5.0] * 30 + [1.0] * 10  # a low-confidence tail: the DeepConf window that sees most of it


def make_steps(entropies=ENTROPIES, tops=TOPS, texts=TEXTS) -> list[StepRecord]:
    steps = []
    start = 0
    for i, (h, top, text, end, covered) in enumerate(zip(entropies, tops, texts, TOKENS, COVERED, strict=True)):
        steps.append(StepRecord(index=i, token_start=start, token_end=end, text=text, entropy_bits=h,
                                top=list(top), covered=covered, tokens_so_far=end))
        start = end
    return steps


def make_trajectory(space: AnswerSpace = NUMERIC, steps: list[StepRecord] | None = None) -> Trajectory:
    return Trajectory(
        model_id="test-model", question=QUESTION, answer_space=space, suffix="The answer is ", segmenter="line",
        steps=make_steps() if steps is None else steps, token_entropy=list(TOKEN_ENTROPY),
        token_confidence=list(TOKEN_CONFIDENCE), final_text=" ".join(TEXTS), parsed_answer="8", finish_reason="eos",
        n_tokens=40, benchmark="toy", item_id="toy-1", gold="8", correct=True,
    )


def feature(trajectory: Trajectory, k: int) -> dict[str, float]:
    row = prefix_features(Prefix.of(trajectory, k))
    assert row.shape == (len(FEATURE_NAMES),)
    return {name: float(row[COLUMN[name]]) for name in FEATURE_NAMES}


def test_feature_tables_are_consistent() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == len(MONOTONIC_CST)
    assert [COLUMN[name] for name in FEATURE_NAMES] == list(range(len(FEATURE_NAMES)))
    assert set(MONOTONIC_CST) <= {-1, 0, 1}


def test_exact_values_after_the_last_step() -> None:
    f = feature(make_trajectory(), 4)
    expected = {
        "question_words": math.log1p(len(QUESTION.split())),
        "question_numbers": 2,
        "step": 4,
        "log_tokens": math.log1p(40),
        "entropy": 0.5,
        "delta_first": -1.5,
        "delta_prev": -1.0,
        "running_min": 0.5,
        "above_min": 0.0,
        "slope": -0.25,  # least squares over (1.0, 1.5, 0.5)
        "increases": 1,  # 1.0 -> 1.5
        "increase_rate": 1 / 3,
        "area": 1.25,
        "covered": 0.95,
        "top1": 0.9,
        "margin": 0.85,
        "top1_changed": 1.0,  # 5 -> 8
        "top1_changes": 2,  # 8 8 5 8
        "top1_stable_frac": 0.25,
        "top1_first_prob": 0.5,
        "top1_support": (0.5 + 0.7 + 0.4 + 0.9) / 4,
        "top1_in_question": 0.0,
        "top1_in_text": 1.0,  # "So 3 + 5 = 8."
        "mean_token_entropy": 1.95,
        "recent_token_entropy": 2.35,  # tokens 8..39
        "min_window_confidence": (10 * 1.0 + 22 * 5.0) / 32,  # window 8..39
    }
    assert set(expected) == set(FEATURE_NAMES)
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, abs=1e-12), name


def test_exact_values_at_earlier_steps() -> None:
    trajectory = make_trajectory()
    first = feature(trajectory, 1)
    assert first["step"] == 1 and first["entropy"] == 2.0
    assert first["delta_first"] == 0.0 and first["delta_prev"] == 0.0
    assert first["slope"] == 0.0 and first["increases"] == 0 and first["increase_rate"] == 0.0
    assert first["top1_changed"] == 0.0 and first["top1_changes"] == 0 and first["top1_stable_frac"] == 1.0
    assert first["top1_first_prob"] == 0.5 and first["top1_support"] == 0.5
    assert first["margin"] == pytest.approx(0.2)
    assert first["mean_token_entropy"] == pytest.approx(np.mean(TOKEN_ENTROPY[:10]))
    assert first["min_window_confidence"] == 5.0  # fewer tokens than a window: their mean

    second = feature(trajectory, 2)
    assert second["delta_prev"] == -1.0 and second["slope"] == pytest.approx(-1.0)
    assert second["running_min"] == 1.0 and second["area"] == 1.5
    assert second["top1_changed"] == 0.0 and second["top1_stable_frac"] == 1.0
    assert second["top1_support"] == pytest.approx(0.6)
    assert second["top1_in_question"] == 0.0 and second["top1_in_text"] == 0.0  # "8" not written yet
    assert second["mean_token_entropy"] == pytest.approx(0.95)

    third = feature(trajectory, 3)
    assert third["entropy"] == 1.5 and third["delta_prev"] == 0.5 and third["above_min"] == 0.5
    assert third["slope"] == pytest.approx(-0.25)  # least squares over (2.0, 1.0, 1.5)
    assert third["increases"] == 1 and third["increase_rate"] == 0.5
    assert third["top1"] == 0.5 and third["margin"] == pytest.approx(0.1)
    assert third["top1_changed"] == 1.0 and third["top1_changes"] == 1
    assert third["top1_stable_frac"] == pytest.approx(1 / 3)
    assert third["top1_first_prob"] == 0.0  # step 1 did not list "5"
    assert third["top1_support"] == pytest.approx((0.0 + 0.2 + 0.5) / 3)
    assert third["top1_in_question"] == 1.0 and third["top1_in_text"] == 1.0  # "5" is copied from the question


def test_increase_below_tolerance_is_not_a_violation() -> None:
    steps = make_steps(entropies=(1.0, 1.005, 0.5, 0.5))
    f = feature(make_trajectory(steps=steps), 4)
    assert f["increases"] == 0 and f["increase_rate"] == 0.0


def test_step_without_top_list() -> None:
    steps = make_steps(tops=([], [], [], []))
    f = feature(make_trajectory(steps=steps), 4)
    for name in ("top1", "margin", "top1_first_prob", "top1_support", "top1_in_question", "top1_in_text",
                 "top1_changes", "top1_changed"):
        assert f[name] == 0.0, name
    assert f["top1_stable_frac"] == 1.0


def test_features_depend_only_on_the_prefix() -> None:
    original = make_trajectory()
    changed = copy.deepcopy(original)
    changed.steps[3] = StepRecord(index=3, token_start=30, token_end=40, text="Actually 3 * 5 = 15 or 99.",
                                  entropy_bits=3.0, top=[("15", 0.45), ("99", 0.4)], covered=0.2, tokens_so_far=40)
    for k in (1, 2, 3):
        tokens = original.steps[k - 1].tokens_so_far
        later = copy.deepcopy(changed)  # step 4 already differs from the original
        for s in later.steps[k:]:
            s.entropy_bits += 7.0
            s.top = [("42", 0.99)]
            s.text += " 42"
        later.token_entropy = original.token_entropy[:tokens] + [9.0] * (40 - tokens)
        later.token_confidence = original.token_confidence[:tokens] + [0.0] * (40 - tokens)
        np.testing.assert_array_equal(prefix_features(Prefix.of(later, k)), prefix_features(Prefix.of(original, k)))
    # ... and the changes do show once they are inside the prefix (so the check above can fail)
    assert not np.array_equal(prefix_features(Prefix.of(changed, 4)), prefix_features(Prefix.of(original, 4)))


def test_prefix_of_slices_steps_and_token_signals() -> None:
    trajectory = make_trajectory()
    prefix = Prefix.of(trajectory, 2)
    assert list(prefix.steps) == trajectory.steps[:2]
    assert list(prefix.token_entropy) == TOKEN_ENTROPY[:20]
    assert list(prefix.token_confidence) == TOKEN_CONFIDENCE[:20]
    assert prefix.question == QUESTION and prefix.space == NUMERIC


def test_choice_entropy_is_divided_by_log2_of_the_labels() -> None:
    four = AnswerSpace("choice", labels=("A", "B", "C", "D"))
    steps = make_steps(tops=([("A", 0.4), ("B", 0.3)],) * 4)
    choice = feature(make_trajectory(four, steps), 4)
    numeric = feature(make_trajectory(NUMERIC, steps), 4)
    assert entropy_scale(Prefix.of(make_trajectory(four, steps), 1)) == 2.0
    assert entropy_scale(Prefix.of(make_trajectory(NUMERIC, steps), 1)) == 1.0
    assert numeric["entropy"] == 0.5 and choice["entropy"] == 0.25
    assert feature(make_trajectory(four, steps), 1)["entropy"] == 1.0  # 2 bits over 4 options: the maximum
    for name in ("delta_first", "delta_prev", "running_min", "above_min", "slope", "area"):
        assert choice[name] == pytest.approx(numeric[name] / 2), name
    # only numeric answers look for the top answer among the numbers of the question and the text
    assert choice["top1_in_question"] == 0.0 and choice["top1_in_text"] == 0.0
    two = AnswerSpace("choice", labels=("A", "B"))
    assert feature(make_trajectory(two, steps), 4)["entropy"] == 0.5  # log2(2) = 1
    one = AnswerSpace("candidates", candidates=("yes",))
    assert entropy_scale(Prefix.of(make_trajectory(one, steps), 1)) == 1.0  # log2(1) = 0 would divide by zero


@pytest.mark.parametrize("k", [0, -1, 5])
def test_prefix_of_rejects_k_outside_the_steps(k: int) -> None:
    with pytest.raises(ValueError, match="outside 1..4"):
        Prefix.of(make_trajectory(), k)


def test_prefix_features_rejects_an_empty_prefix() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        prefix_features(Prefix(QUESTION, NUMERIC, [], [], []))
    with pytest.raises(ValueError):
        Prefix.of(make_trajectory(steps=[]), 1)


def test_trajectory_features_has_one_row_per_step() -> None:
    trajectory = make_trajectory()
    rows = trajectory_features(trajectory)
    assert rows.shape == (4, len(FEATURE_NAMES))
    for k in range(1, 5):
        np.testing.assert_array_equal(rows[k - 1], prefix_features(Prefix.of(trajectory, k)))
    np.testing.assert_array_equal(rows[:, COLUMN["step"]], [1, 2, 3, 4])
    empty = trajectory_features(make_trajectory(steps=[]))
    assert empty.shape == (0, len(FEATURE_NAMES))


def brute_force_lowest_window(values: list[float], window: int) -> float:
    if not values:
        return 0.0
    if len(values) <= window:
        return sum(values) / len(values)
    return min(sum(values[i:i + window]) / window for i in range(len(values) - window + 1))


@pytest.mark.parametrize("length", [0, 1, 5, TOKEN_WINDOW - 1, TOKEN_WINDOW, TOKEN_WINDOW + 1, 100])
@pytest.mark.parametrize("window", [TOKEN_WINDOW, 5])
def test_lowest_window_mean_matches_brute_force(length: int, window: int) -> None:
    rng = np.random.default_rng(length * 100 + window)
    values = rng.uniform(0, 10, length).round(4).tolist()
    assert lowest_window_mean(values, window) == pytest.approx(brute_force_lowest_window(values, window), abs=1e-9)
    if window == TOKEN_WINDOW:
        assert lowest_window_mean(values) == pytest.approx(brute_force_lowest_window(values, window), abs=1e-9)

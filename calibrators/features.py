"""Features of a partial entropy curve: the one definition shared by fitting, evaluation and live scoring.

A calibrator must answer at every step k, so every feature is computed from `Prefix` alone (the question,
steps 1..k and the token signals up to step k), never from what comes later. Entropies are divided by
log2 |answer space| where that is finite (multiple choice), so choice curves live on [0, 1]; numeric answers
have no finite space and keep bits.

Bump FEATURE_VERSION whenever a feature changes meaning: calibrators record it and refuse a mismatch.
Version 2: `question_numbers` counts numbers spelled as words too, and a calibrator may add the step's
hidden-state vectors after the entropy columns (`hidden_columns`; which vectors it reads is on its card).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sia_monitor.errors import SIAError
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.scoring import Prefix
from sia_monitor.tasks.answers import normalize_number, numbers_in
from sia_monitor.trajectory import StepRecord, Trajectory

FEATURE_VERSION = 2
SLOPE_WINDOW = 3  # steps in the "recent slope"
INCREASE_TOLERANCE = 0.01  # an entropy rise smaller than this (in feature units) is not an SIA violation
TOKEN_WINDOW = 32  # tokens per window for "recent token entropy" and the DeepConf lowest-window confidence


@dataclass(frozen=True)
class Feature:
    """One column: its name, what it measures, and the direction of its effect on P(correct) where known.

    `direction` (+1 / -1 / 0) becomes HistGradientBoosting's `monotonic_cst`: only signs the SIA argument
    fixes are constrained (lower entropy, a higher top-1 probability, fewer violations: more likely right).
    """

    name: str
    help: str
    direction: int = 0


FEATURES: tuple[Feature, ...] = (
    Feature("question_words", "log(1 + words in the question): longer questions are harder"),
    Feature("question_numbers", "numeric: numbers written in the question, in digits or words (quantities to "
            "combine); 0 otherwise"),
    Feature("step", "k, steps so far"),
    Feature("log_tokens", "log(1 + tokens generated so far)"),
    Feature("entropy", "answer entropy after step k (bits, / log2 |space| when finite)", -1),
    Feature("delta_first", "entropy now minus after step 1"),
    Feature("delta_prev", "entropy now minus after step k-1 (0 at k = 1)"),
    Feature("running_min", "lowest entropy so far", -1),
    Feature("above_min", "entropy now minus the lowest so far"),
    Feature("slope", f"least-squares slope of the last {SLOPE_WINDOW} entropies"),
    Feature("increases", "number of entropy rises so far (SIA violations)", -1),
    Feature("increase_rate", "rises / (k - 1)"),
    Feature("area", "mean entropy over steps 1..k (area under the curve / k)", -1),
    Feature("covered", "probability mass the estimator covered at step k"),
    Feature("top1", "probability of the most likely answer", +1),
    Feature("margin", "top-1 minus top-2 probability"),
    Feature("top1_changed", "1 if the top answer differs from the previous step's"),
    Feature("top1_changes", "times the top answer changed over steps 1..k"),
    Feature("top1_stable_frac", "share of the last steps with the current top answer, (run length) / k"),
    Feature("top1_first_prob", "probability step 1 gave the current top answer (agreement with the first guess)"),
    Feature("top1_support", "mean probability steps 1..k gave the current top answer"),
    Feature("top1_in_question", "numeric: the top answer is a number of the question (not computed yet)"),
    Feature("top1_in_text", "numeric: the top answer is already written in the reasoning"),
    Feature("mean_token_entropy", "mean token entropy of the text so far (bits)"),
    Feature("recent_token_entropy", f"mean token entropy of the last {TOKEN_WINDOW} tokens"),
    Feature("min_window_confidence", f"DeepConf: lowest mean confidence over {TOKEN_WINDOW}-token windows"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
MONOTONIC_CST: tuple[int, ...] = tuple(f.direction for f in FEATURES)
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True)
class HiddenColumns:
    """The hidden-state vectors a feature-v2 calibrator reads after the entropy columns: the answer slot's
    projected hidden states of the prefix's last step (`StepRecord.hidden`), layers concatenated.

    Why the projection's layers, size, seed and name are part of it: a vector made any other way is noise to a
    calibrator fitted on these, so it is refused, never read. `spec()` is what a monitor must record for it.
    """

    layers: tuple[int, ...]
    dims: int
    seed: int
    projection: str

    @classmethod
    def of(cls, step: StepRecord) -> HiddenColumns:
        if step.hidden is None:
            raise SIAError("This step has no hidden states to read.")
        state = step.hidden
        return cls(tuple(state.layers), state.dims, state.seed, state.projection)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> HiddenColumns:
        return cls(tuple(data["layers"]), int(data["dims"]), int(data["seed"]), str(data["projection"]))  # type: ignore[arg-type,call-overload]

    def to_json(self) -> dict[str, object]:
        return {"layers": list(self.layers), "dims": self.dims, "seed": self.seed, "projection": self.projection}

    @property
    def width(self) -> int:
        return len(self.layers) * self.dims

    def names(self) -> tuple[str, ...]:
        return tuple(f"hidden_l{layer}_{i}" for layer in self.layers for i in range(self.dims))

    def spec(self) -> HiddenStateSpec:
        """What the monitor must record for this calibrator to read its steps."""
        return HiddenStateSpec(dims=self.dims, seed=self.seed, layers=self.layers)

    def row(self, step: StepRecord) -> np.ndarray:
        """The step's vectors, refused when missing or made another way."""
        state = step.hidden
        if state is None:
            raise SIAError("This calibrator reads hidden states, and the step has none.",
                           "Record them (in-process backends do: --hidden-states), or use an entropy-only "
                           "calibrator (engines give no hidden states).")
        made = (tuple(state.layers), state.dims, state.seed, state.projection)
        if made != (self.layers, self.dims, self.seed, self.projection):
            raise SIAError(f"The step's hidden states (layers {list(state.layers)}, {state.dims} numbers, seed "
                           f"{state.seed}, {state.projection}) are not the ones this calibrator reads (layers "
                           f"{list(self.layers)}, {self.dims} numbers, seed {self.seed}, {self.projection}).")
        return np.asarray(state.values(), dtype=float).ravel()


def entropy_scale(prefix: Prefix) -> float:
    """log2 |answer space| where finite and > 1 answer, else 1 (keep bits)."""
    size = prefix.space.size
    return math.log2(size) if math.isfinite(size) and size > 1 else 1.0


def _top1(step: StepRecord) -> str | None:
    return step.top[0][0] if step.top else None


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope against 0, 1, 2, ... (closed form: this runs once per prefix)."""
    n = len(values)
    if n < 2:
        return 0.0
    x_mean = (n - 1) / 2
    y_mean = sum(values) / n
    return sum((i - x_mean) * (v - y_mean) for i, v in enumerate(values)) / sum((i - x_mean) ** 2 for i in range(n))


@lru_cache(maxsize=65536)
def _numbers_list(text: str) -> tuple[str, ...]:
    """The numbers written in a text (cached: each step's text is read at every later prefix)."""
    return tuple(numbers_in(text))


def _numbers(text: str) -> frozenset[str]:
    return frozenset(_numbers_list(text))


# Numbers spelled as words ("three apples", "a dozen eggs", "twice as many"): 10 % of the questions of a
# word-problem set we measured write their quantities this way, which a digits-only count missed. "one" is left
# out on purpose: "no one", "one day", "each one" are not quantities far more often than they are.
_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_NUMBER_WORDS = re.compile(
    rf"\b(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:-(?:{_UNITS}))?|"
    r"two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|"
    r"eighteen|nineteen|hundred|thousand|million|billion|dozen|half|halves|twice|thrice|double|triple|quarter)\b",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def question_number_count(text: str) -> int:
    """Quantities written in a question: numbers in digits plus numbers spelled as words."""
    return len(_numbers_list(text)) + len(_NUMBER_WORDS.findall(text))


@lru_cache(maxsize=4096)
def _log_words(text: str) -> float:
    return math.log1p(len(text.split()))


def lowest_window_mean(values: Sequence[float], window: int = TOKEN_WINDOW) -> float:
    """Lowest mean over sliding windows of `window` values (the mean of all when there are fewer)."""
    if not values:
        return 0.0
    array = np.asarray(values, dtype=float)
    if len(array) <= window:
        return float(array.mean())
    sums = np.convolve(array, np.ones(window), mode="valid")
    return float(sums.min() / window)


def prefix_features(prefix: Prefix, hidden: HiddenColumns | None = None) -> np.ndarray:
    """The feature vector (in FEATURE_NAMES order, then `hidden`'s columns when given) of a partial trajectory
    with at least one step."""
    steps = prefix.steps
    if not steps:
        raise ValueError("a prefix needs at least one step")
    k = len(steps)
    scale = entropy_scale(prefix)
    curve = [s.entropy_bits / scale for s in steps]
    now = curve[-1]
    increases = sum(b > a + INCREASE_TOLERANCE for a, b in itertools.pairwise(curve))
    last = steps[-1]
    tops = [_top1(s) for s in steps]
    run = 1
    while run < k and tops[-1 - run] == tops[-1]:
        run += 1
    probs = [p for _, p in last.top] + [0.0, 0.0]
    numeric = prefix.space.kind == "numeric"
    top = normalize_number(tops[-1]) if numeric and tops[-1] is not None else None
    entropy = np.asarray(prefix.token_entropy, dtype=float)
    row = {
        "question_words": _log_words(prefix.question),
        "question_numbers": question_number_count(prefix.question) if numeric else 0,
        "step": k,
        "log_tokens": math.log1p(last.tokens_so_far),
        "entropy": now,
        "delta_first": now - curve[0],
        "delta_prev": now - curve[-2] if k > 1 else 0.0,
        "running_min": min(curve),
        "above_min": now - min(curve),
        "slope": _slope(curve[-SLOPE_WINDOW:]),
        "increases": increases,
        "increase_rate": increases / (k - 1) if k > 1 else 0.0,
        "area": sum(curve) / k,
        "covered": last.covered,
        "top1": probs[0],
        "margin": probs[0] - probs[1],
        "top1_changed": float(k > 1 and tops[-1] != tops[-2]),
        "top1_changes": sum(a != b for a, b in itertools.pairwise(tops)),
        "top1_stable_frac": run / k,
        "top1_first_prob": dict(steps[0].top).get(tops[-1], 0.0) if tops[-1] is not None else 0.0,
        "top1_support": sum(dict(s.top).get(tops[-1], 0.0) for s in steps) / k if tops[-1] is not None else 0.0,
        "top1_in_question": float(top is not None and top in _numbers(prefix.question)),
        "top1_in_text": float(top is not None and any(top in _numbers(s.text) for s in steps)),
        "mean_token_entropy": float(entropy.mean()) if entropy.size else 0.0,
        "recent_token_entropy": float(entropy[-TOKEN_WINDOW:].mean()) if entropy.size else 0.0,
        "min_window_confidence": lowest_window_mean(prefix.token_confidence),
    }
    entropy_row = np.array([row[name] for name in FEATURE_NAMES], dtype=float)
    return entropy_row if hidden is None else np.concatenate([entropy_row, hidden.row(last)])


def trajectory_features(trajectory: Trajectory, hidden: HiddenColumns | None = None) -> np.ndarray:
    """One row per prefix k = 1..n of a trajectory (shape n x features; 0 rows when it has no steps)."""
    rows = [prefix_features(Prefix.of(trajectory, k), hidden) for k in range(1, len(trajectory.steps) + 1)]
    width = len(FEATURE_NAMES) + (hidden.width if hidden else 0)
    return np.vstack(rows) if rows else np.empty((0, width))

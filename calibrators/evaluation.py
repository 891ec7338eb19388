"""The calibration report: our P(correct) against four baselines, per position in the trace, plus the SIA tests.

Positions: 25 / 50 / 75 / 100 % of each trace's steps (k = ceil(f x n)) and absolute steps 1..5. Signals,
all oriented "higher = more likely correct":
  calibrated  - the fitted calibrator's P(correct)
  entropy     - minus the answer entropy at that step (the raw SIA signal)
  token_ent   - minus the mean token entropy of the text so far
  deepconf    - the lowest sliding-window token confidence so far (DeepConf)
  top1        - the probability of the most likely answer at that step
Only P(correct) and top-1 are probabilities, so only they get Brier and ECE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from sia_monitor.trajectory import Trajectory

from .artifact import Calibrator
from .dataset import PrefixTable, source_of
from .features import COLUMN, INCREASE_TOLERANCE, entropy_scale
from .fitting import Recipe, estimator_config, heldout_predictions
from .metrics import bootstrap_auroc_interval, ece_noise_floor, reliability_bins, score_signal

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
STEPS = (1, 2, 3, 4, 5)
CURVE_STEPS = 15


@dataclass(frozen=True)
class Signal:
    name: str
    label: str
    is_probability: bool
    score: Callable[[PrefixTable, np.ndarray], np.ndarray]


SIGNALS: tuple[Signal, ...] = (
    Signal("calibrated", "P(correct), calibrated (ours)", True, lambda t, p: p),
    Signal("entropy", "answer entropy at the step", False, lambda t, p: -t.X[:, COLUMN["entropy"]]),
    Signal("token_entropy", "mean token entropy so far", False, lambda t, p: -t.X[:, COLUMN["mean_token_entropy"]]),
    Signal("deepconf", "DeepConf lowest window confidence", False, lambda t, p: t.X[:, COLUMN["min_window_confidence"]]),
    Signal("top1", "top-1 answer probability", True, lambda t, p: t.X[:, COLUMN["top1"]]),
)
BASELINES = tuple(s.name for s in SIGNALS if s.name != "calibrated")


def positions(table: PrefixTable) -> list[tuple[str, np.ndarray]]:
    return [(f"{f:.0%}", table.at_fraction(f)) for f in FRACTIONS] + [(f"step {k}", table.at_step(k)) for k in STEPS]


def position_rows(table: PrefixTable, p: np.ndarray) -> list[dict[str, Any]]:
    """One row per position: every signal's metrics on the traces that reach it."""
    rows = []
    for label, index in positions(table):
        sub_y = table.y[index]
        row: dict[str, Any] = {"position": label, "n": len(index),
                               "accuracy": float(sub_y.mean()) if len(index) else math.nan}
        for signal in SIGNALS:
            row[signal.name] = score_signal(sub_y, signal.score(table, p)[index], signal.is_probability)
        rows.append(row)
    return rows


@dataclass
class RecipeReport:
    """Everything measured for one calibrator on the rows it was judged on."""

    key: str
    evaluation: str
    table: PrefixTable
    p: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    per_benchmark: list[dict[str, Any]] = field(default_factory=list)
    all_prefixes: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    ece_floor: dict[str, tuple[float, float]] = field(default_factory=dict)
    selection: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "evaluation": self.evaluation, "config": self.config, "selection": self.selection,
                "positions": self.rows, "per_benchmark": self.per_benchmark, "all_prefixes": self.all_prefixes,
                "auroc_95ci": self.intervals, "ece_noise_floor": self.ece_floor,
                "reliability": reliability_bins(self.table.y, self.p)}


def _benchmark_of(table: PrefixTable) -> np.ndarray:
    return np.array([source_of(table.trajectories[i]) for i in table.trace])


def report_recipe(recipe: Recipe, calibrator: Calibrator, table: PrefixTable) -> RecipeReport:
    everything, p_everything = heldout_predictions(recipe, calibrator, table, sampled=True)
    # a user's own file is judged whole, sampled traces too: it is what they will run the calibrator on
    greedy = everything.greedy_rows() if recipe.evaluation != "external" else np.ones(len(everything), dtype=bool)
    test, p = everything.subset(greedy), p_everything[greedy]
    report = RecipeReport(recipe.key, recipe.evaluation, test, p,
                          selection=list(calibrator.info.config.get("selection", [])),
                          config=estimator_config(calibrator.info.config))
    report.rows = position_rows(test, p)
    report.all_prefixes = score_signal(test.y, p, is_probability=True)
    for label in ("50%", "100%"):
        index = dict(positions(test))[label]
        report.intervals[label] = bootstrap_auroc_interval(test.y[index], p[index])
        report.ece_floor[label] = ece_noise_floor(p[index])
    benchmarks = _benchmark_of(everything)
    training = table.subset(~table.heldout_rows()) if recipe.evaluation == "heldout" else None
    for name in sorted(set(benchmarks.tolist())):
        mask = benchmarks == name
        sub = everything.subset(mask)
        sub_p = p_everything[mask]
        entry: dict[str, Any] = {"benchmark": name, "traces": len(set(sub.trace.tolist())),
                                 "accuracy": float(sub.y[sub.at_fraction(1.0)].mean())}
        if training is not None:  # how far the held-out questions differ in difficulty from the fitted ones
            same = training.subset(_benchmark_of(training) == name)
            entry["training_accuracy"] = float(same.y[same.at_fraction(1.0)].mean()) if len(same) else math.nan
        for label, index in positions(sub)[:4]:
            entry[label] = score_signal(sub.y[index], sub_p[index], is_probability=True)
        entry["all_prefixes"] = score_signal(sub.y, sub_p, is_probability=True)
        report.per_benchmark.append(entry)
    return report


def transfer_rows(calibrator: Calibrator, table: PrefixTable, label: str) -> dict[str, Any]:
    """A calibrator scored on another recipe's held-out rows (pooled vs dedicated, or across answer types)."""
    p = calibrator.p_correct_rows(table.X, table.hidden)
    out: dict[str, Any] = {"calibrator": label}
    for name, index in positions(table)[:4]:
        out[name] = score_signal(table.y[index], p[index], is_probability=True)
    out["all_prefixes"] = score_signal(table.y, p, is_probability=True)
    return out


def judge(calibrator: Calibrator, table: PrefixTable) -> dict[str, float]:
    """AUROC at 50 % and at 100 % of each trace's steps, and ECE over every step: the three numbers the
    benchmarks of fitting on one's own or on other data (`own_data.py`, `transfer.py`) compare."""
    return judge_probabilities(table, calibrator.p_correct_rows(table.X, table.hidden))


def judge_probabilities(table: PrefixTable, p: np.ndarray) -> dict[str, float]:
    """`judge`'s numbers for given P(correct) per row of `table`."""
    at = dict(positions(table))
    return {"auroc_50": score_signal(table.y[at["50%"]], p[at["50%"]], True)["auroc"],
            "auroc_100": score_signal(table.y[at["100%"]], p[at["100%"]], True)["auroc"],
            "ece_50": score_signal(table.y[at["50%"]], p[at["50%"]], True)["ece"],
            "ece_100": score_signal(table.y[at["100%"]], p[at["100%"]], True)["ece"],
            "ece": score_signal(table.y, p, True)["ece"]}


# -- data description ---------------------------------------------------------------------------------------
def describe_data(trajectories: list[Trajectory]) -> list[dict[str, Any]]:
    """Per (model, source): traces, accuracy, mean steps and tokens, traces with no step, last-step coverage."""
    groups: dict[tuple[str, str], list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault((t.model_id, source_of(t)), []).append(t)
    rows = []
    for (model, benchmark), ts in sorted(groups.items()):
        with_steps = [t for t in ts if t.steps]
        rows.append({
            "model": model, "benchmark": benchmark, "traces": len(ts),
            "accuracy": float(np.mean([bool(t.correct) for t in ts])),
            "mean_steps": float(np.mean([len(t.steps) for t in ts])),
            "mean_tokens": float(np.mean([t.n_tokens for t in ts])),
            "no_step": len(ts) - len(with_steps),
            "last_step_covered": float(np.mean([t.steps[-1].covered for t in with_steps])) if with_steps else math.nan,
        })
    return rows


# -- SIA signatures -----------------------------------------------------------------------------------------
def normalised_curve(trajectory: Trajectory) -> np.ndarray:
    from sia_monitor.scoring import Prefix

    scale = entropy_scale(Prefix.of(trajectory, 1))
    return np.array([s.entropy_bits / scale for s in trajectory.steps])


def is_monotone_decreasing(curve: np.ndarray) -> bool:
    """Never rises by more than the tolerance from one step to the next."""
    return bool(np.all(np.diff(curve) <= INCREASE_TOLERANCE))


def _two_by_two(flag: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Share of `flag` among correct vs wrong traces, accuracy with vs without it, Fisher exact p-value."""
    table = [[int((flag & correct).sum()), int((flag & ~correct).sum())],
             [int((~flag & correct).sum()), int((~flag & ~correct).sum())]]
    odds, p_value = stats.fisher_exact(table) if flag.any() and (~flag).any() else (math.nan, math.nan)
    return {
        "share_among_correct": float(flag[correct].mean()) if correct.any() else math.nan,
        "share_among_wrong": float(flag[~correct].mean()) if (~correct).any() else math.nan,
        "accuracy_with": float(correct[flag].mean()) if flag.any() else math.nan,
        "accuracy_without": float(correct[~flag].mean()) if (~flag).any() else math.nan,
        "count_with": int(flag.sum()),
        "fisher_p": float(p_value),
        "odds_ratio": float(odds),
    }


def sia_signatures(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Do entropy curves of correct traces fall step by step, and differently from wrong ones?"""
    ts = [t for t in trajectories if len(t.steps) >= 2 and t.correct is not None]
    curves = [normalised_curve(t) for t in ts]
    correct = np.array([bool(t.correct) for t in ts])
    monotone = np.array([is_monotone_decreasing(c) for c in curves])
    net_drop = np.array([c[-1] < c[0] - INCREASE_TOLERANCE for c in curves])
    slopes = np.array([(c[-1] - c[0]) / (len(c) - 1) for c in curves])
    rise_rate = np.array([float(np.mean(np.diff(c) > INCREASE_TOLERANCE)) for c in curves])
    mean_curves: dict[str, list[dict[str, float]]] = {}
    relative: dict[str, list[float]] = {}
    for label, mask in (("correct", correct), ("wrong", ~correct)):
        chosen = [c for c, m in zip(curves, mask, strict=True) if m]
        mean_curves[label] = []
        for step in range(CURVE_STEPS):
            values = np.array([c[step] for c in chosen if len(c) > step])
            if len(values) >= 5:
                sem = values.std(ddof=1) / math.sqrt(len(values))
                mean_curves[label].append({"step": step + 1, "mean": float(values.mean()),
                                           "low": float(values.mean() - 1.96 * sem),
                                           "high": float(values.mean() + 1.96 * sem), "n": len(values)})
        grid = np.linspace(0, 1, 11)
        resampled = [np.interp(grid, np.linspace(0, 1, len(c)), c) for c in chosen]
        relative[label] = np.mean(resampled, axis=0).tolist() if resampled else []

    def mann_whitney(values: np.ndarray) -> float:
        if correct.any() and (~correct).any():
            return float(stats.mannwhitneyu(values[correct], values[~correct]).pvalue)
        return math.nan

    return {
        "traces": len(ts),
        "monotone_decreasing": _two_by_two(monotone, correct),
        "net_decrease": _two_by_two(net_drop, correct),
        "mean_slope": {"correct": float(slopes[correct].mean()) if correct.any() else math.nan,
                       "wrong": float(slopes[~correct].mean()) if (~correct).any() else math.nan,
                       "mannwhitney_p": mann_whitney(slopes)},
        "rise_rate": {"correct": float(rise_rate[correct].mean()) if correct.any() else math.nan,
                      "wrong": float(rise_rate[~correct].mean()) if (~correct).any() else math.nan,
                      "mannwhitney_p": mann_whitney(rise_rate)},
        "curves": mean_curves,
        "relative_curves": relative,
    }


"""Scores of a confidence signal against correctness: ROC-AUC, Brier, ECE and PRR.

`score` is always oriented so that higher means "more likely correct". Brier and ECE only make sense for
probabilities, so they are None for raw signals such as entropy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from .dataset import PrefixTable

ECE_BINS = 15


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC, NaN when only one class is present."""
    return float(roc_auc_score(y, score)) if len(set(np.asarray(y).tolist())) == 2 else math.nan


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with `bins` equal-width bins: sum over bins of |accuracy - mean confidence| x share of samples."""
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(y[members].mean() - p[members].mean())
    return float(total)


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per non-empty bin: mean confidence, accuracy and count (for reliability diagrams)."""
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    index = np.minimum((p * bins).astype(int), bins - 1)
    return [
        {"confidence": float(p[index == b].mean()), "accuracy": float(y[index == b].mean()),
         "count": int((index == b).sum())}
        for b in range(bins) if (index == b).any()
    ]


def _rejection_area(quality: np.ndarray) -> float:
    """Area under the prediction-rejection curve for `quality` ordered most-confident first.

    At rejection rate r the highest-uncertainty share r is dropped and the mean quality of the rest is
    measured; the area is the mean over r = 0, 1/n, ..., (n-1)/n.
    """
    kept_means = np.cumsum(quality) / np.arange(1, len(quality) + 1)
    return float(kept_means.mean())


def _tie_averaged(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Quality ordered by descending score, each run of tied scores replaced by its mean.

    A signal cannot order answers it scores equally; averaging gives the expected curve over every order of
    the ties, so the result does not depend on the order of the rows.
    """
    order = np.argsort(-score, kind="stable")
    ordered_scores, quality = score[order], y[order].astype(float)
    starts = np.flatnonzero(np.r_[True, ordered_scores[1:] != ordered_scores[:-1]])
    ends = np.r_[starts[1:], len(quality)]
    for start, end in zip(starts, ends, strict=True):
        quality[start:end] = quality[start:end].mean()
    return quality


def prediction_rejection_ratio(y: np.ndarray, score: np.ndarray) -> float:
    """PRR as LM-Polygraph defines it: (area(signal) - area(random)) / (area(oracle) - area(random)).

    1 = the signal ranks every wrong answer below every right one; 0 = no better than random rejection.
    NaN when all answers are right or all wrong. Tied scores count as their average order.
    """
    y = np.asarray(y, dtype=float)
    if len(set(y.tolist())) < 2:
        return math.nan
    by_signal = _tie_averaged(y, np.asarray(score, dtype=float))
    oracle = np.sort(y)[::-1]
    random_area = float(y.mean())
    return (_rejection_area(by_signal) - random_area) / (_rejection_area(oracle) - random_area)


def score_signal(y: np.ndarray, score: np.ndarray, is_probability: bool) -> dict[str, Any]:
    """Every metric of one signal at one position, with the number of traces and their accuracy."""
    y = np.asarray(y)
    return {
        "n": len(y),
        "accuracy": float(np.mean(y)) if len(y) else math.nan,
        "auroc": auroc(y, score),
        "prr": prediction_rejection_ratio(y, score),
        "brier": float(brier_score_loss(y, score)) if is_probability and len(y) else None,
        "ece": expected_calibration_error(y, score) if is_probability and len(y) else None,
        "mean_p": float(np.mean(score)) if is_probability and len(y) else None,
    }


def ece_noise_floor(p: np.ndarray, resamples: int = 500, seed: int = 0) -> tuple[float, float]:
    """Mean and 95th percentile of the ECE that a perfectly calibrated `p` shows on this many traces.

    Outcomes are drawn as Bernoulli(p), so the only error left is sampling noise from finite bins; a measured
    ECE inside this range cannot be told apart from perfect calibration. One row per trace (rows of one trace
    share their outcome, so this is not meaningful over all prefixes).
    """
    rng = np.random.default_rng(seed)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    values = [expected_calibration_error((rng.random(len(p)) < p).astype(float), p) for _ in range(resamples)]
    return float(np.mean(values)), float(np.percentile(values, 95))


def bootstrap_auroc_interval(
    y: np.ndarray, score: np.ndarray, resamples: int = 500, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of ROC-AUC over traces resampled with replacement."""
    rng = np.random.default_rng(seed)
    y, score = np.asarray(y), np.asarray(score)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(y), len(y))
        if len(set(y[pick].tolist())) == 2:
            values.append(roc_auc_score(y[pick], score[pick]))
    if not values:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def summary_metrics(table: PrefixTable, p: np.ndarray) -> dict[str, Any]:
    """The card's headline: held-out ROC-AUC / Brier / ECE at 50% and 100% of the steps and over all prefixes."""
    summary: dict[str, Any] = {"heldout_traces": len(set(table.trace.tolist())), "heldout_prefixes": len(table)}
    for label, rows in (("at_50pct", table.at_fraction(0.5)), ("at_last_step", table.at_fraction(1.0))):
        summary[label] = score_signal(table.y[rows], p[rows], is_probability=True)
    summary["all_prefixes"] = score_signal(table.y, p, is_probability=True)
    return summary

"""How far a calibrator fitted on one set of questions can be trusted on another, and what adapting it costs.

The study behind `sia-monitor evaluate --transfer SOURCE TARGET` and `benchmarks/transfer.py`: a calibrator
fitted as `sia-monitor fit --data` fits one, on the source's training questions, is judged on the target's
held-out questions (the fixed split), against one fitted on the target's own training questions (in-domain).
Then two ways to adapt with n of the target's training questions (random draws), judged on the same held-out
questions, so a user knows how many of their own questions to label: refit on the source's questions plus
those n, or keep the source's calibrator and only recalibrate it (a sigmoid on its logit, fitted on the n
questions' prefixes), which keeps what was learned about the curve and moves only the probability scale.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from sia_monitor.tasks.benchmarks import is_heldout
from sia_monitor.trajectory import Trajectory, write_trajectories

from .artifact import Calibrator
from .dataset import PrefixTable, question_id
from .evaluation import judge, judge_probabilities
from .fitting import fit_all, recipe_for_data

KEYS = ("auroc_50", "auroc_100", "ece")
SIZES = (25, 50, 100, 200)


def split_questions(trajectories: Sequence[Trajectory]) -> tuple[list[Trajectory], list[Trajectory]]:
    """(training, held-out) graded trajectories, by the fixed per-question split."""
    graded = [t for t in trajectories if t.correct is not None]
    held = [is_heldout(question_id(t)) for t in graded]
    return [t for t, h in zip(graded, held, strict=True) if not h], [t for t, h in zip(graded, held, strict=True) if h]


def transfer_study(source: Sequence[Trajectory], target: Sequence[Trajectory], names: tuple[str, str],
                   sizes: Sequence[int] = SIZES, draws: int = 2,
                   advance: Callable[[], None] | None = None, features: str = "entropy") -> dict[str, Any]:
    """One direction source -> target: the transfer, the in-domain reference, and each adaptation size (the
    mean over `draws` random draws; a size larger than the target's training questions is left out).
    `features="hidden"`: hidden-state calibrators (feature version 2), which are known to transfer worse."""
    source_train, _ = split_questions(source)
    target_train, target_test = split_questions(target)
    hidden = features == "hidden"
    test = PrefixTable.build(target_test, hidden=hidden)
    with tempfile.TemporaryDirectory() as scratch:

        def fit(trajectories: list[Trajectory], label: str) -> Calibrator:
            path = Path(scratch) / f"{label}.jsonl.gz"
            write_trajectories(path, trajectories, append=False)
            ((calibrator, _, _),) = fit_all([recipe_for_data([path], label, features=features)], save=False).values()
            if advance:
                advance()
            return calibrator

        transferred = fit(source_train, "transfer")
        entry: dict[str, Any] = {
            "source": names[0], "target": names[1], "features": features, "source_train": len(source_train),
            "target_train": len(target_train), "target_test": len(test.trajectories),
            "transfer": judge(transferred, test), "in_domain": judge(fit(target_train, "in-domain"), test),
            "adapted": [], "recalibrated": []}
        for n in sizes:
            if n > len(target_train):
                continue
            picks = [random.Random(draw).sample(target_train, n) for draw in range(draws)]
            refits = [judge(fit(source_train + pick, f"adapted-{n}-{draw}"), test) for draw, pick in enumerate(picks)]
            entry["adapted"].append({"n": n, **{k: statistics.fmean(s[k] for s in refits) for k in KEYS}})
            recalibrated = [_recalibrated_scores(transferred, PrefixTable.build(pick, hidden=hidden), test)
                            for pick in picks]
            entry["recalibrated"].append({"n": n, **{k: statistics.fmean(s[k] for s in recalibrated) for k in KEYS}})
    return entry


def _recalibrated_scores(calibrator: Calibrator, few: PrefixTable, test: PrefixTable) -> dict[str, float]:
    """`judge`'s scores of the calibrator after a sigmoid on its logit, fitted on the prefixes of `few`."""
    def logit(table: PrefixTable) -> np.ndarray:
        p = np.clip(calibrator.p_correct_rows(table.X, table.hidden), 1e-4, 1 - 1e-4)
        return np.log(p / (1 - p))[:, None]

    if len(set(few.y.tolist())) < 2:  # all right or all wrong: nothing to fit a scale on, keep it as it is
        return judge(calibrator, test)
    slope, intercept = _platt(logit(few)[:, 0], few.y)
    return judge_probabilities(test, 1 / (1 + np.exp(-(slope * logit(test)[:, 0] + intercept))))


def _platt(score: np.ndarray, y: np.ndarray, min_slope: float = 0.05) -> tuple[float, float]:
    """Platt's sigmoid on a score, its slope kept at `min_slope` or more: on a few dozen questions a free fit
    can flatten or invert the ranking, and a recalibration should only move the probability scale."""
    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * score + theta[1]
        p = 1 / (1 + np.exp(-z))
        value = float(np.sum(np.logaddexp(0, z) - y * z))
        return value, np.array([np.sum((p - y) * score), np.sum(p - y)])

    fitted = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(min_slope, None), (None, None)])
    return float(fitted.x[0]), float(fitted.x[1])


def fits_needed(sizes: Sequence[int], draws: int) -> int:
    """How many calibrators one direction fits (for a progress bar)."""
    return 2 + len(sizes) * draws


def transfer_markdown(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The two tables: every fit's scores on the target's held-out questions, then the drop per direction."""
    lines = ["| source → target | fitted on | AUROC 50 % | AUROC last step | ECE every step |", "|---|---|---|---|---|"]
    for entry in entries:
        direction = f"{entry['source']} → {entry['target']}"
        rows = [(f"{entry['source']} ({entry['source_train']} traces)", entry["transfer"]),
                *((f"{entry['source']} + {a['n']} {entry['target']} questions, refitted", a) for a in entry["adapted"]),
                *((f"{entry['source']}, recalibrated on {a['n']} {entry['target']} questions", a)
                  for a in entry.get("recalibrated", [])),
                (f"{entry['target']} only ({entry['target_train']}, in-domain)", entry["in_domain"])]
        for label, scores in rows:
            lines.append(f"| {direction} | {label} | {scores['auroc_50']:.3f} | {scores['auroc_100']:.3f} | "
                         f"{scores['ece']:.3f} |")
            direction = ""
    lines += ["", "| source → target | AUROC drop at 50 % | at the last step | ECE rise |", "|---|---|---|---|"]
    for entry in entries:
        t, d = entry["transfer"], entry["in_domain"]
        lines.append(f"| {entry['source']} → {entry['target']} | {d['auroc_50'] - t['auroc_50']:+.3f} | "
                     f"{d['auroc_100'] - t['auroc_100']:+.3f} | {t['ece'] - d['ece']:+.3f} |")
    return lines

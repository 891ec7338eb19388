"""How far a calibrator fitted on one set of questions can be trusted on another, and what adapting it costs.

The study behind `sia-monitor evaluate --transfer SOURCE TARGET` and `benchmarks/transfer.py`: a calibrator
fitted as `sia-monitor fit --data` fits one, on the source's training questions, is judged on the target's
held-out questions (the fixed split), against one fitted on the target's own training questions (in-domain).
Then adaptation: refit on the source's training questions plus n of the target's (random draws), judged on
the same held-out questions, so a user knows how many of their own questions to label.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sia_monitor.tasks.benchmarks import is_heldout
from sia_monitor.trajectory import Trajectory, write_trajectories

from .dataset import PrefixTable, question_id
from .evaluation import judge
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
                   advance: Callable[[], None] | None = None) -> dict[str, Any]:
    """One direction source -> target: the transfer, the in-domain reference, and each adaptation size (the
    mean over `draws` random draws; a size larger than the target's training questions is left out)."""
    source_train, _ = split_questions(source)
    target_train, target_test = split_questions(target)
    test = PrefixTable.build(target_test)
    with tempfile.TemporaryDirectory() as scratch:

        def fitted_on(trajectories: list[Trajectory], label: str) -> dict[str, float]:
            path = Path(scratch) / f"{label}.jsonl.gz"
            write_trajectories(path, trajectories, append=False)
            ((calibrator, _, _),) = fit_all([recipe_for_data([path], label)], save=False).values()
            if advance:
                advance()
            return judge(calibrator, test)

        entry: dict[str, Any] = {
            "source": names[0], "target": names[1], "source_train": len(source_train),
            "target_train": len(target_train), "target_test": len(test.trajectories),
            "transfer": fitted_on(source_train, "transfer"), "in_domain": fitted_on(target_train, "in-domain"),
            "adapted": []}
        for n in sizes:
            if n > len(target_train):
                continue
            scores = [fitted_on(source_train + random.Random(draw).sample(target_train, n), f"adapted-{n}-{draw}")
                      for draw in range(draws)]
            entry["adapted"].append({"n": n, **{k: statistics.fmean(s[k] for s in scores) for k in KEYS}})
    return entry


def fits_needed(sizes: Sequence[int], draws: int) -> int:
    """How many calibrators one direction fits (for a progress bar)."""
    return 2 + len(sizes) * draws


def transfer_markdown(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The two tables: every fit's scores on the target's held-out questions, then the drop per direction."""
    lines = ["| source → target | fitted on | AUROC 50 % | AUROC last step | ECE every step |", "|---|---|---|---|---|"]
    for entry in entries:
        direction = f"{entry['source']} → {entry['target']}"
        rows = [(f"{entry['source']} ({entry['source_train']} traces)", entry["transfer"]),
                *((f"{entry['source']} + {a['n']} {entry['target']} questions", a) for a in entry["adapted"]),
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

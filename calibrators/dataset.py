"""Graded trajectories turned into one row per prefix, with the question id every split must group by.

Every prefix k = 1..n of a trajectory becomes a row labelled with the trajectory's final correctness. Rows of
one question (all its prefixes, and every sample drawn for it) share a group id, and the held-out split is
decided per group from a hash of that id, so it does not depend on file order and never changes when more
trajectories are collected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sia_monitor.errors import SIAError
from sia_monitor.tasks.benchmarks import HELDOUT_FRACTION, is_heldout, item_group
from sia_monitor.trajectory import Trajectory, read_trajectories

from .features import FEATURE_NAMES, HiddenColumns, trajectory_features


def question_id(trajectory: Trajectory) -> str:
    """The group a trajectory belongs to: its benchmark item, or its question text when it has none."""
    if trajectory.item_id:
        return item_group(trajectory.benchmark or "", trajectory.item_id)
    return "q:" + hashlib.sha1(trajectory.question.encode()).hexdigest()[:16]


def source_of(trajectory: Trajectory) -> str:
    """How a trace is labelled in reports: its benchmark, plus the temperature when it was sampled.

    Greedy and sampled traces of one question share a group (the split stays per question), but they are
    different populations (sampling lowers accuracy), so reports show them apart.
    """
    name = trajectory.benchmark or "?"
    return f"{name} T={temperature_of(trajectory):g}" if is_sampled(trajectory) else name


def temperature_of(trajectory: Trajectory) -> float:
    return float(trajectory.generation.get("temperature") or 0.0)


def is_sampled(trajectory: Trajectory) -> bool:
    """Drawn at temperature > 0. Sampled traces are training data: the report judges greedy traces, what the
    monitor runs by default, and lists sampled ones on a line of their own."""
    return temperature_of(trajectory) > 0


def load_graded(paths: Iterable[str | Path]) -> list[Trajectory]:
    """Read trajectory files, keeping graded records; an ungraded file is an error (run `regrade`)."""
    trajectories: list[Trajectory] = []
    for path in paths:
        records = list(read_trajectories(path, skip_truncated_tail=True))
        graded = [t for t in records if t.correct is not None]
        if records and not graded:
            raise SIAError(f"{path} holds no graded trajectories.",
                           "Collect with `sia-monitor collect` (it grades), or re-grade with `sia-monitor regrade`.")
        trajectories.extend(graded)
    return trajectories


def hidden_columns_of(trajectories: Sequence[Trajectory]) -> HiddenColumns:
    """The hidden-state vectors every step of `trajectories` carries, refused unless all carry the same kind.

    Why all-or-nothing: a feature-v2 calibrator cannot score a step without them, so a file with gaps (records
    collected before schema 2, or on an engine) would silently shrink the data or mix kinds of vector."""
    kinds: dict[HiddenColumns, int] = {}
    missing = 0
    for t in trajectories:
        for step in t.steps:
            if step.hidden is None:
                missing += 1
            else:
                kind = HiddenColumns.of(step)
                kinds[kind] = kinds.get(kind, 0) + 1
    if missing or not kinds:
        raise SIAError(f"{missing} of {missing + sum(kinds.values())} steps carry no hidden states; a hidden-state "
                       "calibrator needs them on every step.", "Collect in-process (`sia-monitor collect` records "
                       "them by default; engines give none), or fit an entropy-only calibrator.")
    if len(kinds) > 1:
        raise SIAError(f"The steps carry {len(kinds)} different kinds of hidden-state vector "
                       f"({'; '.join(f'{n} x layers {list(k.layers)}, {k.dims} numbers' for k, n in kinds.items())}).",
                       "Fit on trajectories collected with the same --hidden-dims.")
    return next(iter(kinds))


@dataclass
class PrefixTable:
    """Rows = prefixes. `trace` indexes `trajectories`; `k` is the step count of the prefix (1-based)."""

    trajectories: list[Trajectory]
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    trace: np.ndarray
    k: np.ndarray
    n_steps: np.ndarray  # steps of the whole trace the row comes from
    skipped: int = 0  # trajectories without any step (nothing to score before the answer)
    feature_names: tuple[str, ...] = field(default=FEATURE_NAMES)

    hidden: HiddenColumns | None = None  # the hidden-state columns after the entropy ones, if any

    @classmethod
    def build(cls, trajectories: Sequence[Trajectory], hidden: bool = False) -> PrefixTable:
        """One row per prefix; `hidden`: append each step's hidden-state vectors (every step must have them)."""
        kept = [t for t in trajectories if t.steps and t.correct is not None]
        columns = hidden_columns_of(kept) if hidden else None
        names = FEATURE_NAMES + (columns.names() if columns else ())
        blocks = [trajectory_features(t, columns) for t in kept]
        lengths = np.array([len(t.steps) for t in kept], dtype=int)
        trace = np.repeat(np.arange(len(kept)), lengths)
        return cls(
            trajectories=kept,
            X=np.vstack(blocks) if blocks else np.empty((0, len(names))),
            y=np.repeat([int(bool(t.correct)) for t in kept], lengths),
            groups=np.repeat([question_id(t) for t in kept], lengths),
            trace=trace,
            k=np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(kept) else np.empty(0, dtype=int),
            n_steps=np.repeat(lengths, lengths),
            skipped=len(trajectories) - len(kept),
            feature_names=names,
            hidden=columns,
        )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, rows: np.ndarray) -> PrefixTable:
        """The rows selected by a boolean mask (trajectories are shared, indices keep their meaning)."""
        return PrefixTable(self.trajectories, self.X[rows], self.y[rows], self.groups[rows], self.trace[rows],
                           self.k[rows], self.n_steps[rows], self.skipped, self.feature_names, self.hidden)

    def heldout_rows(self, fraction: float = HELDOUT_FRACTION) -> np.ndarray:
        flags = {g: is_heldout(g, fraction) for g in set(self.groups.tolist())}
        return np.array([flags[g] for g in self.groups], dtype=bool)

    def greedy_rows(self) -> np.ndarray:
        """Rows of traces decoded greedily (see `is_sampled`)."""
        greedy = np.array([not is_sampled(t) for t in self.trajectories], dtype=bool)
        return greedy[self.trace] if len(self.trace) else np.zeros(0, dtype=bool)

    def at_fraction(self, fraction: float) -> np.ndarray:
        """Row indices of each trace's prefix at `fraction` of its steps (k = ceil(fraction * n), at least 1)."""
        target = np.maximum(1, np.ceil(fraction * self.n_steps - 1e-9)).astype(int)
        return np.flatnonzero(self.k == target)

    def at_step(self, k: int) -> np.ndarray:
        """Row indices of prefix k of every trace that has at least k steps."""
        return np.flatnonzero(self.k == k)

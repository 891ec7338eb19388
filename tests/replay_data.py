"""Real saved trajectories for the replay, guardrail and TUI tests (the default model on SVAMP).

Record 0 ends cleanly at EOS after 7 steps; record 3 is a wrong answer whose answer entropy stays above
1 bit without falling from step 4 to 6, so the entropy guardrail stops it at step 6; record 30 converges
on its (right) answer two steps before it writes it, so an accepting guardrail ends it early.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

from sia_monitor.scoring import Prefix
from sia_monitor.trajectory import Trajectory, read_trajectories, write_trajectories

SVAMP = Path(__file__).resolve().parents[1] / "calibrators" / "data" / "qwen2.5-coder-0.5b-instruct" / "svamp.jsonl.gz"
CLEAN, STALLS, ACCEPTS = 0, 3, 30


def svamp_records(count: int = 4) -> list[Trajectory]:
    return list(itertools.islice(read_trajectories(SVAMP, skip_truncated_tail=True), count))


def write_sample(directory: Path, indices: tuple[int, ...] = (CLEAN, STALLS)) -> Path:
    """A small trajectory file made of real records, in the given order."""
    records = svamp_records(max(indices) + 1)
    path = directory / "sample.jsonl"
    write_trajectories(path, [records[i] for i in indices], append=False)
    return path


def as_resample(record: Trajectory, of: Trajectory) -> Trajectory:
    """`record` relabelled as another sample of `of`'s question (what `collect --samples` would write)."""
    return replace(record, question=of.question)


class EntropyScorer:
    """A stand-in calibrator, P = 1 - H/2 clipped to [0, 1]: deterministic and independent of the shipped
    artifact, so these tests do not move when the calibrators are refitted."""

    def p_correct(self, prefix: Prefix) -> float:
        return min(1.0, max(0.0, 1.0 - prefix.steps[-1].entropy_bits / 2))


class ConstantScorer:
    def __init__(self, value: float) -> None:
        self.value = value

    def p_correct(self, prefix: Prefix) -> float:
        return self.value


VOTE_SAMPLES = (Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "vote" / "qwen2.5-coder-0.5b-instruct"
                / "svamp-heldout-t0.7.jsonl.gz")


def vote_samples(count: int = 8) -> list[Trajectory]:
    """The first `count` committed vote samples of the first held-out SVAMP question (T = 0.7)."""
    return list(itertools.islice(read_trajectories(VOTE_SAMPLES, skip_truncated_tail=True), count))

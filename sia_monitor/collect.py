"""Run the monitor over a benchmark and append graded trajectories to a file, resuming where it stopped.

Why resumable: collecting a benchmark takes hours on a CPU. Each finished batch is appended (and flushed)
before the next starts, so a kill loses at most the batch in flight; on restart the file is read, a
half-written last line is dropped, and only the (item, sample) pairs not yet in the file are generated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .answers import parse_answer, same_answer
from .benchmarks import Item, grade, load_benchmark
from .errors import SIAError
from .runner import GenerationSettings, Monitor
from .trajectory import Trajectory, read_trajectories, write_trajectories


@dataclass
class CollectPlan:
    """What a collection run will do: the items still to generate and what the file already holds."""

    todo: list[tuple[Item, int]]  # (item, sample index)
    done: int


def _key(trajectory: Trajectory) -> tuple[str | None, int]:
    return trajectory.item_id, int(trajectory.generation.get("sample", 0))


def load_existing(out: Path, model_id: str) -> list[Trajectory]:
    """Trajectories already in `out`, after dropping a line cut off by a kill (the file is rewritten then)."""
    if not out.exists():
        return []
    try:
        kept = list(read_trajectories(out))
    except SIAError:
        kept = list(read_trajectories(out, skip_truncated_tail=True))  # still raises if damage is mid-file
        write_trajectories(out, kept, append=False)
    others = {t.model_id for t in kept} - {model_id}
    if others:
        raise SIAError(
            f"{out} holds trajectories of another model ({', '.join(sorted(others))}), not {model_id}.",
            "Use a different --out file for each model.",
        )
    return kept


def plan_collection(items: list[Item], samples: int, existing: list[Trajectory]) -> CollectPlan:
    done_keys = {_key(t) for t in existing}
    todo = [(item, s) for s in range(samples) for item in items if (item.item_id, s) not in done_keys]
    return CollectPlan(todo=todo, done=len(done_keys))


def collect(
    monitor: Monitor,
    benchmark: str,
    out: Path,
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    samples: int = 1,
    settings: GenerationSettings | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> CollectPlan:
    """Generate and append the missing trajectories; `progress(done, total, tokens)` after each batch."""
    if batch_size < 1 or samples < 1:
        raise SIAError("--batch-size and --samples must be at least 1.")
    settings = settings or GenerationSettings()
    if samples > 1 and settings.temperature <= 0:
        raise SIAError("Several samples per question need sampling.", "Pass --temperature (e.g. 0.7).")
    items = load_benchmark(benchmark, data_dir, limit=limit)
    plan = plan_collection(items, samples, load_existing(out, monitor.loaded.model_id))
    total, tokens = len(plan.todo), 0
    if progress:
        progress(0, total, 0)
    for start in range(0, total, batch_size):
        batch = plan.todo[start : start + batch_size]
        sample = batch[0][1]
        batch_settings = replace(settings, seed=settings.seed + 1000 * sample + start)
        started = time.perf_counter()
        trajectories = monitor.generate(
            [item.question for item, _ in batch], [item.space for item, _ in batch], batch_settings
        )
        for (item, sample_index), trajectory in zip(batch, trajectories, strict=True):
            trajectory.benchmark = benchmark
            trajectory.item_id = item.item_id
            trajectory.gold = item.gold
            trajectory.correct = grade(item, trajectory.parsed_answer)
            trajectory.generation["sample"] = sample_index
            trajectory.generation["batch_seconds"] = round(time.perf_counter() - started, 2)
        write_trajectories(out, trajectories)
        tokens += sum(t.n_tokens for t in trajectories)
        if progress:
            progress(min(start + batch_size, total), total, tokens)
    return plan


def regrade(path: Path) -> tuple[int, int]:
    """Re-parse and re-grade saved trajectories in place; return (records, records changed).

    Why: answer parsing improves over time while generations cost hours, so saved traces are re-graded
    rather than regenerated. The file is replaced atomically, so an interruption leaves the old one intact.
    """
    records = list(read_trajectories(path))
    changed = 0
    for record in records:
        parsed = parse_answer(record.final_text, record.answer_space)
        correct = None if record.gold is None else same_answer(parsed, record.gold, record.answer_space)
        changed += (parsed, correct) != (record.parsed_answer, record.correct)
        record.parsed_answer, record.correct = parsed, correct
    staging = path.with_name(".regrade-" + path.name)
    write_trajectories(staging, records, append=False)
    os.replace(staging, path)
    return len(records), changed

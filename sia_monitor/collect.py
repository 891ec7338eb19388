"""Run the monitor over a benchmark and append graded trajectories to a file, resuming where it stopped.

Why resumable: collecting a benchmark takes hours on a CPU. Each row is graded and appended (flushed and
fsynced) the moment it ends, not when its batch does, so a kill loses only the rows still generating. On
restart the file is read; a half-written last record (what a kill leaves) is dropped by writing the
complete records to a new file and moving it over the old one, so a second kill during that repair loses
nothing either; then only the (item, sample) pairs not yet in the file are generated.

The work is split so that the CLI can refuse bad input before it loads a model: `plan_collection` reads the
benchmark, checks the output file and what it holds; `run_collection` generates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sia_monitor.backends.base import Backend, GenerationSettings
from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import parse_answer, same_answer
from sia_monitor.tasks.benchmarks import Item, grade, load_benchmark
from sia_monitor.tasks.datasets import dataset_name, load_dataset
from sia_monitor.trajectory import (
    MonitorEvent,
    Trajectory,
    check_writable,
    read_trajectories,
    read_trajectory_file,
    save_trajectories,
    write_trajectories,
)


@dataclass
class CollectPlan:
    """What a collection run will do: the items still to generate and how many the file already holds."""

    benchmark: str
    out: Path
    todo: list[tuple[Item, int]]  # (item, sample index)
    done: int

    @property
    def total(self) -> int:
        """The whole job, finished part included, so a resumed run's progress counts from where it stands."""
        return self.done + len(self.todo)


# `progress(done, total, tokens)`: trajectories in the file out of the whole job, and tokens generated this run.
Progress = Callable[[int, int, int], None]


def record_key(trajectory: Trajectory) -> tuple[str | None, int]:
    """What makes a record one of a kind in a collection: its question (the item's id where it has one) and
    its sample index."""
    return trajectory.item_id or trajectory.question, int(trajectory.generation.get("sample", 0))


def load_existing(out: Path, model_id: str) -> list[Trajectory]:
    """Trajectories already in `out`; a record cut off by a kill is dropped (see the module docstring)."""
    if not out.exists():
        return []
    read = read_trajectory_file(out)  # a cut-off tail is reported in `truncated`; damage mid-file raises
    kept = read.records
    others = {t.model_id for t in kept} - {model_id}
    if others:  # checked before any repair: a file we refuse is left exactly as it was
        raise SIAError(
            f"{out} holds trajectories of another model ({', '.join(sorted(others))}), not {model_id}.",
            "Use a different --out file for each model.",
        )
    if read.truncated is not None:
        write_trajectories(out, kept, append=False)  # atomic: a new file, fsynced, then os.replace
    return kept


def plan_collection(
    benchmark: str | Path,
    out: Path,
    model_id: str,
    data_dir: str | None = None,
    limit: int | None = None,
    samples: int = 1,
    settings: GenerationSettings | None = None,
    split: str = "all",
) -> CollectPlan:
    """Check everything a collection needs except the model, and list what is left to generate.

    Several samples of a question are generated together (question by question), so a batch shares one prompt
    (no padding) and a collection cut short holds every sample of the questions it reached, which is what a
    vote over samples needs.

    `benchmark`: a built-in benchmark's name, or the path of a dataset file (`tasks.datasets`), read and
    checked whole here."""
    if samples < 1:
        raise SIAError("--samples must be at least 1.")
    if samples > 1 and (settings or GenerationSettings()).temperature <= 0:
        raise SIAError("Several samples per question need sampling.", "Pass --temperature (e.g. 0.7).")
    if isinstance(benchmark, Path):
        items = load_dataset(benchmark, limit=limit, split=split)
        name = dataset_name(benchmark)
    else:
        items, name = load_benchmark(benchmark, data_dir, limit=limit, split=split), benchmark
    check_writable(out)
    done_keys = {record_key(t) for t in load_existing(out, model_id)}
    todo = [(item, s) for item in items for s in range(samples) if (item.item_id, s) not in done_keys]
    return CollectPlan(benchmark=name, out=out, todo=todo, done=len(done_keys))


def run_collection(
    monitor: Backend,
    plan: CollectPlan,
    batch_size: int = 8,
    settings: GenerationSettings | None = None,
    progress: Progress | None = None,
) -> None:
    """Generate the plan's rows in batches; each row is graded and appended the moment it ends."""
    if batch_size < 1:
        raise SIAError("--batch-size must be at least 1.")
    settings = settings or GenerationSettings()
    done, tokens = plan.done, 0
    if progress:
        progress(done, plan.total, tokens)
    for start in range(0, len(plan.todo), batch_size):
        batch = plan.todo[start : start + batch_size]
        batch_settings = replace(settings, seed=settings.seed + 1000 * batch[0][1] + start)

        def on_event(event: MonitorEvent, batch: list[tuple[Item, int]] = batch) -> None:
            nonlocal done, tokens
            if event.kind == "token":
                tokens += 1
            elif event.kind == "final" and event.trajectory is not None:
                item, sample = batch[event.row]
                _grade(event.trajectory, plan.benchmark, item, sample)
                save_trajectories(plan.out, [event.trajectory])
                done += 1
            else:
                return
            if progress:
                progress(done, plan.total, tokens)

        monitor.generate([item.question for item, _ in batch], [item.space for item, _ in batch], batch_settings,
                         on_event=on_event)


def _grade(trajectory: Trajectory, benchmark: str, item: Item, sample: int) -> None:
    trajectory.benchmark = benchmark
    trajectory.item_id = item.item_id
    trajectory.gold = item.gold
    trajectory.correct = grade(item, trajectory.parsed_answer)
    trajectory.generation["sample"] = sample


def collect(
    monitor: Backend,
    benchmark: str,
    out: Path,
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    samples: int = 1,
    settings: GenerationSettings | None = None,
    progress: Progress | None = None,
    split: str = "all",
) -> CollectPlan:
    """`plan_collection` then `run_collection`, for callers that already hold a loaded monitor."""
    if batch_size < 1:
        raise SIAError("--batch-size must be at least 1.")
    plan = plan_collection(benchmark, out, monitor.model_id, data_dir, limit, samples, settings, split)
    run_collection(monitor, plan, batch_size, settings, progress)
    return plan


def regrade(path: Path) -> tuple[int, int]:
    """Re-parse and re-grade saved trajectories in place; return (records, records changed).

    Why: answer parsing improves over time while generations cost hours, so saved traces are re-graded
    rather than regenerated.
    """
    records = list(read_trajectories(path))
    changed = 0
    for record in records:
        parsed = parse_answer(record.final_text, record.answer_space)
        correct = None if record.gold is None else same_answer(parsed, record.gold, record.answer_space)
        changed += (parsed, correct) != (record.parsed_answer, record.correct)
        record.parsed_answer, record.correct = parsed, correct
    write_trajectories(path, records, append=False)  # atomic: an interruption leaves the old file intact
    return len(records), changed

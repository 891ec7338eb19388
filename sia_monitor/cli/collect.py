"""`sia-monitor collect`: graded trajectories for a benchmark, batched, with a progress bar, resumable."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from sia_monitor.errors import SIAError
from sia_monitor.options import (
    DecodingOptions,
    ModelOptions,
    add_hidden_state_options,
    add_model_options,
    hidden_state_spec,
    load_monitor,
)
from sia_monitor.tasks.benchmarks import BENCHMARKS, SPLITS


def add_parser(commands: argparse._SubParsersAction) -> None:
    col = commands.add_parser(
        "collect", help="monitor a benchmark and write graded trajectories (resumable)",
        description="Run the monitor over a benchmark with batched generation and append graded trajectories "
        "to --out. Interrupted? Run the same command again: it resumes without redoing or duplicating items.",
    )
    source = col.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", choices=sorted(BENCHMARKS), help="which benchmark")
    source.add_argument("--dataset", type=Path, default=None, metavar="FILE",
                        help="your own questions instead: a .jsonl or .csv file with question and answer (a number), "
                        "or question, choices and answer (a label or an option's text), and an optional id; "
                        "every row is checked before the model loads")
    source.add_argument("--reprobe", type=Path, default=None, metavar="FILE",
                        help="no generation: probe the saved trajectories of FILE again on their own tokens, in "
                        "process, and write them with hidden states to --out (for traces collected by an engine "
                        "or before hidden states were recorded; each keeps its own step mode; --model must be "
                        "the model that wrote them)")
    col.add_argument("--out", type=Path, required=True, help="trajectory file (.jsonl or .jsonl.gz)")
    col.add_argument("--split", choices=SPLITS, default="all",
                     help="which questions: all (default), or only those of the fixed train or held-out split that "
                     "the calibrators are fitted and judged on")
    col.add_argument("--limit", type=int, default=None, help="first N questions (of the split) only")
    col.add_argument("--batch-size", type=int, default=8, help="questions generated together (default 8)")
    col.add_argument("--samples", type=int, default=1, help="samples per question (needs --temperature > 0)")
    col.add_argument("--data-dir", default=None,
                     help="folder with gsm8k/, svamp/, arc/ (default: $SIA_MONITOR_DATA or ../shared/data)")
    add_model_options(col)
    add_hidden_state_options(col, default=True)
    col.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    if args.reprobe is not None:
        return _reprobe(args, err)
    from sia_monitor.collect import plan_collection, run_collection

    settings = DecodingOptions.from_args(args).settings()
    if args.batch_size < 1:
        raise SIAError("--batch-size must be at least 1.")
    model = ModelOptions.from_args(args)
    hidden = hidden_state_spec(args)
    plan = plan_collection(args.dataset or args.benchmark, args.out, model.check(), args.data_dir, args.limit,
                           args.samples, settings, args.split)
    if not plan.todo:
        err.print(f"Nothing to do: {args.out} already holds all {plan.done} trajectories.")
        return 0
    monitor = load_monitor(model, err, hidden_states=hidden)

    def work(progress: Progress) -> None:
        started = time.perf_counter()

        def rate(tokens: int) -> str:
            return f"{tokens} tokens, {tokens / max(time.perf_counter() - started, 1e-9):.1f} tok/s" if tokens else ""

        run_collection(monitor, plan, args.batch_size, settings,
                       lambda done, total, tokens: progress(done, total, rate(tokens)))

    saved = _with_progress(f"collect {plan.benchmark}", plan.done, plan.total, work, args.out, err)
    if saved is None:
        return 130
    err.print(f"{saved - plan.done} new trajectories appended to {args.out} ({plan.done} were already there).")
    return 0


def _reprobe(args: argparse.Namespace, err: Console) -> int:
    from sia_monitor.reprobe import plan_reprobe, run_reprobe

    model = ModelOptions.from_args(args)
    if model.engine is not None:
        raise SIAError("--reprobe runs the model in process (an engine gives no hidden states).", "Drop --engine.")
    hidden = hidden_state_spec(args)
    plan = plan_reprobe(args.reprobe, args.out, model.check(), args.limit)
    if plan.unreprobeable:
        err.print(f"[dim]{plan.unreprobeable} trajectories were stopped or cancelled mid-trace: not probed again[/]")
    if not plan.todo:
        err.print(f"Nothing to do: {args.out} already holds all {plan.done} trajectories.")
        return 0
    monitor = load_monitor(model, err, hidden_states=hidden)
    skipped: list[str] = []

    def work(progress: Progress) -> None:
        skipped.extend(run_reprobe(monitor, plan, lambda done, total, misses: progress(
            done, total, f"{misses} skipped" if misses else "")))

    saved = _with_progress(f"reprobe {args.reprobe.name}", plan.done, plan.total, work, args.out, err)
    if saved is None:
        return 130
    for reason in skipped:
        err.print(f"[yellow]skipped[/] {reason}")
    err.print(f"{saved - plan.done} trajectories probed again and appended to {args.out} ({plan.done} were already "
              f"there{f', {len(skipped)} skipped' if skipped else ''}).")
    return 0


Progress = Callable[[int, int, str], None]  # (trajectories in the file, the whole job, what the bar says after)
def _with_progress(title: str, done: int, total: int, work: Callable[[Progress], None], out: Path,
                   err: Console) -> int | None:
    """Run `work` under a progress bar; return how many trajectories the file holds when it ends, or None after
    Ctrl-C, which keeps what was saved (each record is appended as it ends) and says how to resume."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"))
    saved = done
    with Bar(*columns, console=err) as bar:
        task = bar.add_task(title, total=total, completed=done, note="")

        def progress(now: int, whole: int, note: str) -> None:
            nonlocal saved
            saved = now
            bar.update(task, completed=now, total=whole, note=note)

        try:
            work(progress)
        except KeyboardInterrupt:
            err.print(f"Interrupted; {out} holds {saved} of {total} trajectories (each is saved as it ends). "
                      "Run the same command to resume.")
            return None
    return saved

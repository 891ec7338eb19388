"""`sia-monitor collect`: graded trajectories for a benchmark, batched, with a progress bar, resumable."""

from __future__ import annotations

import argparse
import time
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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sia_monitor.collect import plan_collection, run_collection

    err = Console(stderr=True, highlight=False)
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
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
    saved = plan.done
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(f"collect {plan.benchmark}", total=plan.total, completed=plan.done, rate="")
        started = time.perf_counter()

        def progress(done: int, total: int, tokens: int) -> None:
            nonlocal saved
            saved = done
            rate = f"{tokens} tokens, {tokens / max(time.perf_counter() - started, 1e-9):.1f} tok/s" if tokens else ""
            bar.update(task, completed=done, total=total, rate=rate)

        try:
            run_collection(monitor, plan, args.batch_size, settings, progress)
        except KeyboardInterrupt:
            err.print(f"Interrupted; {args.out} holds {saved} of {plan.total} trajectories (each row is saved as "
                      "it ends). Run the same command to resume.")
            return 130
    err.print(f"{saved - plan.done} new trajectories appended to {args.out} ({plan.done} were already there).")
    return 0

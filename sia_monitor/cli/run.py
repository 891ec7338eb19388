"""`sia-monitor run`: stream one generation, with a line per reasoning step (or JSON events with --json)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from sia_monitor.options import (
    add_answer_options,
    add_calibrator_options,
    add_hidden_state_options,
    add_model_options,
    hidden_state_spec,
    load_monitor,
    prepare,
)
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory, save_trajectories


def add_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="stream one generation with the step-wise answer entropy and P(correct)",
        description="Stream the model's reasoning. After every step print: step number, the step (shortened), "
        "the conditional answer entropy in bits, P(correct) from the calibrator shipped for the model and answer "
        "type (if any), the top-3 answers with probabilities, and the probability "
        "mass the estimator covered. At the end: the parsed answer, tokens and tokens/s.",
    )
    run.add_argument("question", help="the question to answer")
    add_answer_options(run)
    run.add_argument("--save", type=Path, default=None, help="append the trajectory to this JSONL(.gz) file")
    run.add_argument("--json", action="store_true", help="print one JSON event per line instead of text")
    add_calibrator_options(run)
    add_model_options(run)
    add_hidden_state_options(run, default=None)
    run.set_defaults(handler=command)


def _step_line(step: StepRecord) -> Text:
    """One row per step; built as Text, not markup, because steps are full of brackets (LaTeX)."""
    text = step.text if len(step.text) <= 28 else step.text[:27] + "…"
    top = " · ".join(f"{a} {p:.2f}" for a, p in step.top[:3]) or "-"
    p_correct: tuple[str, str] | str = ""
    if step.p_correct is not None:
        style = "bold green" if step.p_correct >= 0.6 else "bold yellow" if step.p_correct >= 0.3 else "bold red"
        p_correct = (f" │ P(correct) {step.p_correct:.2f}", style)
    return Text.assemble(
        (f"  ↳ step {step.index + 1:>2}", "bold cyan"), " │ H ", (f"{step.entropy_bits:4.2f}", "bold"),
        " bits", p_correct, f" │ {top} │ ", (f"covered {step.covered:.2f} │ {text}", "dim"),
    )


def command(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    hidden = hidden_state_spec(args)
    prepared = prepare(args, err, save=args.save)
    monitor = load_monitor(prepared.model, err, prepared.scorer, hidden_states=hidden)
    cancel = threading.Event()
    trajectory: Trajectory | None = None
    events = monitor.stream(prepared.question, prepared.space, prepared.settings, cancel=cancel)
    interrupted = False
    while True:
        try:
            event: MonitorEvent = next(events)
            if args.json:
                print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
            elif event.kind == "token":
                console.out(event.text, end="", highlight=False)
            elif event.kind == "step" and event.step is not None:
                console.print(_step_line(event.step), soft_wrap=True)
            if event.kind == "final":
                trajectory = event.trajectory
        except StopIteration:
            break
        except KeyboardInterrupt:
            interrupted = True
            cancel.set()  # generation stops within a token; the stream still delivers the final event
    elapsed = time.perf_counter() - args.started  # from the command's start: loading included
    if trajectory is None:
        return 1
    if not args.json:
        console.print()
        rate = trajectory.n_tokens / max(trajectory.elapsed_s, 1e-9)
        console.print(
            f"[bold]answer:[/] {escape(str(trajectory.parsed_answer))}   [bold]steps:[/] {len(trajectory.steps)}   "
            f"[bold]tokens:[/] {trajectory.n_tokens}   [bold]tokens/s:[/] {rate:.1f}   "
            f"[dim]({trajectory.finish_reason}, {elapsed:.1f} s with loading)[/]", soft_wrap=True
        )
    if args.save:
        save_trajectories(args.save, [trajectory])  # a failed write keeps it elsewhere and says where
        if not args.json:
            console.print(f"[dim]trajectory appended to {escape(str(args.save))}[/]")
    return 130 if interrupted else 0

"""`sia-monitor`: watch a model reason, step by step, from the terminal.

Commands:
  run       stream one generation and print, after every reasoning step, the conditional answer entropy
  collect   run the monitor over a benchmark and append graded trajectories (resumable)
  regrade   re-parse and re-grade saved trajectories with the current answer parser
  fit       fit the calibrators in calibrators/recipes.toml from the committed trajectories
  evaluate  write the calibration report (tables, PNG plots) from the fitted calibrators
  models    list the named models, whether they are installed, and their calibrators

Every user error ends with one line on stderr and exit status 2; Ctrl-C saves what was generated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn


from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .benchmarks import BENCHMARKS
from .errors import SIAError, SIAWarning
from .models import DEFAULT_MODEL, REGISTRY, cache_root, locate_parts
from .options import (
    DecodingOptions,
    ModelOptions,
    add_answer_options,
    add_calibrator_options,
    add_guardrail_options,
    add_hidden_state_options,
    add_model_options,
    hidden_state_spec,
    load_monitor,
    prepare,
)
from .trajectory import MonitorEvent, StepRecord, Trajectory, save_trajectories

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is), exit 2.

    Why: argparse prints the whole usage block first, and the line that matters comes last.
    """

    def error(self, message: str) -> NoReturn:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(message)} (see `{escape(self.prog)} --help`)")
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sia-monitor",
        description="Monitor an LLM's reasoning: after every step, how uncertain is it about its final answer?",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example: sia-monitor run "A baker made 24 muffins and sold 9. How many are left?"',
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    add_hidden_state_options(run, default=False)

    col = commands.add_parser(
        "collect", help="monitor a benchmark and write graded trajectories (resumable)",
        description="Run the monitor over a benchmark with batched generation and append graded trajectories "
        "to --out. Interrupted? Run the same command again: it resumes without redoing or duplicating items.",
    )
    col.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), help="which benchmark")
    col.add_argument("--out", type=Path, required=True, help="trajectory file (.jsonl or .jsonl.gz)")
    col.add_argument("--limit", type=int, default=None, help="first N questions only")
    col.add_argument("--batch-size", type=int, default=8, help="questions generated together (default 8)")
    col.add_argument("--samples", type=int, default=1, help="samples per question (needs --temperature > 0)")
    col.add_argument("--data-dir", default=None,
                     help="folder with gsm8k/, svamp/, arc/ (default: $SIA_MONITOR_DATA or ../shared/data)")
    add_model_options(col)
    add_hidden_state_options(col, default=True)

    regrade = commands.add_parser(
        "regrade", help="re-parse and re-grade saved trajectories in place (no model needed)",
        description="Re-read the final answer of every saved trajectory with the current parser and grade it "
        "again against its gold answer. Generations are expensive; parsing improves.",
    )
    regrade.add_argument("files", nargs="+", type=Path, help="trajectory files (.jsonl or .jsonl.gz)")

    fit = commands.add_parser(
        "fit", help="fit the shipped calibrators from the committed trajectories (no model needed)",
        description="Fit every calibrator listed in calibrators/recipes.toml: choose logistic regression or "
        "HistGradientBoosting and isotonic or sigmoid calibration by grouped cross-validation on the training "
        "questions, fit, and write calibrators/shipped/<model>/<name>.skops with a JSON card (model, data, "
        "held-out metrics, sha256).",
    )
    fit.add_argument("--recipes", type=Path, default=None, help="recipes file (default: calibrators/recipes.toml)")
    fit.add_argument("--shipped", type=Path, default=None, metavar="DIR",
                     help="write the calibrators under DIR/<model>/ instead of calibrators/shipped")
    fit.add_argument("--only", nargs="+", default=None, metavar="NAME",
                     help="fit only these recipes (name, or model/name)")

    evaluate = commands.add_parser(
        "evaluate", help="write the calibration report: tables and plots (no model needed)",
        description="Score the fitted calibrators against four baselines (answer entropy, mean token entropy, "
        "DeepConf lowest-window confidence, top-1 probability) at 25/50/75/100% of each trace and at steps "
        "1-5 on held-out questions (ROC-AUC, Brier, ECE, PRR), test the SIA signatures, and write report.json, "
        "report.md and PNG plots.",
    )
    evaluate.add_argument("--recipes", type=Path, default=None, help="recipes file (default: calibrators/recipes.toml)")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="output folder (default: benchmarks/results/calibration)")
    evaluate.add_argument("--shipped", type=Path, default=None, metavar="DIR",
                          help="read the calibrators from DIR/<model>/ instead of calibrators/shipped")
    evaluate.add_argument("--update", type=Path, default=None, metavar="BENCHMARKS.md",
                          help="also replace the calibration section of this markdown file")

    commands.add_parser(
        "models", help="list the named models, whether they are installed, and their calibrators",
        description="List the models `--model` accepts by name: what each is, whether its pinned PyPI packages "
        "are installed (and the pip command if not), whether it has been converted to the local cache "
        "($SIA_MONITOR_CACHE or ~/.cache/sia-monitor), its license, and the calibrators shipped for it. "
        "Any local model directory, .gguf file or (online) hub id works too.",
    )

    tui = commands.add_parser(
        "tui", help="watch a generation live (or replay a saved one) in a terminal UI, with the guardrail",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A full-screen monitor: the reasoning streams in with every step tinted by how much it "
        "changed the answer entropy,\nnext to the entropy curve, the current P(correct), the top answers and "
        "the guardrail's decisions.\n\n"
        "  sia-monitor tui \"A baker made 24 muffins and sold 9. How many are left?\"\n"
        "  sia-monitor tui --replay runs/svamp.jsonl.gz --item 3 --speed 4 --auto\n\n"
        "Keys: s stop now · r resample (new seed, temperature bump) · p pause/resume · a guardrail on/off\n"
        "      e export the trajectory · q or Ctrl-C quit (saves what was generated; nothing is lost)\n\n"
        "The guardrail (with --auto, or `a`): from step --min-steps on, when P(correct) stays below "
        "--stop-below for\n--patience steps (without a calibrator: when the answer entropy stays at or above "
        "--entropy-above bits\nwithout falling), it resamples up to --max-resamples times, then stops; with "
        "--accept-above it ends a\nconverged trace early and has the model state its answer. Every decision "
        "is shown with its reason\nand recorded in the saved trajectory.",
    )
    tui.add_argument("question", nargs="?", default=None, help="the question to answer (omit with --replay)")
    tui.add_argument("--replay", type=Path, default=None, metavar="FILE",
                     help="replay saved trajectories from FILE (.jsonl or .jsonl.gz) instead of generating; "
                     "no model is loaded")
    tui.add_argument("--item", type=int, default=0, metavar="N",
                     help="with --replay: which record to replay (0-based, default 0); later records of the "
                     "same question are what `r` resamples to")
    tui.add_argument("--speed", type=float, default=1.0, metavar="X",
                     help="with --replay: 1 = the recorded pace (default), 4 = four times faster, 0 = no waiting")
    tui.add_argument("--save", type=Path, default=None, metavar="FILE",
                     help="where quitting writes the session, every attempt (default for a live run: "
                     "sia-monitor-runs/<timestamp>.jsonl; a replay is saved only when this is given)")
    add_answer_options(tui, help_type="answer space, as for `run`")
    add_guardrail_options(tui)
    add_calibrator_options(tui)
    add_model_options(tui)
    return parser


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


def command_run(args: argparse.Namespace) -> int:
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


def command_collect(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .collect import plan_collection, run_collection

    err = Console(stderr=True, highlight=False)
    settings = DecodingOptions.from_args(args).settings()
    if args.batch_size < 1:
        raise SIAError("--batch-size must be at least 1.")
    model = ModelOptions.from_args(args)
    hidden = hidden_state_spec(args)
    plan = plan_collection(args.benchmark, args.out, model.check(), args.data_dir, args.limit, args.samples, settings)
    if not plan.todo:
        err.print(f"Nothing to do: {args.out} already holds all {plan.done} trajectories.")
        return 0
    monitor = load_monitor(model, err, hidden_states=hidden)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
    saved = plan.done
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(f"collect {args.benchmark}", total=plan.total, completed=plan.done, rate="")
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


def command_regrade(args: argparse.Namespace) -> int:
    from .collect import regrade

    console = Console(highlight=False)
    for path in args.files:
        total, changed = regrade(path)
        console.print(f"{path}: {total} trajectories, {changed} re-graded differently")
    return 0


def _recipes(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from calibrators.fitting import RECIPES, load_recipes

    recipes = load_recipes(args.recipes or RECIPES)
    only = getattr(args, "only", None)
    if only:
        wanted = [r for r in recipes if r.name in only or r.key in only]
        unknown = set(only) - {r.name for r in wanted} - {r.key for r in wanted}
        if unknown:
            raise SIAError(f"No recipe named {', '.join(sorted(unknown))}.",
                           f"Recipes: {', '.join(r.key for r in recipes)}.")
        recipes = wanted
    return recipes


def command_fit(args: argparse.Namespace) -> int:
    from calibrators.artifact import SHIPPED_DIR
    from calibrators.fitting import fit_all

    err = Console(stderr=True, highlight=False)
    recipes = _recipes(args)
    started = time.perf_counter()
    with err.status("fitting") as status:
        fitted = fit_all(recipes, progress=lambda message: status.update(escape(message)),
                         shipped_dir=args.shipped or SHIPPED_DIR)
    judged_by = {recipe.key: "held-out" if recipe.evaluation == "heldout" else "grouped-CV" for recipe in recipes}
    for key, (calibrator, _, _) in fitted.items():
        metrics = calibrator.info.metrics
        last, half, every = metrics["at_last_step"], metrics["at_50pct"], metrics["all_prefixes"]
        err.print(f"[bold]{escape(key)}[/]: {calibrator.info.config['model']} + {calibrator.info.config['method']}; "
                  f"{judged_by[key]} AUROC {half['auroc']:.3f} at 50%, {last['auroc']:.3f} at the last step; "
                  f"ECE {every['ece']:.3f} over every step ({metrics['heldout_traces']} traces)")
    shipped = sum(recipe.ship for recipe in recipes)
    err.print(f"[dim]{len(fitted)} calibrators fitted, {shipped} written to {escape(str(args.shipped or SHIPPED_DIR))} in "
              f"{time.perf_counter() - started:.1f} s[/]")
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from calibrators.artifact import SHIPPED_DIR
    from calibrators.report import DEFAULT_OUT, build_report, write_report

    err = Console(stderr=True, highlight=False)
    started = time.perf_counter()
    with err.status("evaluating") as status:
        built = build_report(_recipes(args), args.shipped or SHIPPED_DIR,
                             progress=lambda message: status.update(escape(message)))
        command = "sia-monitor evaluate" + (f" --update {args.update}" if args.update else "")
        written = write_report(built, args.out or DEFAULT_OUT, command, args.update)
    for row in built["json"]["targets"]:
        mark = "[green]met[/]" if row["met"] else "[red]not met[/]"
        err.print(f"{escape(row['calibrator'])}: {escape(row['target'])} {row['goal']}: {row['measured']:.3f} {mark}")
    err.print(f"[dim]wrote {', '.join(escape(str(p)) for p in written)} in {time.perf_counter() - started:.1f} s[/]")
    return 0


def command_models(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    for spec in REGISTRY.values():
        try:
            locate_parts(spec)
            state = "installed"
        except SIAError:
            state = "not installed: pip install " + " ".join(spec.requirements)
        converted = (cache_root() / "models" / spec.name).is_dir()
        default = " (default)" if spec.name == DEFAULT_MODEL else ""
        console.print(f"[bold]{spec.name}[/]{default}: {spec.description}; {state}"
                      f"{'; converted' if converted else ''}; license {spec.license}")
        from calibrators.artifact import SHIPPED_DIR

        for path in sorted((SHIPPED_DIR / spec.name).glob("*.skops")):
            console.print(f"    calibrator {path.stem}: {escape(str(path))}")
    return 0


def command_tui(args: argparse.Namespace) -> int:
    from tui.command import run_tui  # Textual is imported only for this command

    return run_tui(args)


@contextlib.contextmanager
def one_line_warnings(err: Console) -> Iterator[None]:
    """Print every `SIAWarning` as one `warning: ...` line on `err` (as errors are printed), not in Python's
    two-line form with a file name and source line that mean nothing to a user. Other warnings are untouched."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, SIAWarning):
            err.print(f"[bold yellow]warning:[/] {escape(str(message))}")
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # torch is imported later, on demand: "with loading" counts from here
    args = build_parser().parse_args(argv)
    args.started = started
    handlers = {"run": command_run, "collect": command_collect, "regrade": command_regrade, "fit": command_fit,
                "evaluate": command_evaluate, "models": command_models, "tui": command_tui}
    try:
        with one_line_warnings(Console(stderr=True, highlight=False, soft_wrap=True)):
            return handlers[args.command](args)
    except SIAError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

"""`sia-monitor evaluate`: the calibration report (tables and plots) from the fitted calibrators."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sia_monitor.errors import SIAError


def add_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="write the calibration report: tables and plots (no model needed)",
        description="Score the fitted calibrators (or, with --calibrator FILE --data FILE..., your own on your "
        "own trajectories) against four baselines (answer entropy, mean token entropy, "
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
    own = evaluate.add_argument_group("your own calibrator or data")
    own.add_argument("--calibrator", type=Path, default=None, metavar="FILE.skops",
                     help="judge this calibrator (e.g. from `fit --data`) instead of the recipes' ...")
    own.add_argument("--data", type=Path, nargs="+", default=None, metavar="FILE",
                     help="... on every trajectory of these files (questions it was not fitted on; e.g. collected "
                     "with `collect --dataset`); needs --out")
    own.add_argument("--force", action="store_true",
                     help="judge it even on trajectories of another model or answer type than it was fitted for")
    transfer = evaluate.add_argument_group("transfer between two sets of questions")
    transfer.add_argument("--transfer", type=Path, nargs=2, default=None, metavar=("SOURCE", "TARGET"),
                          help="how well a calibrator fitted on SOURCE's questions (trajectory files, as `fit --data` "
                          "fits) does on TARGET's held-out questions, against one fitted on TARGET itself, and after "
                          "adding n of TARGET's questions to SOURCE (n from --sizes); writes transfer.json and "
                          "transfer.md to --out")
    transfer.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                          help="with --transfer: how many target questions to add (default 25 50 100 200)")
    transfer.add_argument("--hidden-states", action="store_true",
                          help="with --transfer: hidden-state calibrators (feature version 2; both files collected "
                          "in-process, which records hidden states), which are known to transfer worse")
    evaluate.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    if args.transfer is not None:
        return _transfer(args)
    if args.hidden_states:
        raise SIAError("--hidden-states goes with --transfer (a calibrator's card says what it reads).")
    from calibrators.artifact import SHIPPED_DIR
    from calibrators.fitting import select_recipes
    from calibrators.report import DEFAULT_OUT, build_report, write_report

    err = Console(stderr=True, highlight=False)
    started = time.perf_counter()
    recipes, given = _own(args) if args.calibrator or args.data else (select_recipes(args.recipes), {})
    with err.status("evaluating") as status:
        built = build_report(recipes, args.shipped or SHIPPED_DIR,
                             progress=lambda message: status.update(escape(message)), given=given)
        command = "sia-monitor evaluate" + (f" --update {args.update}" if args.update else "") + (
            f" --calibrator {args.calibrator} --data {' '.join(map(str, args.data))}" if args.calibrator else "")
        written = write_report(built, args.out or DEFAULT_OUT, command, args.update)
    for row in built["json"]["targets"]:
        mark = "[green]met[/]" if row["met"] else "[red]not met[/]"
        err.print(f"{escape(row['calibrator'])}: {escape(row['target'])} {row['goal']}: {row['measured']:.3f} {mark}")
    err.print(f"[dim]wrote {', '.join(escape(str(p)) for p in written)} in {time.perf_counter() - started:.1f} s[/]")
    return 0


def _own(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The one recipe of `--calibrator FILE --data FILE...`, checked before anything is computed: the
    calibrator loads (safely), the files exist, and their model and answer types are the calibrator's."""
    from calibrators.artifact import load_calibrator
    from calibrators.dataset import load_graded
    from calibrators.report import external_recipe

    if not (args.calibrator and args.data):
        raise SIAError("--calibrator and --data go together: a calibrator, and the trajectories to judge it on.")
    if args.out is None:
        raise SIAError("--calibrator needs --out DIR: the report is written there, not over the shipped report.")
    if args.update is not None or args.recipes is not None:
        raise SIAError("--update and --recipes are for the recipes' report, not --calibrator.")
    calibrator = load_calibrator(args.calibrator)
    recipe = external_recipe(calibrator, args.data)
    trajectories = load_graded(recipe.data)
    if not trajectories:
        raise SIAError(f"{', '.join(map(str, args.data))}: no graded trajectories to judge the calibrator on.")
    checked = set()
    for trajectory in trajectories:
        key = (trajectory.model_id, trajectory.answer_space.kind)
        if key not in checked:
            calibrator.check(trajectory.model_id, trajectory.answer_space, force=args.force)
            checked.add(key)
    return [recipe], {recipe.key: calibrator}


def _transfer(args: argparse.Namespace) -> int:
    """`--transfer SOURCE TARGET`: the transfer study on two trajectory files, checked before any fit."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from calibrators.dataset import load_graded
    from calibrators.transfer import SIZES, fits_needed, split_questions, transfer_markdown, transfer_study

    if args.out is None:
        raise SIAError("--transfer needs --out DIR: transfer.json and transfer.md are written there.")
    if args.calibrator or args.data or args.update or args.recipes:
        raise SIAError("--transfer fits its own calibrators: it takes no --calibrator, --data, --update or --recipes.")
    sizes = args.sizes or list(SIZES)
    if any(n < 1 for n in sizes):
        raise SIAError("--sizes must be positive numbers of questions.")
    source, target = (load_graded([path]) for path in args.transfer)
    for path, trajectories in zip(args.transfer, (source, target), strict=True):
        train, held = split_questions(trajectories)
        if not train or not held:
            raise SIAError(f"{path}: {len(train)} training and {len(held)} held-out traces; the transfer study "
                           "needs both (a few dozen questions at least).")
    kinds = {(t.model_id, t.answer_space.kind) for t in [*source, *target]}
    if len(kinds) > 1:
        raise SIAError(f"--transfer needs one model and one answer type in both files, not {sorted(kinds)}.")
    features = "hidden" if args.hidden_states else "entropy"
    if args.hidden_states:
        from calibrators.dataset import hidden_columns_of

        for path, trajectories in zip(args.transfer, (source, target), strict=True):
            try:
                hidden_columns_of(trajectories)
            except SIAError as exc:
                raise SIAError(f"{path}: {exc.message}", exc.hint) from exc
    names = (args.transfer[0].name.split(".")[0], args.transfer[1].name.split(".")[0])
    err = Console(stderr=True, highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(f"{names[0]} → {names[1]}: fits", total=fits_needed(sizes, 2))
        entry = transfer_study(source, target, names, sizes, advance=lambda: progress.advance(task),
                               features=features)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "transfer.json", args.out / "transfer.md"]
    for path, text in zip(written, (json.dumps(entry, indent=2) + "\n",
                                    "\n".join(transfer_markdown([entry])) + "\n"), strict=True):
        staging = path.with_suffix(path.suffix + ".tmp")
        staging.write_text(text, encoding="utf-8")
        staging.replace(path)  # a report that is killed mid-write leaves the previous one whole
    drop = entry["in_domain"]["auroc_100"] - entry["transfer"]["auroc_100"]
    err.print(f"{escape(names[0])} → {escape(names[1])}: last-step AUROC {entry['transfer']['auroc_100']:.3f} "
              f"against {entry['in_domain']['auroc_100']:.3f} in-domain ({drop:+.3f}); wrote "
              f"{', '.join(escape(str(p)) for p in written)}")
    return 0

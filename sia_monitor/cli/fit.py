"""`sia-monitor fit`: fit the calibrators of calibrators/recipes.toml from the committed trajectories."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sia_monitor.errors import SIAError


def add_parser(commands: argparse._SubParsersAction) -> None:
    fit = commands.add_parser(
        "fit", help="fit the shipped calibrators from the committed trajectories (no model needed)",
        description="Fit every calibrator listed in calibrators/recipes.toml: choose logistic regression or "
        "HistGradientBoosting and isotonic or sigmoid calibration by grouped cross-validation on the training "
        "questions, fit, and write calibrators/shipped/<model>/<name>.skops with a JSON card (model, data, "
        "held-out metrics, sha256). With --data FILE... --out FILE.skops: the same for your own trajectories.",
    )
    fit.add_argument("--recipes", type=Path, default=None, help="recipes file (default: calibrators/recipes.toml)")
    fit.add_argument("--shipped", type=Path, default=None, metavar="DIR",
                     help="write the calibrators under DIR/<model>/ instead of calibrators/shipped")
    fit.add_argument("--only", nargs="+", default=None, metavar="NAME",
                     help="fit only these recipes (name, or model/name)")
    own = fit.add_argument_group("your own data")
    own.add_argument("--data", type=Path, nargs="+", default=None, metavar="FILE",
                     help="fit one calibrator on these trajectory files instead of the recipes (from `sia-monitor "
                     "collect --dataset`); model and answer types come from the records")
    own.add_argument("--out", type=Path, default=None, metavar="FILE.skops",
                     help="with --data: where to write the calibrator (and its .json card)")
    own.add_argument("--evaluation", choices=("cv", "heldout"), default="cv",
                     help="with --data: judge it by grouped 5-fold CV over all questions (default), or fit outside "
                     "the fixed held-out split and judge on it")
    own.add_argument("--hidden-states", action="store_true",
                     help="with --data: read each step's hidden states too (feature version 2; the files must be "
                     "collected in-process, which records them); the calibrator then needs them at run time, so "
                     "engines fall back to an entropy-only one")
    fit.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    from calibrators.artifact import SHIPPED_DIR
    from calibrators.fitting import fit_all, select_recipes

    err = Console(stderr=True, highlight=False)
    if args.hidden_states and args.data is None:
        raise SIAError("--hidden-states goes with --data (a recipe says `features = \"hidden\"` instead).")
    if args.data is not None:
        return fit_own_data(args, err)
    if args.out is not None:
        raise SIAError("--out goes with --data (the recipes' calibrators are written under --shipped).")
    recipes = select_recipes(args.recipes, args.only)
    started = time.perf_counter()
    with err.status("fitting") as status:
        fitted = fit_all(recipes, progress=lambda message: status.update(escape(message)),
                         shipped_dir=args.shipped or SHIPPED_DIR)
    judged_by = {recipe.key: "held-out" if recipe.evaluation == "heldout" else "grouped-CV" for recipe in recipes}
    for key, (calibrator, _, _) in fitted.items():
        _say_metrics(err, key, calibrator, judged_by[key])
    shipped = sum(recipe.ship for recipe in recipes)
    err.print(f"[dim]{len(fitted)} calibrators fitted, {shipped} written to {escape(str(args.shipped or SHIPPED_DIR))} in "
              f"{time.perf_counter() - started:.1f} s[/]")
    return 0


def _say_metrics(err: Console, key: str, calibrator: Any, judged_by: str) -> None:
    from calibrators.fitting import describe_config

    metrics = calibrator.info.metrics
    last, half, every = metrics["at_last_step"], metrics["at_50pct"], metrics["all_prefixes"]
    err.print(f"[bold]{escape(key)}[/]: {escape(describe_config(calibrator.info.config))}; "
              f"{judged_by} AUROC {half['auroc']:.3f} at 50%, {last['auroc']:.3f} at the last step; "
              f"ECE {every['ece']:.3f} over every step ({metrics['heldout_traces']} traces)")


def fit_own_data(args: argparse.Namespace, err: Console) -> int:
    """`fit --data FILE... --out FILE.skops`: one calibrator for a user's own trajectories."""
    from calibrators.artifact import save_calibrator
    from calibrators.fitting import fit_all, recipe_for_data
    from sia_monitor.trajectory import check_writable

    if args.out is None or args.out.suffix != ".skops":
        raise SIAError("--data needs --out FILE.skops: where to write the calibrator.")
    if args.recipes is not None or args.only or args.shipped is not None:
        raise SIAError("--data fits one calibrator from the files; --recipes, --only and --shipped are for the recipes.")
    check_writable(args.out)
    recipe = recipe_for_data(args.data, args.out.name.removesuffix(".skops"), args.evaluation,
                             features="hidden" if args.hidden_states else "entropy")
    started = time.perf_counter()
    with err.status("fitting") as status:
        try:
            ((calibrator, _, _),) = fit_all([recipe], progress=lambda message: status.update(escape(message)),
                                            save=False).values()
        except ValueError as exc:  # scikit-learn: a cross-validation fold drew one class only
            raise SIAError(f"Fitting failed on these trajectories: {exc}",
                           "Add questions, right and wrong ones: a fold held answers of one kind only.") from exc
    save_calibrator(calibrator, args.out)
    _say_metrics(err, recipe.key, calibrator, "held-out" if args.evaluation == "heldout" else "grouped-CV")
    err.print(f"[dim]wrote {escape(str(args.out))} for {escape(recipe.model)} ({', '.join(recipe.kinds)} answers) in "
              f"{time.perf_counter() - started:.1f} s; use it with --calibrator {escape(str(args.out))}[/]")
    return 0

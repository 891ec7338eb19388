"""`sia-monitor fit`: fit the calibrators of calibrators/recipes.toml from the committed trajectories."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    fit.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    from calibrators.artifact import SHIPPED_DIR
    from calibrators.fitting import fit_all, select_recipes

    err = Console(stderr=True, highlight=False)
    recipes = select_recipes(args.recipes, args.only)
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

"""`sia-monitor evaluate`: the calibration report (tables and plots) from the fitted calibrators."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    evaluate.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    from calibrators.artifact import SHIPPED_DIR
    from calibrators.fitting import select_recipes
    from calibrators.report import DEFAULT_OUT, build_report, write_report

    err = Console(stderr=True, highlight=False)
    started = time.perf_counter()
    with err.status("evaluating") as status:
        built = build_report(select_recipes(args.recipes), args.shipped or SHIPPED_DIR,
                             progress=lambda message: status.update(escape(message)))
        command = "sia-monitor evaluate" + (f" --update {args.update}" if args.update else "")
        written = write_report(built, args.out or DEFAULT_OUT, command, args.update)
    for row in built["json"]["targets"]:
        mark = "[green]met[/]" if row["met"] else "[red]not met[/]"
        err.print(f"{escape(row['calibrator'])}: {escape(row['target'])} {row['goal']}: {row['measured']:.3f} {mark}")
    err.print(f"[dim]wrote {', '.join(escape(str(p)) for p in written)} in {time.perf_counter() - started:.1f} s[/]")
    return 0

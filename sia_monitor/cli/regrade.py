"""`sia-monitor regrade`: re-read and re-grade saved trajectories in place, with the current parser."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def add_parser(commands: argparse._SubParsersAction) -> None:
    regrade = commands.add_parser(
        "regrade", help="re-parse and re-grade saved trajectories in place (no model needed)",
        description="Re-read the final answer of every saved trajectory with the current parser and grade it "
        "again against its gold answer. Generations are expensive; parsing improves.",
    )
    regrade.add_argument("files", nargs="+", type=Path, help="trajectory files (.jsonl or .jsonl.gz)")
    regrade.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    from sia_monitor.collect import regrade

    console = Console(highlight=False)
    for path in args.files:
        total, changed = regrade(path)
        console.print(f"{path}: {total} trajectories, {changed} re-graded differently")
    return 0

"""`sia-monitor`: watch a model reason, step by step, from the terminal.

Commands:
  run       stream one generation and print, after every reasoning step, the conditional answer entropy
  vote      self-consistency: a P(correct)-weighted vote over samples, failing ones killed mid-trace
  serve     an OpenAI-compatible server (and chat page) whose replies carry the step entropy and P(correct)
  collect   run the monitor over a benchmark and append graded trajectories (resumable)
  regrade   re-parse and re-grade saved trajectories with the current answer parser
  fit       fit the calibrators in calibrators/recipes.toml from the committed trajectories
  evaluate  write the calibration report (tables, PNG plots) from the fitted calibrators
  models    list the named models, whether they are installed, and their calibrators
  tui       watch a generation live (or replay a saved one) in a terminal UI, with the guardrail

One module per command, each with its `add_parser` and its `command`; the options they share are
`sia_monitor.options`. Every user error ends with one line on stderr and exit status 2; Ctrl-C saves what
was generated.
"""

from __future__ import annotations

import argparse
import os
import time

from rich.console import Console
from rich.markup import escape

from sia_monitor.cli import collect, evaluate, fit, models, regrade, run, serve, tui, vote
from sia_monitor.cli.output import OneLineParser, error_console, one_line_warnings
from sia_monitor.errors import SIAError

COMMANDS = (run, vote, serve, collect, regrade, fit, evaluate, models, tui)  # in the order `--help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sia-monitor",
        description="Monitor an LLM's reasoning: after every step, how uncertain is it about its final answer?",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example: sia-monitor run "A baker made 24 muffins and sold 9. How many are left?"',
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # torch is imported later, on demand: "with loading" counts from here
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        with one_line_warnings(error_console()):
            return args.handler(args)
    except SIAError as exc:
        error_console().print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    except BrokenPipeError:
        os._exit(0)

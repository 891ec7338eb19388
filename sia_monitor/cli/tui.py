"""`sia-monitor tui`: the command line of the Textual app (the app itself is the top-level `tui` package)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sia_monitor.options import (
    add_answer_options,
    add_calibrator_options,
    add_guardrail_options,
    add_model_options,
    add_vote_options,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    tui.add_argument("--vote", action="store_true",
                     help="watch a vote over samples instead of one generation (a temperature of 0 becomes 0.7)")
    add_answer_options(tui, help_type="answer space, as for `run`")
    add_guardrail_options(tui)
    add_vote_options(tui)
    add_calibrator_options(tui)
    add_model_options(tui)
    tui.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    from tui.command import run_tui  # Textual is imported only for this command

    return run_tui(args)

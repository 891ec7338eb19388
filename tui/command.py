"""`sia-monitor tui`: build a source from the command line, run the app, then say what was kept and saved.

The model, answer-space, calibrator and guardrail options are `sia_monitor.options`, as for `sia-monitor run`,
so both commands load, refuse and report alike.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from sia_monitor.errors import SIAError
from sia_monitor.guardrail.live_vote import DEFAULT_VOTE_SETTINGS, LiveVote
from sia_monitor.guardrail.replay import load_replay
from sia_monitor.options import CalibratorOptions, guardrail_policy, load_monitor, prepare, vote_policy
from sia_monitor.trajectory import Trajectory, check_writable

from .app import answer_of, create_app, default_save_path
from .sources import EventSource, LiveSource, ReplaySource
from .vote_app import LiveVoteSource, ReplayVoteSource, VoteSource, create_vote_app


def carry_hidden_states(trajectories: list[Trajectory]) -> bool:
    """Whether every saved step has hidden states, so a hidden-state calibrator can score the replay."""
    return all(step.hidden is not None for t in trajectories for step in t.steps)


def source_from_args(args: argparse.Namespace, err: Console) -> EventSource:
    """A `ReplaySource` for `--replay FILE`, else a `LiveSource` over the loaded model."""
    policy = guardrail_policy(args)
    if args.replay is not None:
        if args.question:
            raise SIAError("Pass a question or --replay FILE, not both.")
        if args.save is not None:
            check_writable(args.save)
        trajectories = load_replay(args.replay, args.item)  # a cut-off file warns (one line, from the CLI)
        first = trajectories[0]
        scorer = CalibratorOptions.from_args(args).load(first.model_id, first.answer_space, err,
                                                        hidden_states=carry_hidden_states(trajectories))
        return ReplaySource(trajectories, args.speed, scorer, policy, auto=args.auto)
    if not args.question:
        raise SIAError("Nothing to monitor.", 'Pass a question (sia-monitor tui "What is 2+3?") or --replay FILE.')
    prepared = prepare(args, err, save=args.save)  # every check before the model loads
    monitor = load_monitor(prepared.model, err, prepared.scorer)
    return LiveSource(monitor, prepared.question, prepared.space, prepared.settings, policy, auto=args.auto)


def vote_source_from_args(args: argparse.Namespace, err: Console) -> VoteSource:
    """A `ReplayVoteSource` for `--vote --replay FILE` (its first question's samples), else a `LiveVoteSource`."""
    policy = vote_policy(args)
    if args.replay is not None:
        if args.question:
            raise SIAError("Pass a question or --replay FILE, not both.")
        trajectories = load_replay(args.replay, 0)
        first = trajectories[0]
        samples = [t for t in trajectories if t.question == first.question]
        scorer = CalibratorOptions.from_args(args).load(first.model_id, first.answer_space, err,
                                                        hidden_states=carry_hidden_states(samples))
        return ReplayVoteSource(samples, first.answer_space, policy, scorer, speed=args.speed)
    if not args.question:
        raise SIAError("Nothing to vote on.", 'Pass a question (sia-monitor tui --vote "What is 2+3?").')
    if args.temperature == 0:
        args.temperature = DEFAULT_VOTE_SETTINGS.temperature
    prepared = prepare(args, err, save=args.save)
    monitor = load_monitor(prepared.model, err, prepared.scorer)
    return LiveVoteSource(LiveVote(monitor, prepared.question, prepared.space, policy, prepared.settings))


def run_vote_tui(args: argparse.Namespace, err: Console) -> int:
    source = vote_source_from_args(args, err)
    app = create_vote_app(source, save_path=args.save)
    app.run()
    if app.result is not None:
        err.print(f"[bold]answer {escape(str(app.result.answer))}[/]   [bold]confidence:[/] "
                  f"{app.result.confidence:.2f}   [bold]tokens:[/] {app.result.tokens}")
    if args.save is not None and app.result is not None and app.result.samples:
        err.print(f"[dim]samples saved to {escape(str(args.save))}[/]")
    for path in app.exported:
        err.print(f"[dim]exported to {escape(str(path))}[/]")
    return 0


def run_tui(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    if args.vote:
        return run_vote_tui(args, err)
    source = source_from_args(args, err)
    save_path = args.save if (args.save is not None or source.mode == "replay") else default_save_path()
    if save_path is not None:
        check_writable(save_path)  # the default folder too: find out now, not when `q` saves
    app = create_app(source, save_path=save_path)
    app.run()
    if app.attempts:
        kept = app.attempts[app.best if app.best is not None else -1]
        tried = f" (attempt {app.attempts.index(kept) + 1} of {len(app.attempts)})" if len(app.attempts) > 1 else ""
        err.print(f"[bold]{escape(answer_of(kept))}[/]{tried}   [bold]steps:[/] {len(kept.steps)}   "
                  f"[bold]tokens:[/] {kept.n_tokens}   [dim]({escape(kept.finish_reason)})[/]")
    if app.saved_path is not None:
        err.print(f"[dim]session saved to {escape(str(app.saved_path))}[/]")
    for path in app.exported:
        err.print(f"[dim]exported to {escape(str(path))}[/]")
    if app.error:
        err.print(f"[bold red]error:[/] {escape(app.error)}")
        return 1
    return 0

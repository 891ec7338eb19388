"""`sia-monitor vote`: self-consistency with the monitor — samples of one question, failing ones killed
mid-trace, votes weighted by P(correct), drawing stopped once the vote is decided. A live view (a line per
sample, the tally below), or JSON events with --json."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sia_monitor.errors import SIAError
from sia_monitor.guardrail.live_vote import LiveVote, VoteEvent
from sia_monitor.guardrail.vote import VotePolicy, VoteResult
from sia_monitor.options import (
    add_answer_options,
    add_calibrator_options,
    add_model_options,
    add_vote_options,
    load_monitor,
    prepare,
    vote_policy,
)
from sia_monitor.trajectory import save_trajectories

STATUS_STYLE = {"waiting": "dim", "running": "cyan", "done": "green", "killed": "red", "cancelled": "yellow"}


def add_parser(commands: argparse._SubParsersAction) -> None:
    vote = commands.add_parser(
        "vote", help="self-consistency: a P(correct)-weighted vote over samples, failing ones killed early",
        description="Sample the question several times, a few at once. A sample whose P(correct) stays low is "
        "killed mid-trace and its row starts the next sample; each finished sample votes with its last P(correct); "
        "drawing stops once the vote is decided. Shows a line per sample (step, P(correct), current top answer, "
        "status) and the tally, then the answer, the vote's confidence, the samples and tokens used, and what a "
        "plain majority of n would have cost.",
    )
    vote.add_argument("question", help="the question to answer")
    add_answer_options(vote)
    add_vote_options(vote)
    vote.add_argument("--save", type=Path, default=None,
                      help="append every sample's trajectory, with its part in the vote, to this JSONL(.gz) file")
    vote.add_argument("--json", action="store_true", help="print one JSON event per line instead of the live view")
    add_calibrator_options(vote)
    add_model_options(vote, max_new_tokens=384, temperature=0.7)
    vote.set_defaults(handler=command)


class VoteView:
    """The live view's state, rebuilt from the vote's events: a line per sample and the tally."""

    def __init__(self, policy: VotePolicy) -> None:
        self.policy = policy
        self.lanes: dict[int, dict[str, object]] = {}
        self.tally: VoteResult | None = None
        self.selected: int | None = None  # the lane a UI's keys act on (the TUI), marked with ▶

    def update(self, event: VoteEvent) -> None:
        if event.sample is not None:
            lane = self.lanes.setdefault(event.sample, {"status": "running", "step": 0, "p": None, "top": "-",
                                                        "tokens": 0})
            if event.step is not None:
                lane.update(step=event.step.index + 1, p=event.step.p_correct, tokens=event.step.tokens_so_far,
                            top=event.step.top[0][0] if event.step.top else "-")
            if event.kind in ("finished", "killed", "cancelled"):
                lane["status"] = {"finished": "done"}.get(event.kind, event.kind)
                if event.trajectory is not None:
                    lane["tokens"] = event.trajectory.n_tokens
                    if event.kind == "finished":
                        lane["top"] = event.trajectory.parsed_answer or "-"
                ballot = next((b for b in (event.tally.ballots if event.tally else []) if b.sample == event.sample),
                              None)
                if ballot is not None:
                    lane["tokens"] = ballot.tokens  # what the sample cost: up to its kill or cancellation
        if event.tally is not None:
            self.tally = event.tally

    def render(self) -> Group:
        samples = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("sample", "status", "step", "P(correct)", "answer", "tokens"):
            samples.add_column(column, justify="right" if column in ("step", "tokens") else "left")
        for index, lane in sorted(self.lanes.items()):
            p = lane["p"]
            bar = Text("-", style="dim") if p is None else Text.assemble(
                ("█" * round(10 * float(p)), "green" if float(p) >= 0.6 else "yellow" if float(p) >= 0.3 else "red"),
                ("░" * (10 - round(10 * float(p))), "dim"), f" {float(p):.2f}")
            status = str(lane["status"])
            label = Text(f"▶#{index + 1}", style="bold reverse") if index == self.selected else Text(f" #{index + 1}")
            samples.add_row(label, Text(status, style=STATUS_STYLE[status]), str(lane["step"]), bar,
                            Text(str(lane["top"])), str(lane["tokens"]))
        tally = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("answer", "votes", "weight"):
            tally.add_column(column)
        if self.tally is not None:
            for answer, weight in self.tally.weights.items():
                tally.add_row(Text(answer), str(self.tally.counts[answer]), f"{weight:.2f}")
        started = len(self.lanes)
        return Group(samples, Text(f"{started} of {self.policy.samples} samples started", style="dim"), Text(),
                     Text("vote", style="bold"), tally)


def command(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    policy = vote_policy(args)
    if args.temperature <= 0 and policy.samples > 1:
        raise SIAError("A vote needs samples that differ: give --temperature above 0.")
    prepared = prepare(args, err, save=args.save)
    monitor = load_monitor(prepared.model, err, prepared.scorer)
    vote = LiveVote(monitor, prepared.question, prepared.space, policy, prepared.settings)
    view = VoteView(policy)
    interrupted = False
    result: VoteResult | None = None
    with Live(view.render(), console=console, refresh_per_second=8) if not args.json else _NoLive() as live:
        try:
            for event in vote.stream():
                if args.json:
                    print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
                else:
                    view.update(event)
                    live.update(view.render())
                if event.kind == "vote" and event.final:
                    result = event.tally
        except KeyboardInterrupt:  # the vote ended at the next token; its final event came before this
            interrupted = True
    if result is None:
        return 1
    if not args.json:
        console.print()
        _summary(console, result, policy, vote.wall_s)
    if args.save:
        save_trajectories(args.save, result.samples)
        if not args.json:
            console.print(f"[dim]{len(result.samples)} samples appended to {escape(str(args.save))}[/]")
    return 130 if interrupted else 0


def plain_majority_cost(result: VoteResult, samples: int) -> int | None:
    """What a plain majority of `samples` would have generated: that many samples of the mean length of those
    that ran to their end (None when none did)."""
    lengths = [s.n_tokens for s in result.samples if s.finish_reason in ("eos", "length")]
    return round(samples * statistics.fmean(lengths)) if lengths else None


def _summary(console: Console, result: VoteResult, policy: VotePolicy, wall_s: float) -> None:
    statuses = [b.status for b in result.ballots]
    used = ", ".join(f"{statuses.count(s)} {s}" for s in ("done", "killed", "cancelled") if statuses.count(s))
    console.print(
        f"[bold]answer:[/] {escape(str(result.answer))}   [bold]confidence:[/] {result.confidence:.2f}   "
        f"[bold]samples:[/] {len(result.samples)} of {policy.samples} ({used})   [bold]tokens:[/] {result.tokens}   "
        f"[dim]({wall_s:.1f} s{', stopped early' if result.stopped_early else ''})[/]", soft_wrap=True)
    cost = plain_majority_cost(result, policy.samples)
    if cost is not None:
        console.print(f"[dim]a plain majority of {policy.samples} would have generated about {cost} tokens "
                      f"({result.tokens / cost:.2f}x as many were used)[/]", soft_wrap=True)


class _NoLive:
    """Stands in for `rich.live.Live` under --json: nothing is drawn."""

    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, renderable: object) -> None:
        return None

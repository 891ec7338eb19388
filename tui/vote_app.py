"""`VoteApp`: watch a vote — one lane per sample (its step, P(correct) as a small bar, current answer, status)
and the tally — and act on it: stop the vote, kill a lane, export the samples.

The lanes and the tally are `sia_monitor.cli.vote.VoteView`, the same board `sia-monitor vote` prints, so the
two views never disagree. Threading as in the main app: the source's blocking `events()` runs in a thread
worker that only appends to a deque; a timer on the UI thread drains it and re-renders once per flush.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Footer, Static

from sia_monitor.cli.vote import VoteView
from sia_monitor.errors import SIAError
from sia_monitor.guardrail.live_vote import LiveVote, VoteEvent
from sia_monitor.guardrail.replay import score_steps
from sia_monitor.guardrail.vote import VotePolicy, VoteResult, result, simulate
from sia_monitor.scoring import StepScorer
from sia_monitor.tasks.answers import AnswerSpace
from sia_monitor.trajectory import Trajectory, save_trajectories

from .app import DEFAULT_RUNS_DIR

_DONE = object()


class VoteSource(Protocol):
    """Where a vote's events come from. `events()` blocks (a worker thread runs it); the controls may be
    called from the UI thread while it runs."""

    mode: Literal["live", "replay"]
    question: str
    policy: VotePolicy

    def events(self) -> Iterator[VoteEvent]: ...
    def kill(self, sample: int) -> None: ...
    def stop(self) -> None: ...


class LiveVoteSource:
    """A `LiveVote` on a loaded backend."""

    mode: Literal["live", "replay"] = "live"

    def __init__(self, vote: LiveVote) -> None:
        self.vote = vote
        self.question = vote.question
        self.policy = vote.policy

    def events(self) -> Iterator[VoteEvent]:
        return self.vote.stream()

    def kill(self, sample: int) -> None:
        self.vote.kill(sample)

    def stop(self) -> None:
        self.vote.stop()


class ReplayVoteSource:
    """Saved samples of one question, voted on again by `vote.simulate` and played back sample by sample in
    the order their ballots were cast (no waiting with speed 0). Replays cannot be steered: kill and stop only
    end the playback early."""

    mode: Literal["live", "replay"] = "replay"

    def __init__(self, samples: list[Trajectory], space: AnswerSpace, policy: VotePolicy,
                 scorer: StepScorer | None = None, speed: float = 0.0) -> None:
        if not samples:
            raise SIAError("Nothing to replay: the file holds no samples.")
        self.samples = [score_steps(t, scorer) for t in samples]
        self.space = space
        self.policy = policy
        self.question = samples[0].question
        self.speed = speed
        self._stopped = False

    def events(self) -> Iterator[VoteEvent]:
        vote = simulate(self.samples, self.policy, self.space)
        cast: list = []
        for ballot in vote.ballots:
            if self._stopped:
                break
            sample = self.samples[ballot.sample]
            yield VoteEvent("started", sample=ballot.sample)
            steps = sample.steps[: ballot.killed_after_steps] if ballot.status == "killed" else [
                s for s in sample.steps if s.tokens_so_far <= ballot.tokens]
            for step in steps:
                if self.speed > 0:
                    time.sleep(0.05 / self.speed)
                yield VoteEvent("step", sample=ballot.sample, step=step)
            cast.append(ballot)
            kind = {"done": "finished"}.get(ballot.status, ballot.status)
            yield VoteEvent(kind, sample=ballot.sample, trajectory=sample, tally=result(cast))  # type: ignore[arg-type]
        yield VoteEvent("vote", tally=vote, final=True)

    def kill(self, sample: int) -> None:
        self._stopped = True

    def stop(self) -> None:
        self._stopped = True


class VoteApp(App[int]):
    """The vote screen: the board (lanes, then the tally) and a status line. After it exits: `result` (the
    final vote, when it came), `exported` (paths written by `e`)."""

    TITLE = "sia-monitor vote"
    CSS = """
    #question { dock: top; height: auto; max-height: 3; padding: 0 1; background: $boost; }
    #board-box { height: 1fr; border: round $primary 60%; padding: 0 1; }
    #log { height: 1; padding: 0 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "select(-1)", "Lane up", show=False),
        Binding("down", "select(1)", "Lane down", show=False),
        Binding("k", "kill", "Kill lane"),
        Binding("s", "stop", "Stop vote"),
        Binding("e", "export", "Export"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, source: VoteSource, *, export_dir: Path = DEFAULT_RUNS_DIR, flush_interval: float = 0.04,
                 save_path: Path | None = None) -> None:
        super().__init__()
        self.source = source
        self.export_dir = export_dir
        self.save_path = save_path
        self.flush_interval = flush_interval
        self.view = VoteView(source.policy)
        self.selected = 0
        self.samples: dict[int, Trajectory] = {}
        self.result: VoteResult | None = None
        self.exported: list[Path] = []
        self.finished = False
        self._buffer: deque[object] = deque()
        self._message = "↑/↓ choose a lane · k kills it · s stops the vote"

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("Q: ", "bold"), (self.source.question, "italic")), id="question")
        with VerticalScroll(id="board-box"):
            yield Static(id="board")
        yield Static(id="log")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#board-box")
        box.border_title = f"vote · {self.source.policy.samples} samples, {self.source.policy.width} at a time"
        self._render()
        self.set_interval(self.flush_interval, self._drain)
        self.run_worker(self._pump, thread=True, name="sia-monitor-vote-source", exit_on_error=False)

    def on_unmount(self) -> None:
        self.source.stop()

    def _pump(self) -> None:
        try:
            for event in self.source.events():
                self._buffer.append(event)
        except BaseException as exc:  # noqa: BLE001 - shown on screen
            self._buffer.append(exc)
        finally:
            self._buffer.append(_DONE)

    def _drain(self) -> None:
        changed = False
        while self._buffer:
            item = self._buffer.popleft()
            changed = True
            if item is _DONE:
                self.finished = True
            elif isinstance(item, BaseException):
                self._message = f"error: {type(item).__name__}: {item}"
            else:
                assert isinstance(item, VoteEvent)
                self.view.update(item)
                if item.trajectory is not None and item.sample is not None:
                    self.samples[item.sample] = item.trajectory
                if item.kind == "vote" and item.final:
                    self.result = item.tally
                    assert item.tally is not None
                    self._message = (f"■ answer {item.tally.answer} · confidence {item.tally.confidence:.2f} · "
                                     f"{item.tally.tokens} tokens · e exports, q quits")
        if changed:
            try:
                self._render()
            except NoMatches:  # the timer fired while the screen was being torn down
                pass

    def _render(self) -> None:
        self.view.selected = self.selected
        self.query_one("#board", Static).update(self.view.render())
        self.query_one("#log", Static).update(Text(self._message, no_wrap=True, overflow="ellipsis"))

    # -- keys -----------------------------------------------------------------------------------------------
    def action_select(self, delta: int) -> None:
        if self.view.lanes:
            self.selected = max(0, min(max(self.view.lanes), self.selected + delta))
            self._render()

    def action_kill(self) -> None:
        lane = self.view.lanes.get(self.selected)
        if lane is None or lane["status"] != "running":
            self._message = f"sample #{self.selected + 1} is not running"
        else:
            self.source.kill(self.selected)
            self._message = f"killing sample #{self.selected + 1}"
        self._render()

    def action_stop(self) -> None:
        self.source.stop()
        self._message = "stopping the vote: what finished votes"
        self._render()

    def action_export(self) -> None:
        records = [self.samples[i] for i in sorted(self.samples)]
        if not records:
            self._message = "nothing to export yet: no sample has ended"
            self._render()
            return
        path = self.export_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-vote-{len(self.exported) + 1}.jsonl"
        try:
            save_trajectories(path, records, append=False)
        except SIAError as exc:
            self._message = f"export failed: {exc}"
        else:
            self.exported.append(path)
            self._message = f"exported {len(records)} sample{'s' if len(records) != 1 else ''} to {path}"
        self._render()

    async def action_quit(self) -> None:
        self.source.stop()
        for _ in range(600):  # the vote ends at the next token; wait for its final event (60 s at most)
            self._drain()
            if self.finished:
                break
            await self._sleep(0.1)
        if self.save_path is not None and self.result is not None and self.result.samples:
            save_trajectories(self.save_path, self.result.samples)
        self.exit(0)

    async def _sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


def create_vote_app(source: VoteSource, *, export_dir: Path = DEFAULT_RUNS_DIR, save_path: Path | None = None,
                    flush_interval: float = 0.04) -> VoteApp:
    """The vote screen over `source` (a `LiveVoteSource` or `ReplayVoteSource`); what `sia-monitor tui --vote`
    and the tests run."""
    return VoteApp(source, export_dir=export_dir, save_path=save_path, flush_interval=flush_interval)

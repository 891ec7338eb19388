"""`SIAMonitorApp`: one screen to watch a generation, its entropy curve and P(correct), and to act on it.

Threading: the source's blocking `events()` runs in a thread worker that only appends to a deque; a timer
on the UI thread drains it every `flush_interval` seconds (40 ms by default) and re-renders once per flush.
So the UI costs the same at 5 or 500 tokens/s, and the generating thread never waits for the screen. The
user's keys go straight to the source (thread-safe), which cancels or pauses generation within one token.

Nothing is lost on the way out: `q`, Ctrl-C and Ctrl-Q cancel the source, wait for its last final event
(the cut-short trajectory), and write every attempt to `save_path` before exiting; if the source does not
answer in time, what the screen has is saved instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import parse_answer
from sia_monitor.tasks.prompts import probe_suffix
from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory, save_trajectories

from .sources import EventSource
from .widgets import (
    CurvePlot,
    DecisionLog,
    Legend,
    PCorrectGauge,
    StatusLine,
    TopAnswers,
    TraceView,
    tint_for,
)
from .widgets.status import Status

_DONE = object()  # the worker's last item: the source has nothing more to say
_ANSWERED = ("eos", "accepted", "length")  # finish reasons after which the text states an answer
_GUARD_WORDS = {"stop": "stopped", "resample": "resampling", "accept": "accepted"}
DEFAULT_RUNS_DIR = Path("sia-monitor-runs")


def answer_of(trajectory: Trajectory) -> str:
    """`answer 15`, or `no answer` for a trace cut short (the last number of a cut text is no answer)."""
    if trajectory.finish_reason in _ANSWERED and trajectory.parsed_answer is not None:
        return f"answer {trajectory.parsed_answer}"
    return "no answer"


def default_save_path(directory: Path = DEFAULT_RUNS_DIR, now: datetime | None = None) -> Path:
    """`sia-monitor-runs/<timestamp>.jsonl`: where a live session is saved unless told otherwise."""
    return directory / f"{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}.jsonl"


class SIAMonitorApp(App[int]):
    """The monitor screen. Build it with `create_app`; run it with `.run()` (or `.run_test()` in tests).

    After it exits: `saved_path` (where the session was written, or None), `exported` (paths written by
    `e`), `attempts` (every attempt's trajectory), `best` (the index of the attempt kept), `error`.
    """

    TITLE = "sia-monitor"
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [(0, "-short"), (30, "-tall")]
    CSS = """
    Screen { layout: vertical; }
    #status { dock: top; padding: 0 1; background: $boost; }
    #body { height: 1fr; }
    #trace { width: 1fr; border: round $primary 60%; padding: 0 1; }
    #side { width: 32; }
    Screen.-wide #side { width: 46; }
    #gauge, #pcurve, #curve, #answers, #decisions { border: round $secondary 50%; padding: 0 1; }
    #gauge { height: auto; }
    #pcurve { height: 1fr; min-height: 5; }
    #curve { height: 1fr; min-height: 5; }
    #answers { height: 5; }
    Screen.-wide #answers { height: 7; }
    #decisions { height: 1fr; min-height: 4; }
    Screen.-short #pcurve, Screen.-short #curve, Screen.-short #answers { min-height: 4; height: 1fr; }
    Screen.-short #answers { max-height: 4; }
    Screen.-short #decisions { min-height: 3; }
    #legend { padding: 0 1; }
    DecisionLog { scrollbar-size-vertical: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop", "Stop"),
        Binding("r", "resample", "Resample"),
        Binding("p", "pause", "Pause"),
        Binding("a", "toggle_guard", "Guardrail"),
        Binding("e", "export", "Export"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: EventSource,
        *,
        save_path: Path | None = None,
        export_dir: Path = DEFAULT_RUNS_DIR,
        clock: Callable[[], float] = time.monotonic,
        flush_interval: float = 0.04,
        quit_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.source = source
        self.save_path = save_path
        self.export_dir = export_dir
        self.clock = clock
        self.flush_interval = flush_interval
        self.quit_timeout = quit_timeout
        # results
        self.saved_path: Path | None = None
        self.exported: list[Path] = []
        self.attempts: list[Trajectory] = []
        self.best: int | None = None
        self.error: str | None = None
        # the attempt on screen
        self.attempt = 0
        self.steps: list[StepRecord] = []
        self.tokens = 0
        self.text: list[str] = []
        self.attempt_decisions: list[dict[str, Any]] = []
        self.last_action: tuple[str, int] | None = None
        self.finished = False
        self.source_done = False
        self.paused = False
        # timing (live): seconds the shown attempt has been generating, not counting pauses
        self._attempt_started = clock()
        self._paused_at: float | None = None
        self._paused_s = 0.0
        self._earlier_s = 0.0  # earlier attempts' time
        self._final_elapsed: float | None = None
        self._buffer: deque[object] = deque()
        self._worker: Worker[None] | None = None
        self._quitting = False
        self._stamp = datetime.now().strftime("%Y%m%d-%H%M%S")

    # -- layout ---------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        policy = self.source.policy
        yield StatusLine(id="status")
        with Horizontal(id="body"):
            yield TraceView(id="trace")
            with Vertical(id="side"):
                yield PCorrectGauge(self.source.calibrated, policy.stop_below, policy.accept_above, id="gauge")
                if self.source.calibrated:  # what a user watches: P(correct) step by step
                    yield CurvePlot(ceiling=1.0, id="pcurve")
                yield CurvePlot(floor=1.0, id="curve")
                yield TopAnswers(id="answers")
                yield DecisionLog(id="decisions")
        yield Legend(id="legend")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#gauge").border_title = "P(correct)"
        self.query_one("#answers").border_title = "top answers"
        self.query_one("#decisions").border_title = "decisions"
        trace = self.query_one(TraceView)
        trace.set_question(self.source.question)
        trace.reset()
        self._titles()
        self._show_status()
        self.set_interval(self.flush_interval, self._drain)
        self._worker = self.run_worker(self._pump, thread=True, name="sia-monitor-source", exit_on_error=False)

    def on_unmount(self) -> None:
        """However the app ends, the source stops: a generation must not outlive its screen."""
        self.source.cancel()

    def _pump(self) -> None:
        """The worker thread: read the source to its end, handing every event to the UI's buffer."""
        try:
            for event in self.source.events():
                self._buffer.append(event)
        except BaseException as exc:  # noqa: BLE001 - shown in the UI; the CLI reports it after exit
            self._buffer.append(exc)
        finally:
            self._buffer.append(_DONE)

    @property
    def backlog(self) -> int:
        """Events the source delivered that the screen has not shown yet (held while paused)."""
        return len(self._buffer)

    # -- events -> screen -----------------------------------------------------------------------------------
    def _drain(self) -> None:
        """Drain what the source produced since the last flush (unless paused), then render once."""
        try:
            self._drain_into_widgets()
        except NoMatches:  # the timer fired while the app was tearing its screen down: nothing to draw on
            pass

    def _drain_into_widgets(self) -> None:
        if not self.paused:
            changed = False
            while self._buffer:
                self._handle(self._buffer.popleft())
                changed = True
            if changed:
                self.query_one(TraceView).render_text()
                self._titles()
        self._show_status()

    def _handle(self, item: object) -> None:
        if item is _DONE:
            self.source_done = True
            if not self.finished and self.error is None and not self._quitting:
                self._note("info", "the source ended")
            return
        if isinstance(item, BaseException):
            self.error = f"{type(item).__name__}: {item}"
            self._note("stop", f"error: {self.error}")
            return
        assert isinstance(item, MonitorEvent)
        event = item
        trace = self.query_one(TraceView)
        if event.kind == "token":
            if event.detail.get("forced"):
                trace.add_forced(event.text)
            else:
                trace.add_token(event.text)
                self.text.append(event.text)
                self.tokens += 1
        elif event.kind == "step" and event.step is not None:
            self._on_step(event.step)
        elif event.kind == "decision":
            self._on_decision(event.detail)
        elif event.kind == "final" and event.trajectory is not None:
            self._on_final(event.trajectory, event.detail)

    def _on_step(self, step: StepRecord) -> None:
        previous = self.steps[-1].entropy_bits if self.steps else None
        change = None if previous is None else step.entropy_bits - previous
        self.steps.append(step)
        self.tokens = max(self.tokens, step.tokens_so_far)
        self.query_one(TraceView).close_step(step, change)
        entropies = [s.entropy_bits for s in self.steps]
        colours = [tint_for(None if i == 0 else entropies[i] - entropies[i - 1]).colour for i in range(len(entropies))]
        self.query_one("#curve", CurvePlot).set_values(entropies, colours)
        self._p_curve()
        self.query_one(PCorrectGauge).set_value(step.p_correct)
        self.query_one(TopAnswers).set_top(step.top)

    def _on_decision(self, detail: dict[str, Any]) -> None:
        action = str(detail.get("action", "stop"))
        replayed = " (as recorded)" if detail.get("replayed") else ""
        self._note(action, f"@{detail.get('step', 0)}{replayed}: {detail.get('reason', '')}")
        if not detail.get("replayed"):
            self.attempt_decisions.append(detail)
            self.last_action = (action, int(detail.get("step", 0)))

    def _on_final(self, trajectory: Trajectory, detail: dict[str, Any]) -> None:
        self.attempts.append(trajectory)
        self.query_one(TraceView).flush_pending()
        elapsed = self._elapsed()
        self._note("info", f"attempt {self.attempt + 1}: {trajectory.finish_reason}, {answer_of(trajectory)} "
                           f"({trajectory.n_tokens} tok)")
        if detail.get("more"):
            self._earlier_s = elapsed
            self._next_attempt()
            return
        self.finished = True
        self._final_elapsed = elapsed
        self.best = int(detail.get("best", len(self.attempts) - 1))
        kept = self.attempts[self.best]
        if len(self.attempts) > 1:
            self._note("kept", f"attempt {self.best + 1} of {len(self.attempts)}: {answer_of(kept)}")

    def _next_attempt(self) -> None:
        """Clear the screen's attempt state for the next attempt (the source's attempt counter leads)."""
        self.attempt += 1
        self.steps, self.tokens, self.text, self.attempt_decisions = [], 0, [], []
        self.last_action = None
        self._attempt_started, self._paused_s = self.clock(), 0.0
        self.query_one(TraceView).reset(Text(f"attempt {self.attempt + 1}: {self.source.describe()}",
                                             style="dim italic"))
        self.query_one("#curve", CurvePlot).set_values([])
        self._p_curve()
        self.query_one(PCorrectGauge).set_value(None)
        self.query_one(TopAnswers).set_top([])

    def _p_curve(self) -> None:
        """P(correct) after each step of the attempt on screen, each bar coloured as the gauge colours it."""
        if not self.source.calibrated:
            return
        values = [s.p_correct if s.p_correct is not None else 0.0 for s in self.steps]
        gauge = self.query_one(PCorrectGauge)
        self.query_one("#pcurve", CurvePlot).set_values(values, [gauge.colour(v) for v in values])

    def _note(self, kind: str, message: str) -> None:
        self.query_one(DecisionLog).add(kind, message)

    # -- status ---------------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        """Seconds of generation so far: recorded time in a replay, wall time without pauses when live."""
        if self._final_elapsed is not None:
            return self._final_elapsed
        recorded = self.source.recorded_seconds(self.attempt, self.tokens)
        if recorded is not None:
            earlier = sum(t.elapsed_s for t in self.attempts[: self.attempt])
            return earlier + recorded
        return self._earlier_s + self._attempt_seconds()

    def _attempt_seconds(self) -> float:
        paused = self._paused_s + (self.clock() - self._paused_at if self._paused_at is not None else 0.0)
        return max(0.0, self.clock() - self._attempt_started - paused)

    def _show_status(self) -> None:
        recorded = self.source.recorded_seconds(self.attempt, self.tokens)
        seconds = recorded if recorded is not None else self._attempt_seconds()
        if self.finished and self.attempts:
            shown = self.attempts[-1]
            tokens, seconds = shown.n_tokens, shown.elapsed_s
        else:
            tokens = self.tokens
        rate = tokens / seconds if tokens and seconds > 0 else None
        guard, style = ("guard on", "bold #3fbf6f") if self.source.auto else ("guard off", "dim")
        if self.last_action is not None:
            action, step = self.last_action
            guard, style = f"{_GUARD_WORDS.get(action, action)} @{step}", "bold #e0b050"
        self.query_one(StatusLine).show(Status(self.source.model_id, tokens, rate, len(self.steps), self._elapsed(),
                                               guard, style))

    def _titles(self) -> None:
        trace = self.query_one(TraceView)
        trace.set_title(f"generation · attempt {self.attempt + 1}")
        if self.error is not None:
            state = "error"
        elif self.finished:
            last = self.attempts[-1]
            state = f"■ done: {last.finish_reason}, {answer_of(last)}"
        elif self.paused:
            state = "⏸ paused"
        else:
            state = "▶ " + self.source.describe()
        trace.border_subtitle = state
        curve = self.query_one("#curve", CurvePlot)
        curve.border_title = "answer entropy by step"
        curve.border_subtitle = f"0–{curve.top:g} bits"
        if self.source.calibrated:
            p_curve = self.query_one("#pcurve", CurvePlot)
            p_curve.border_title = "P(correct) by step"
            p_curve.border_subtitle = "0–1"

    # -- keys -----------------------------------------------------------------------------------------------
    def _over(self) -> bool:
        """Whether the run has ended (then say so: a key that does nothing should not look broken)."""
        if self.finished:
            again = "r samples another attempt, " if self.source.mode == "live" else ""
            self._note("info", f"the run is over: {again}e exports it, q quits")
        return self.finished or self._quitting

    def action_stop(self) -> None:
        """Stop the trace now and keep it."""
        if self._over():
            return
        self._unpause()
        self.source.stop()

    def action_resample(self) -> None:
        """Abandon this trace and sample a new one (new seed, temperature bump); once the run is over, sample
        one more attempt, which joins the others (the kept attempt is chosen again over all of them)."""
        if self.finished and not self._quitting and self.error is None:
            self._another_attempt()
            return
        if self._over():
            return
        self._unpause()
        self.source.resample()

    def _another_attempt(self) -> None:
        if self._worker is not None and not self.source_done:
            return  # the final event is on screen but the worker has not returned yet: the next key will do
        if not self.source.another():
            self._note("info", "no other attempt to show (a replay plays only its saved traces): "
                               "e exports, q quits")
            return
        self._earlier_s = self._elapsed()
        self.finished, self.source_done, self.best = False, False, None
        self._final_elapsed = None
        self._next_attempt()
        self._note("resample", f"attempt {self.attempt + 1} asked for after the run ended")
        self._titles()
        self._worker = self.run_worker(self._pump, thread=True, name="sia-monitor-source", exit_on_error=False)

    def action_pause(self) -> None:
        """Pause or resume the stream; a paused generation waits between two tokens."""
        if self._over():
            return
        if self.paused:
            self._unpause()
            self._note("info", "resumed")
        else:
            self.source.pause()
            self.paused = True
            self._paused_at = self.clock()
            self._note("info", "paused")
        self._titles()

    def _unpause(self) -> None:
        if not self.paused:
            return
        self.source.resume()
        self.paused = False
        if self._paused_at is not None:
            self._paused_s += self.clock() - self._paused_at
            self._paused_at = None

    def action_toggle_guard(self) -> None:
        """Switch the automatic guardrail on or off."""
        self.source.auto = not self.source.auto
        policy = self.source.policy
        if self.source.auto:
            signal = (f"P(correct) < {policy.stop_below:.2f}" if self.source.calibrated
                      else f"entropy ≥ {policy.entropy_above:.2f} bits")
            self._note("info", f"guardrail on: stop when {signal} for {policy.patience} steps "
                              f"(from step {policy.min_steps})")
        else:
            self._note("info", "guardrail off")
        self._show_status()

    def action_export(self) -> None:
        """Write every attempt so far (the running one as it stands) to a new file."""
        records = self._records()
        if not records:
            self._note("info", "nothing to export yet")
            return
        path = self.export_dir / f"{self._stamp}-export-{len(self.exported) + 1}.jsonl"
        try:
            save_trajectories(path, records, append=False)
        except SIAError as exc:  # the records went to a rescue file, which the message names
            self._note("info", f"export failed: {exc}")
            self.notify(str(exc), title="export failed", severity="error")
            return
        self.exported.append(path)
        count = f"{len(records)} trajector{'y' if len(records) == 1 else 'ies'}"
        self._note("info", f"exported {count} to {path}")
        self.notify(path.name, title=f"exported {count}", timeout=3)  # the log line has the whole path

    async def action_quit(self) -> None:
        """Stop the source, wait for what it generated, save it, exit (also Ctrl-C and Ctrl-Q)."""
        if self._quitting:
            return
        self._quitting = True
        self.source.cancel()
        self._unpause()
        if self._worker is not None and not self.source_done:
            try:
                await asyncio.wait_for(self._worker.wait(), timeout=self.quit_timeout)
            except TimeoutError:
                self._note("info", "the source did not stop in time: saving what the screen has")
            except (WorkerCancelled, WorkerFailed) as exc:
                self._note("info", f"the source ended abnormally ({exc}): saving what the screen has")
        self._drain()
        self.save()
        self.exit(return_code=1 if self.error else 0)  # `sia-monitor tui` exits with it too

    # -- saving ---------------------------------------------------------------------------------------------
    def _records(self) -> list[Trajectory]:
        records = list(self.attempts)
        if not self.finished and (self.tokens or self.steps):
            records.append(self.partial())
        return records

    def partial(self) -> Trajectory:
        """The attempt on screen as it stands (finish_reason `running`): what export writes mid-stream, and
        what quitting saves if the source does not deliver its final record in time."""
        text = "".join(self.text)
        space = self.source.space
        return Trajectory(
            model_id=self.source.model_id, question=self.source.question, answer_space=space,
            suffix=probe_suffix(space), segmenter=self.source.segmenter, steps=list(self.steps),
            final_text=text, parsed_answer=parse_answer(text, space), finish_reason="running",
            n_tokens=self.tokens, elapsed_s=round(self._attempt_seconds(), 3),
            generation={"attempt": self.attempt, "partial": True}, decisions=list(self.attempt_decisions),
        )

    def save(self) -> Path | None:
        """Write every attempt (and a partial one, if still running) to `save_path`; once per session."""
        if self.saved_path is not None or self.save_path is None:
            return self.saved_path
        records = self._records()
        if not records:
            return None
        try:
            save_trajectories(self.save_path, records)
        except SIAError as exc:  # kept in a rescue file that the message names; quitting then exits non-zero
            self.error = str(exc)
            return None
        self.saved_path = self.save_path
        return self.saved_path


def create_app(
    source: EventSource,
    *,
    save_path: Path | None = None,
    export_dir: Path = DEFAULT_RUNS_DIR,
    clock: Callable[[], float] = time.monotonic,
    flush_interval: float = 0.04,
    quit_timeout: float = 30.0,
) -> SIAMonitorApp:
    """The app over `source` (a `LiveSource` or `ReplaySource`); what `sia-monitor tui` and the tests run.

    `save_path`: where quitting writes the session (None: not saved). `export_dir`: where `e` writes.
    `clock`: the time source for elapsed and tokens/s of a live source (tests pass a fixed one; a replay
    shows its recorded times). `flush_interval`: seconds between UI updates while events stream in.
    """
    return SIAMonitorApp(source, save_path=save_path, export_dir=export_dir, clock=clock,
                         flush_interval=flush_interval, quit_timeout=quit_timeout)

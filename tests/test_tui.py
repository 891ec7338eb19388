"""The TUI driven by Textual's Pilot: replays of real saved traces, one live run on the fixture model.

Each test runs its own event loop with `asyncio.run` (no async test plugin needed). Replays run at 20-40x the
recorded pace (a record of ~150 tokens takes about a second), or with no waiting where only the end matters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from replay_data import CLEAN, STALLS, EntropyScorer, as_resample, svamp_records, write_sample
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.cli import build_parser
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.trajectory import Trajectory, read_trajectories
from tui.app import SIAMonitorApp, create_app
from tui.sources import EventSource, LiveSource, ReplaySource
from tui.widgets import CurvePlot, DecisionLog, PCorrectGauge, StatusLine, TopAnswers, TraceView, tint_for

Scenario = Callable[[SIAMonitorApp, Pilot[int]], Coroutine[Any, Any, None]]


def run_app(app: SIAMonitorApp, scenario: Scenario, size: tuple[int, int] = (80, 24)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())


async def wait_for(pilot: Pilot[int], condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def replay(records: list[Trajectory], speed: float = 20.0, **kwargs: Any) -> ReplaySource:
    return ReplaySource(records, speed=speed, **kwargs)


def make_app(source: EventSource, tmp_path: Path, **kwargs: Any) -> SIAMonitorApp:
    return create_app(source, save_path=tmp_path / "session.jsonl", export_dir=tmp_path / "exports",
                      clock=lambda: 0.0, **kwargs)


def log_text(app: SIAMonitorApp) -> str:
    return "\n".join(entry for _, entry in app.query_one(DecisionLog).entries)


def test_replay_streams_tokens_and_updates_the_curve_gauge_and_answers(tmp_path: Path) -> None:
    record = svamp_records()[CLEAN]
    app = make_app(replay([record], scorer=EntropyScorer()), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: len(app.steps) >= 2)
        curve, gauge = app.query_one("#curve", CurvePlot), app.query_one(PCorrectGauge)
        early_curve, early_gauge = list(curve.values), gauge.value
        assert early_curve == [s.entropy_bits for s in app.steps] and early_gauge is not None
        assert 0 < app.tokens < record.n_tokens
        await wait_for(pilot, lambda: app.finished)
        assert curve.values == [s.entropy_bits for s in record.steps]
        assert len(curve.values) > len(early_curve) and gauge.value != early_gauge
        assert gauge.value == pytest.approx(1 - record.steps[-1].entropy_bits / 2, abs=1e-4)
        assert app.query_one(TopAnswers).top == record.steps[-1].top
        trace = app.query_one(TraceView).plain
        assert "¶7" in trace and record.final_text.splitlines()[-1] in trace
        assert f"{record.n_tokens} tok" in str(app.query_one(StatusLine).render())

    run_app(app, scenario)
    assert app.attempts[0].finish_reason == "eos" and app.attempts[0].n_tokens == record.n_tokens


def test_steps_are_tinted_by_their_entropy_change_and_marked(tmp_path: Path) -> None:
    record = svamp_records()[CLEAN]
    app = make_app(replay([record], speed=0), tmp_path)

    shown: list[Text] = []

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.finished)
        shown.append(app.query_one(TraceView).text)

    run_app(app, scenario)
    (text,) = shown
    entropies = [s.entropy_bits for s in record.steps]
    for index, step in enumerate(record.steps):
        start = text.plain.index(step.text)
        styles = {str(span.style) for span in text.spans if span.start <= start < span.end}
        change = None if index == 0 else entropies[index] - entropies[index - 1]
        expected = tint_for(change).background
        assert (expected in styles) if expected else not any(s.startswith("on ") for s in styles), (index, styles)
        assert f"{step.text} ¶{index + 1}" in text.plain
    assert {tint_for(-0.6).name, tint_for(-0.2).name, tint_for(0.05).name, tint_for(0.3).name} == {
        "big-drop", "drop", "flat", "rise"}


def test_pause_holds_the_stream_and_loses_nothing(tmp_path: Path) -> None:
    record = svamp_records()[CLEAN]
    app = make_app(replay([record]), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.tokens >= 10)
        await pilot.press("p")
        assert app.source.paused and app.paused
        await pilot.pause(0.1)
        held, backlog = app.tokens, app.backlog
        await pilot.pause(0.4)
        assert app.tokens == held < record.n_tokens
        # the replay itself waits, it does not run on into a queue: nothing arrives while paused, and what was
        # in flight when `p` landed (a few events, more on a busy machine) is far short of the rest of the trace
        assert app.backlog == backlog < (record.n_tokens - held) / 4
        assert "paused" in str(app.query_one(TraceView).border_subtitle)
        await pilot.press("p")
        assert not app.source.paused
        await wait_for(pilot, lambda: app.finished)

    run_app(app, scenario)
    (trajectory,) = app.attempts
    assert trajectory.finish_reason == "eos" and trajectory.n_tokens == record.n_tokens
    assert "".join(app.text) == record.final_text  # every token arrived, in order


def test_stop_key_ends_the_trace_and_keeps_it(tmp_path: Path) -> None:
    record = svamp_records()[CLEAN]
    app = make_app(replay([record]), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.tokens >= 30)
        await pilot.press("s")
        await wait_for(pilot, lambda: app.finished)
        assert "stop @" in "\n".join(f"{k} {e}" for k, e in app.query_one(DecisionLog).entries)
        assert "stopped by the user" in log_text(app)

    run_app(app, scenario)
    (trajectory,) = app.attempts
    assert trajectory.finish_reason == "stopped" and 30 <= trajectory.n_tokens < record.n_tokens
    assert trajectory.decisions[0]["by"] == "user"


def test_resample_key_moves_to_the_next_sample(tmp_path: Path) -> None:
    records = svamp_records()
    first, second = records[STALLS], as_resample(records[CLEAN], records[STALLS])
    app = make_app(replay([first, second], speed=40), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.tokens >= 10)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.attempt == 1)
        assert app.steps == [] or app.steps[0].text == second.steps[0].text
        assert "attempt 2" in str(app.query_one(TraceView).border_title)
        await wait_for(pilot, lambda: app.finished)

    run_app(app, scenario)
    assert [t.finish_reason for t in app.attempts] == ["resampled", "eos"]
    assert app.best == 1 and app.attempts[1].n_tokens == second.n_tokens


def test_after_a_stop_the_resample_key_offers_another_attempt(tmp_path: Path) -> None:
    records = svamp_records()
    first, second = records[STALLS], as_resample(records[CLEAN], records[STALLS])
    app = make_app(replay([first, second], speed=40), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.tokens >= 10)
        await pilot.press("s")
        await wait_for(pilot, lambda: app.finished and app.source_done)
        await pilot.press("r")  # the run is over: one more attempt, not "the run is over"
        await wait_for(pilot, lambda: app.attempt == 1)
        assert "attempt 2" in str(app.query_one(TraceView).border_title)
        await wait_for(pilot, lambda: app.finished and app.source_done)
        await pilot.press("r")  # a replay has no third saved trace: said so, nothing changes
        await pilot.pause(0.1)
        assert "no other attempt" in log_text(app) and app.attempt == 1 and app.finished

    run_app(app, scenario)
    assert [t.finish_reason for t in app.attempts] == ["stopped", "eos"]
    assert app.attempts[1].n_tokens == second.n_tokens and app.best in (0, 1)
    assert all(t.generation["best_attempt"] == app.best for t in app.attempts)


def test_guardrail_toggled_on_stops_by_policy_with_a_visible_reason(tmp_path: Path) -> None:
    record = svamp_records()[STALLS]
    app = make_app(replay([record], speed=40), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        assert not app.source.auto
        await pilot.press("a")
        assert app.source.auto and "guardrail on" in log_text(app)
        await wait_for(pilot, lambda: app.finished)
        assert "entropy ≥ 1.00 bits and not falling for 3 steps" in log_text(app)
        assert "stopped @6" in str(app.query_one(StatusLine).render())

    run_app(app, scenario)
    (trajectory,) = app.attempts
    assert trajectory.finish_reason == "stopped" and len(trajectory.steps) == 6
    assert trajectory.decisions[0]["by"] == "policy" and trajectory.decisions[0]["tokens_saved"] > 0


def test_export_writes_valid_trajectories_mid_stream_and_at_the_end(tmp_path: Path) -> None:
    record = svamp_records()[CLEAN]
    app = make_app(replay([record]), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: len(app.steps) >= 2)
        await pilot.press("e")
        await wait_for(pilot, lambda: app.finished)
        await pilot.press("e")

    run_app(app, scenario)
    first, last = app.exported
    (partial,) = read_trajectories(first)
    assert partial.finish_reason == "running" and len(partial.steps) >= 2
    assert record.final_text.startswith(partial.final_text) and partial.n_tokens < record.n_tokens
    (done,) = read_trajectories(last)
    assert done.finish_reason == "eos" and done.final_text == record.final_text and done.steps == record.steps


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
def test_quitting_mid_stream_saves_what_was_generated(tmp_path: Path, key: str) -> None:
    record = svamp_records()[CLEAN]
    app = make_app(replay([record], speed=5), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.tokens >= 5)
        await pilot.press(key)
        await wait_for(pilot, lambda: app.return_code is not None)

    run_app(app, scenario)
    assert app.saved_path == tmp_path / "session.jsonl" and app.return_code == 0
    (saved,) = read_trajectories(app.saved_path)
    assert saved.finish_reason == "cancelled" and 5 <= saved.n_tokens < record.n_tokens
    assert record.final_text.startswith(saved.final_text) and len(saved.token_entropy) == saved.n_tokens


def test_without_a_calibrator_the_gauge_says_so(tmp_path: Path) -> None:
    app = make_app(replay([svamp_records()[CLEAN]], speed=0), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.finished)
        assert str(app.query_one(PCorrectGauge).render()) == "P(correct): no calibrator (entropy only)"

    run_app(app, scenario)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_the_layout_fits(tmp_path: Path, size: tuple[int, int]) -> None:
    app = make_app(replay([svamp_records()[CLEAN]], speed=0, scorer=EntropyScorer()), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.finished)
        await pilot.pause(0.1)
        width, height = size
        for widget in (StatusLine, TraceView, PCorrectGauge, CurvePlot, TopAnswers, DecisionLog):
            region = app.query_one(widget).region
            assert region.width >= 20 and region.height >= 1, (widget.__name__, region)
            assert region.right <= width and region.bottom <= height, (widget.__name__, region)
        assert app.query_one(TopAnswers).region.height >= 3 and app.query_one("#curve", CurvePlot).region.height >= 3

    run_app(app, scenario, size)


def test_the_question_stays_pinned_and_the_title_counts_the_lines_scrolled_away(tmp_path: Path) -> None:
    record = svamp_records()[STALLS]  # long enough to scroll at 80x24
    app = make_app(replay([record], speed=0), tmp_path)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.finished)
        trace = app.query_one(TraceView)
        await wait_for(pilot, lambda: "above" in str(trace.border_title))
        question = str(trace.query_one("#trace-question", Static).render())
        assert question.startswith("Q: " + record.question[:20])
        assert len(question.splitlines()) <= TraceView.QUESTION_LINES
        assert trace.lines_above > 0 and f"↑{trace.lines_above} lines above" in str(trace.border_title)
        assert record.question not in trace.plain  # the scrolling text is the generation alone
        body = trace.query_one("#trace-body")
        body.scroll_home(animate=False)
        await wait_for(pilot, lambda: "above" not in str(trace.border_title))
        assert str(trace.border_title) == "generation · attempt 1"
        assert body.scrollbar_size_vertical == 0  # no lone scrollbar glyph inside the text

    run_app(app, scenario)


def test_replay_from_the_command_line_options(tmp_path: Path) -> None:
    from rich.console import Console

    from tui.command import source_from_args

    path = write_sample(tmp_path)
    args = build_parser().parse_args(["tui", "--replay", str(path), "--item", "1", "--speed", "0", "--auto",
                                      "--calibrator", "none", "--patience", "2", "--max-resamples", "1"])
    source = source_from_args(args, Console(stderr=True))
    assert isinstance(source, ReplaySource) and source.auto and not source.calibrated
    assert source.policy == GuardrailPolicy(patience=2, max_resamples=1)
    assert source.question == svamp_records()[STALLS].question


def test_live_mode_on_the_fixture_model_end_to_end(smol: Monitor, tmp_path: Path) -> None:
    monitor = Monitor(smol.loaded, segmenter="sentence")
    source = LiveSource(monitor, "What is 7 + 8? Think step by step.", NUMERIC, GenerationSettings(max_new_tokens=24))
    ticks = iter(range(10_000))
    app = create_app(source, save_path=tmp_path / "live.jsonl", export_dir=tmp_path, clock=lambda: next(ticks) * 0.01)

    async def scenario(app: SIAMonitorApp, pilot: Pilot[int]) -> None:
        await wait_for(pilot, lambda: app.tokens >= 3, timeout=120)
        await pilot.press("p")
        assert app.source.paused and not app.finished
        await pilot.pause(0.3)
        held, backlog = app.tokens, app.backlog
        await pilot.pause(0.5)
        assert app.tokens == held and app.backlog == backlog <= 3  # generation is held between two tokens
        await pilot.press("p")
        await wait_for(pilot, lambda: app.finished, timeout=120)
        assert app.steps and app.query_one("#curve", CurvePlot).values
        assert "no calibrator" in str(app.query_one(PCorrectGauge).render())
        await wait_for(pilot, lambda: app.source_done, timeout=30)
        await pilot.press("r")  # after the end, a new attempt with a new seed
        await wait_for(pilot, lambda: app.attempt == 1 and app.finished, timeout=120)
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None)

    run_app(app, scenario)
    saved, again = read_trajectories(tmp_path / "live.jsonl")
    assert again.generation["attempt"] == 1 and again.generation["seed"] != saved.generation["seed"]
    assert saved.model_id == "smollm2-135m-instruct" and saved.finish_reason in ("length", "eos")
    assert saved.n_tokens == 24 or saved.finish_reason == "eos"
    assert saved.final_text and again.final_text and "".join(app.text).strip() == again.final_text.strip()

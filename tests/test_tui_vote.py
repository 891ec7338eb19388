"""The vote screen (`tui.vote_app`): a replayed vote shows what `vote.simulate` decides, lane by lane; the keys
act; snapshots at 80x24 and 120x40. A live vote on SmolLM2 runs through the same app."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from replay_data import EntropyScorer, vote_samples
from textual.pilot import Pilot

from sia_monitor.guardrail.replay import score_steps
from sia_monitor.guardrail.vote import VotePolicy, simulate
from sia_monitor.trajectory import read_trajectories
from tui.vote_app import ReplayVoteSource, VoteApp, create_vote_app

POLICY = VotePolicy(samples=8)


def replay_app(tmp_path: Path) -> tuple[VoteApp, list]:
    samples = vote_samples(8)
    source = ReplayVoteSource(samples, samples[0].answer_space, POLICY, EntropyScorer())
    return create_vote_app(source, export_dir=tmp_path), samples


async def until(pilot: Pilot[int], condition, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.02)


def test_replayed_vote_shows_the_harness_decisions(tmp_path: Path) -> None:
    asyncio.run(_replayed(tmp_path))


async def _replayed(tmp_path: Path) -> None:
    app, samples = replay_app(tmp_path)
    expected = simulate([score_steps(t, EntropyScorer()) for t in samples], POLICY, samples[0].answer_space)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.result is not None)
        await pilot.pause(0.1)
        statuses = {i: lane["status"] for i, lane in app.view.lanes.items()}
        assert statuses == {b.sample: b.status for b in expected.ballots}
        assert app.result is not None and app.result.answer == expected.answer
        board = app.query_one("#board").render()
        assert "vote" in str(board) or app.view.tally is not None
        await pilot.press("down", "e")
        assert app.selected == 1 and len(app.exported) == 1
        exported = list(read_trajectories(app.exported[0]))
        assert len(exported) == len(expected.ballots)
        await pilot.press("q")
    assert app.return_code == 0


def finished(tmp_path: Path):  # type: ignore[no-untyped-def]
    app, _ = replay_app(tmp_path)

    async def run_before(pilot: Pilot[int]) -> None:
        await until(pilot, lambda: app.result is not None)
        await pilot.pause(0.2)

    return app, run_before


def test_vote_screen_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, run_before = finished(tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_vote_screen_120x40(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, run_before = finished(tmp_path)
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_live_vote_in_the_app_kills_a_lane_and_stops(smol, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_live(smol, tmp_path))


async def _live(smol, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sia_monitor.backends.base import GenerationSettings
    from sia_monitor.backends.in_process import Monitor
    from sia_monitor.guardrail.live_vote import LiveVote
    from tui.vote_app import LiveVoteSource

    monitor = Monitor(smol.loaded, scorer=EntropyScorer())
    vote = LiveVote(monitor, "Tom has 12 apples and gives away 5. How many are left?", policy=VotePolicy(
        samples=6, width=2, kill=None, adaptive_stop=False), settings=GenerationSettings(200, 0.9, seed=2))
    app = create_vote_app(LiveVoteSource(vote), export_dir=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: any(lane["step"] for lane in app.view.lanes.values()), 60)
        await pilot.press("k")  # lane 0
        await until(pilot, lambda: app.view.lanes[0]["status"] != "running", 60)
        await pilot.press("s")
        await until(pilot, lambda: app.result is not None, 60)
        assert app.view.lanes[0]["status"] in ("killed", "done")
        assert app.result is not None and len(app.result.samples) < 6
        await pilot.press("q")

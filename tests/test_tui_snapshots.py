"""Snapshots of the main screen at 80x24 and 120x40 (pytest-textual-snapshot; SVGs in tests/__snapshots__/).

Deterministic by construction: fixed replay content played with no waiting, the picture taken only once the
replay has finished, a replay's status showing its recorded times (never the clock), and a stand-in scorer
instead of the shipped calibrator (which is refitted as data grows). Update after a deliberate UI change with
`pytest tests/test_tui_snapshots.py --snapshot-update`, and look at the new SVGs before committing them.
"""

from __future__ import annotations

import time
from pathlib import Path

from replay_data import ACCEPTS, STALLS, EntropyScorer, svamp_records
from textual.pilot import Pilot

from sia_monitor.guardrail.policy import GuardrailPolicy
from tui.app import SIAMonitorApp, create_app
from tui.sources import ReplaySource
from tui.widgets import TraceView


def finished_app(source: ReplaySource, tmp_path: Path) -> tuple[SIAMonitorApp, object]:
    app = create_app(source, save_path=None, export_dir=tmp_path, clock=lambda: 0.0)

    async def run_before(pilot: Pilot[int]) -> None:
        deadline = time.monotonic() + 20
        while not app.finished:
            assert time.monotonic() < deadline, "the replay did not finish"
            await pilot.pause(0.02)
        await pilot.pause(0.2)  # let the last flush render and the scroll anchors settle
        trace = app.query_one(TraceView)
        while trace.lines_above and "above" not in str(trace.border_title):  # the title follows the layout
            assert time.monotonic() < deadline, "the trace title did not settle"
            await pilot.pause(0.02)

    return app, run_before


def test_main_screen_80x24_entropy_guardrail_stop(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No calibrator: the gauge says so, the entropy guardrail stops the stalled trace at step 6."""
    source = ReplaySource([svamp_records()[STALLS]], speed=0, policy=GuardrailPolicy(), auto=True)
    app, run_before = finished_app(source, tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_main_screen_120x40_accept_with_p_correct(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With P(correct): the gauge and its thresholds, and an early accept that forces the answer line."""
    source = ReplaySource([svamp_records(ACCEPTS + 1)[ACCEPTS]], speed=0, scorer=EntropyScorer(),
                          policy=GuardrailPolicy(accept_above=0.9), auto=True)
    app, run_before = finished_app(source, tmp_path)
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)

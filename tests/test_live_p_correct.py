"""Live P(correct): the shipped calibrator scores every step while the default model generates.

The number the monitor shows live must be the number the calibrator gives the saved trajectory afterwards
(the calibrator was fitted and evaluated on saved trajectories), and `sia-monitor run` must show it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibrators import calibrator_for, load_calibrator
from calibrators.artifact import shipped_calibrator_path
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.cli import main
from sia_monitor.errors import SIAError
from sia_monitor.models import DEFAULT_MODEL, FIXTURE_MODEL
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import load_benchmark
from sia_monitor.trajectory import MonitorEvent, read_trajectories


def test_default_model_ships_numeric_and_choice_calibrators() -> None:
    for kind in ("numeric", "choice"):
        path = shipped_calibrator_path(DEFAULT_MODEL, kind)
        assert path is not None, f"no shipped {kind} calibrator for {DEFAULT_MODEL}"
        calibrator = load_calibrator(path)
        assert calibrator.info.model_id == DEFAULT_MODEL and kind in calibrator.info.answer_kinds


@pytest.mark.parametrize(("kind", "benchmark"), [("numeric", "svamp"), ("choice", "arc-easy")])
def test_the_larger_model_ships_its_calibrators(kind: str, benchmark: str) -> None:
    """Qwen2.5-Coder-1.5B: fitted on 400 questions of each answer type (issue 14), judged by grouped 5-fold CV
    on its card; entropy-only, so that engines can use them too."""
    larger = "qwen2.5-coder-1.5b-instruct"
    path = shipped_calibrator_path(larger, kind)
    assert path is not None, f"no shipped {kind} calibrator for {larger}"
    calibrator = load_calibrator(path)
    assert calibrator.info.model_id == larger and calibrator.hidden_state_spec is None
    assert calibrator.info.answer_kinds == [kind]
    assert calibrator.info.metrics["at_last_step"]["auroc"] > 0.6
    data = Path(__file__).resolve().parents[1] / "calibrators" / "data" / larger / f"{benchmark}.jsonl.gz"
    collected = list(read_trajectories(data))
    assert len({t.item_id for t in collected}) >= 400
    assert sum(entry["traces"] for entry in calibrator.info.data) == sum(1 for t in collected if t.steps)
    trajectory = next(t for t in collected if len(t.steps) >= 2)
    curve = calibrator.curve(trajectory)
    assert len(curve) == len(trajectory.steps) and all(0.0 <= p <= 1.0 for p in curve)


@pytest.mark.default_model
def test_live_p_correct_matches_the_offline_curve(qwen: Monitor, data_dir: Path) -> None:
    calibrator = calibrator_for(DEFAULT_MODEL, NUMERIC)
    assert calibrator is not None
    monitor = Monitor(qwen.loaded, scorer=calibrator)
    item = load_benchmark("svamp", data_dir, limit=1)[0]
    events: list[MonitorEvent] = []
    (trajectory,) = monitor.generate(item.question, item.space, GenerationSettings(max_new_tokens=96),
                                     on_event=events.append)
    live = [e.step.p_correct for e in events if e.kind == "step" and e.step is not None]
    assert len(live) >= 2 and all(p is not None and 0.0 <= p <= 1.0 for p in live)
    assert live == [s.p_correct for s in trajectory.steps]
    offline = calibrator.curve(trajectory)
    assert live == pytest.approx(offline, abs=2e-4)  # live values are rounded to 4 decimals
    assert len(set(live)) > 1  # it moves with the curve


@pytest.mark.default_model
def test_run_shows_p_correct(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "A baker made 24 muffins and sold 9. How many are left?", "--max-new-tokens", "64"])
    assert code == 0
    assert "P(correct)" in capsys.readouterr().out


@pytest.mark.default_model
def test_run_json_carries_p_correct_and_none_disables_it(capsys: pytest.CaptureFixture[str]) -> None:
    question = "Sam has 5 pens and buys 7 more. How many pens does he have?"
    assert main(["run", question, "--json", "--max-new-tokens", "48"]) == 0
    steps = [e["step"] for e in map(json.loads, capsys.readouterr().out.splitlines()) if e["kind"] == "step"]
    assert steps and all(s["p_correct"] is not None for s in steps)
    assert main(["run", question, "--json", "--max-new-tokens", "48", "--calibrator", "none"]) == 0
    steps = [e["step"] for e in map(json.loads, capsys.readouterr().out.splitlines()) if e["kind"] == "step"]
    assert steps and all(s["p_correct"] is None for s in steps)


def test_calibrator_for_another_model_needs_force(capsys: pytest.CaptureFixture[str]) -> None:
    path = shipped_calibrator_path(DEFAULT_MODEL, "numeric")
    assert path is not None
    with pytest.raises(SIAError, match="--force"):
        calibrator_for(FIXTURE_MODEL, NUMERIC, str(path))
    code = main(["run", "What is 2 + 3?", "--model", FIXTURE_MODEL, "--calibrator", str(path),
                 "--max-new-tokens", "8"])
    assert code == 2
    assert "fitted for model" in capsys.readouterr().err


def test_run_without_a_calibrator_for_the_model_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "What is 2 + 3?", "--model", FIXTURE_MODEL, "--max-new-tokens", "16"])
    assert code == 0
    assert "entropy only" in capsys.readouterr().err

"""Feature version 2: calibrators that read the steps' hidden states too (issue 14).

Fitted on real schema-2 trajectories of the default model (the committed re-collection), saved and loaded
through skops like every calibrator, chosen by `--calibrator auto` only where the steps will carry hidden
states, and refused, in one line, where they will not.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from calibrators import calibrator_for, load_calibrator
from calibrators.artifact import shipped_calibrator_path, shipped_hidden_state_spec
from calibrators.dataset import PrefixTable
from calibrators.features import FEATURE_NAMES, FEATURE_VERSION, HiddenColumns, question_number_count
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.cli import main
from sia_monitor.errors import SIAError
from sia_monitor.models import DEFAULT_MODEL
from sia_monitor.options import hidden_states_for
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.scoring import Prefix
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import load_benchmark
from sia_monitor.trajectory import MonitorEvent, read_trajectories, write_trajectories

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "calibrators" / "data" / DEFAULT_MODEL
HIDDEN_SVAMP = DATA / "hidden" / "svamp.jsonl.gz"
PLAIN_SVAMP = DATA / "svamp.jsonl.gz"  # schema 1: no hidden states


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`fit --data --hidden-states` on 300 real schema-2 SVAMP traces; 150 others to judge it on."""
    root = tmp_path_factory.mktemp("hidden")
    traces = list(read_trajectories(HIDDEN_SVAMP))
    train, other = root / "train.jsonl.gz", root / "other.jsonl.gz"
    write_trajectories(train, traces[:300], append=False)
    write_trajectories(other, traces[300:450], append=False)
    out = root / "mine.skops"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "400")
        assert main(["fit", "--data", str(train), "--out", str(out), "--hidden-states"]) == 0
    return {"root": root, "train": train, "other": other, "calibrator": out}


def test_number_words_count_as_question_numbers() -> None:
    assert question_number_count("Tom has 3 apples.") == 1
    # digits, a spelled number, "dozen" and "twice"; "one" (a pronoun far more often) is not counted
    assert question_number_count("Tom has three apples and buys 2 dozen more, twice. No one helps.") == 4
    assert question_number_count("Fifty-five birds and a half") == 2  # "fifty-five" is one number


def test_fit_with_hidden_states_writes_a_feature_v2_card(fitted: dict[str, Path]) -> None:
    card = json.loads(fitted["calibrator"].with_suffix(".json").read_text(encoding="utf-8"))
    assert card["feature_version"] == FEATURE_VERSION == 2
    assert card["hidden"] == {"layers": [12, 18, 24], "dims": 64, "seed": 0, "projection": "sha256-sign-v1"}
    assert card["config"]["model"] == "hidden" and card["feature_names"] == list(FEATURE_NAMES)
    calibrator = load_calibrator(fitted["calibrator"])
    assert calibrator.hidden_state_spec == HiddenStateSpec(dims=64, seed=0, layers=(12, 18, 24))
    assert "hidden states" in calibrator.describe()
    trajectory = next(t for t in read_trajectories(fitted["other"]) if len(t.steps) >= 3)
    curve = calibrator.curve(trajectory)
    assert len(curve) == len(trajectory.steps) and all(0.0 <= p <= 1.0 for p in curve)
    # live (one prefix at a time) and offline (the whole curve at once) are the same numbers
    assert [calibrator.p_correct(Prefix.of(trajectory, k)) for k in (1, 2, 3)] == pytest.approx(curve[:3], abs=1e-12)


def test_the_hidden_states_move_p_correct(fitted: dict[str, Path]) -> None:
    """Not an entropy calibrator in disguise: other vectors at the same entropy curve give other numbers."""
    calibrator = load_calibrator(fitted["calibrator"])
    a, b = [t for t in read_trajectories(fitted["other"]) if t.steps][:2]
    swapped = dataclasses.replace(a, steps=[dataclasses.replace(a.steps[0], hidden=b.steps[0].hidden)])
    original = dataclasses.replace(a, steps=[a.steps[0]])
    assert abs(calibrator.curve(swapped)[0] - calibrator.curve(original)[0]) > 1e-3


def test_steps_without_or_with_other_hidden_states_are_refused(fitted: dict[str, Path]) -> None:
    calibrator = load_calibrator(fitted["calibrator"])
    trajectory = next(t for t in read_trajectories(fitted["other"]) if t.steps)
    bare = dataclasses.replace(trajectory, steps=[dataclasses.replace(s, hidden=None) for s in trajectory.steps])
    with pytest.raises(SIAError, match="has none"):
        calibrator.curve(bare)
    state = trajectory.steps[0].hidden
    assert state is not None
    other = dataclasses.replace(state, seed=1)
    reseeded = dataclasses.replace(trajectory, steps=[dataclasses.replace(trajectory.steps[0], hidden=other)])
    with pytest.raises(SIAError, match="not the ones this calibrator reads"):
        calibrator.curve(reseeded)


def test_a_table_with_hidden_columns_puts_them_after_the_entropy_ones() -> None:
    traces = [t for t in read_trajectories(HIDDEN_SVAMP) if t.steps][:20]
    plain, wide = PrefixTable.build(traces), PrefixTable.build(traces, hidden=True)
    assert wide.hidden == HiddenColumns((12, 18, 24), 64, 0, "sha256-sign-v1")
    assert wide.X.shape == (plain.X.shape[0], len(FEATURE_NAMES) + 192)
    assert np.array_equal(wide.X[:, :len(FEATURE_NAMES)], plain.X)
    assert len(wide.feature_names) == wide.X.shape[1]


def test_fit_with_hidden_states_on_files_without_them_is_one_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "plain.jsonl.gz"
    write_trajectories(data, list(read_trajectories(PLAIN_SVAMP))[:100], append=False)
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "x.skops"), "--hidden-states"]) == 2
    err = capsys.readouterr().err
    assert "carry no hidden states" in err and "Traceback" not in err
    assert not (tmp_path / "x.skops").exists()
    assert main(["fit", "--hidden-states"]) == 2
    assert "--hidden-states goes with --data" in capsys.readouterr().err


def test_evaluate_a_hidden_calibrator_on_other_questions(fitted: dict[str, Path]) -> None:
    out = fitted["root"] / "report"
    assert main(["evaluate", "--calibrator", str(fitted["calibrator"]), "--data", str(fitted["other"]),
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (entry,) = report["recipes"].values()
    assert entry["config"]["model"] == "hidden"
    last = {row["position"]: row for row in entry["positions"]}["100%"]
    assert last["n"] > 100 and 0.5 < last["calibrated"]["auroc"] <= 1.0


def test_evaluate_a_hidden_calibrator_on_files_without_them_is_one_line(fitted: dict[str, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "plain.jsonl.gz"
    write_trajectories(data, list(read_trajectories(PLAIN_SVAMP))[:50], append=False)
    assert main(["evaluate", "--calibrator", str(fitted["calibrator"]), "--data", str(data),
                 "--out", str(tmp_path / "r")]) == 2
    assert "carry no hidden states" in capsys.readouterr().err


def test_a_hidden_calibrator_without_hidden_states_is_refused_before_the_model_loads(
        fitted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "What is 2 + 3?", "--calibrator", str(fitted["calibrator"]), "--no-hidden-states"])
    assert code == 2
    err = capsys.readouterr().err
    assert "reads hidden states" in err and "Loading" not in err


def test_the_monitor_records_what_the_calibrator_reads(fitted: dict[str, Path]) -> None:
    calibrator = load_calibrator(fitted["calibrator"])
    assert hidden_states_for(calibrator, None) == calibrator.hidden_state_spec
    assert hidden_states_for(calibrator, HiddenStateSpec(dims=64)) == calibrator.hidden_state_spec
    with pytest.raises(SIAError, match="--hidden-dims 32"):
        hidden_states_for(calibrator, HiddenStateSpec(dims=32))
    assert hidden_states_for(None, HiddenStateSpec(dims=32)) == HiddenStateSpec(dims=32)


def test_auto_takes_the_hidden_calibrator_only_where_steps_carry_hidden_states() -> None:
    hidden = calibrator_for(DEFAULT_MODEL, NUMERIC, hidden_states=True)
    plain = calibrator_for(DEFAULT_MODEL, NUMERIC, hidden_states=False)
    assert hidden is not None and plain is not None
    assert hidden.info.name == "numeric-hidden" and hidden.hidden_state_spec is not None
    assert plain.info.name == "numeric" and plain.hidden_state_spec is None
    assert shipped_hidden_state_spec(DEFAULT_MODEL) == hidden.hidden_state_spec
    path = shipped_calibrator_path(DEFAULT_MODEL, "numeric-hidden")
    assert path is not None and path.with_suffix(".json").is_file()


@pytest.mark.default_model
def test_live_p_correct_from_hidden_states_matches_the_offline_curve(qwen: Monitor, data_dir: Path) -> None:
    """On the default model: the monitor records exactly the vectors the shipped calibrator reads, and the
    live number equals the calibrator's number for the saved trajectory."""
    calibrator = calibrator_for(DEFAULT_MODEL, NUMERIC, hidden_states=True)
    assert calibrator is not None and calibrator.hidden_state_spec is not None
    monitor = Monitor(qwen.loaded, scorer=calibrator, hidden_states=calibrator.hidden_state_spec)
    item = load_benchmark("svamp", data_dir, limit=1)[0]
    events: list[MonitorEvent] = []
    (trajectory,) = monitor.generate(item.question, item.space, GenerationSettings(max_new_tokens=96),
                                     on_event=events.append)
    live = [e.step.p_correct for e in events if e.kind == "step" and e.step is not None]
    assert len(live) >= 2 and all(p is not None and 0.0 <= p <= 1.0 for p in live)
    assert all(s.hidden is not None for s in trajectory.steps)
    assert live == pytest.approx(calibrator.curve(trajectory), abs=2e-4)


@pytest.mark.default_model
def test_run_says_which_calibrator_is_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    question = "Sam has 5 pens and buys 7 more. How many pens does he have?"
    assert main(["run", question, "--json", "--max-new-tokens", "48"]) == 0
    captured = capsys.readouterr()
    assert f"{DEFAULT_MODEL}/numeric-hidden (the entropy curve + hidden states)" in captured.err
    steps = [e["step"] for e in map(json.loads, captured.out.splitlines()) if e["kind"] == "step"]
    assert steps and all(s["p_correct"] is not None for s in steps)
    assert main(["run", question, "--json", "--max-new-tokens", "48", "--no-hidden-states"]) == 0
    assert f"{DEFAULT_MODEL}/numeric (the entropy curve)" in capsys.readouterr().err

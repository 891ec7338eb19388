"""Calibrating on a user's own questions: `collect --dataset`, `fit --data`, `evaluate --calibrator --data`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from calibrators.artifact import card_path, load_calibrator
from sia_monitor.cli import main
from sia_monitor.collect import plan_collection, run_collection
from sia_monitor.errors import SIAError
from sia_monitor.tasks.datasets import load_dataset
from sia_monitor.trajectory import read_trajectories, write_trajectories

REPO = Path(__file__).resolve().parents[1]
MODEL = "qwen2.5-coder-0.5b-instruct"
SVAMP = REPO / "calibrators" / "data" / MODEL / "svamp.jsonl.gz"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # long temporary paths stay on one line


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def test_a_dataset_reads_numbers_choices_and_csv(tmp_path: Path) -> None:
    jsonl = write_lines(tmp_path / "mine.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "7", "topic": "ignored"},
        {"id": "sky", "question": "What colour is the sky?", "choices": ["green", "blue"], "answer": "blue"},
        {"question": "Pick one.", "choices": "A) red B) blue C) green", "answer": "(C)"},
        {"question": "How much is half of 3?", "answer": "1.50"},
    ])
    first, sky, third, half = load_dataset(jsonl)
    assert (first.benchmark, first.item_id, first.gold, first.space.kind) == ("dataset:mine", "line-1", "7", "numeric")
    assert (sky.item_id, sky.gold, sky.space.labels, sky.space.options) == ("sky", "B", ("A", "B"), ("green", "blue"))
    assert third.gold == "C" and third.space.options == ("red", "blue", "green")
    assert half.gold == "1.5"
    csv = tmp_path / "mine.csv"
    csv.write_text('question,answer,choices\n"2 + 2?",4,\n"Which is a fruit?",apple,"[""rock"", ""apple""]"\n',
                   encoding="utf-8")
    numeric, fruit = load_dataset(csv)
    assert (numeric.gold, numeric.item_id, fruit.gold, fruit.space.options) == ("4", "line-2", "B", ("rock", "apple"))


@pytest.mark.parametrize("row, message", [
    ({"answer": "3"}, "line 2: 'question' is missing"),
    ({"question": "How many?", "answer": "lots"}, "line 2: answer 'lots' is not a number"),
    ({"question": "Which?", "choices": ["x", "y"], "answer": "z"}, "line 2: answer 'z' is neither"),
    ({"question": "Which?", "choices": ["x"], "answer": "x"}, "line 2: 'choices' must be 2 to 10 options"),
    ({"id": "q1", "question": "Again?", "answer": "1"}, "line 2: id 'q1' is used again (first on line 1)"),
    ("{not json", "line 2: not valid JSON"),
])
def test_a_bad_row_is_refused_with_its_line_before_any_model_loads(tmp_path: Path, row: object, message: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [{"id": "q1", "question": "1 + 1?", "answer": "2"}, row])
    with pytest.raises(SIAError, match="bad.jsonl " + message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(path)
    started = time.monotonic()
    assert main(["collect", "--dataset", str(path), "--out", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and time.monotonic() - started < 5
    assert not (tmp_path / "out.jsonl").exists()


def test_collect_on_a_dataset_grades_and_resumes(smol, tmp_path: Path) -> None:
    collect_two_questions(smol, tmp_path)


@pytest.mark.default_model
def test_collect_on_a_dataset_with_the_default_model(qwen, tmp_path: Path) -> None:
    collect_two_questions(qwen, tmp_path)


def collect_two_questions(monitor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sia_monitor.backends.base import GenerationSettings

    dataset = write_lines(tmp_path / "mine.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": 7},
        {"question": "What colour is a clear daytime sky?", "choices": ["green", "blue"], "answer": "B"},
    ])
    out, settings = tmp_path / "mine.jsonl.gz", GenerationSettings(max_new_tokens=24)
    plan = plan_collection(dataset, out, monitor.model_id, settings=settings)
    assert plan.benchmark == "dataset:mine" and len(plan.todo) == 2
    run_collection(monitor, plan, batch_size=2, settings=settings)
    saved = list(read_trajectories(out))
    assert [t.benchmark for t in saved] == ["dataset:mine"] * 2
    assert {t.answer_space.kind for t in saved} == {"numeric", "choice"}
    assert all(t.correct is not None and t.gold is not None for t in saved)
    assert not plan_collection(dataset, out, monitor.model_id, settings=settings).todo  # resumes: nothing left


@pytest.fixture(scope="module")
def own_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A user's trajectories, stood in for by real collected ones: 200 to fit on, 100 others to judge with."""
    root = tmp_path_factory.mktemp("own")
    records = list(read_trajectories(SVAMP))
    fit_on, judge_on = root / "mine.jsonl.gz", root / "later.jsonl.gz"
    write_trajectories(fit_on, records[:200], append=False)
    write_trajectories(judge_on, records[200:300], append=False)
    return {"root": root, "fit": fit_on, "judge": judge_on}


def test_fit_on_own_data_then_evaluate_it_on_other_questions(own_files: dict[str, Path]) -> None:
    out = own_files["root"] / "mine.skops"
    assert main(["fit", "--data", str(own_files["fit"]), "--out", str(out)]) == 0
    calibrator = load_calibrator(out)
    assert calibrator.info.model_id == MODEL and calibrator.info.answer_kinds == ["numeric"]
    card = json.loads(card_path(out).read_text())
    assert card["metrics"]["at_last_step"]["auroc"] > 0.5 and 190 <= card["config"]["trained_on"]["traces"] <= 200  # traces with a step
    report = own_files["root"] / "report"
    assert main(["evaluate", "--calibrator", str(out), "--data", str(own_files["judge"]), "--out", str(report)]) == 0
    result = json.loads((report / "report.json").read_text())
    (entry,) = result["recipes"].values()
    assert entry["evaluation"] == "external"
    at_end = {row["position"]: row for row in entry["positions"]}["100%"]
    assert at_end["n"] > 50 and 0.5 < at_end["calibrated"]["auroc"] <= 1.0
    assert (report / "report.md").read_text().count("external") >= 1 and (report / "reliability.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["fit", "--data", "/no/such.jsonl.gz", "--out", "x.skops"], "No such trajectory file"),
    (["fit", "--data", "{fit}"], "--data needs --out FILE.skops"),
    (["evaluate", "--calibrator", "{root}/none.skops", "--data", "{judge}", "--out", "{root}/r"], "error:"),
    (["evaluate", "--data", "{judge}", "--out", "{root}/r"], "--calibrator and --data go together"),
])
def test_bad_own_data_options_are_one_line(own_files: dict[str, Path], args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    filled = [a.format(**{k: str(v) for k, v in own_files.items()}) for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_fitting_on_too_few_questions_says_how_many_it_needs(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    few = tmp_path / "few.jsonl.gz"
    write_trajectories(few, list(read_trajectories(SVAMP))[:6], append=False)
    assert main(["fit", "--data", str(few), "--out", str(tmp_path / "few.skops")]) == 2
    assert "Too little to fit on" in capsys.readouterr().err


def test_a_calibrator_of_another_model_is_refused_on_the_data(own_files: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.jsonl.gz"
    records = list(read_trajectories(own_files["judge"]))
    for record in records:
        record.model_id = "some-other-model"
    write_trajectories(other, records, append=False)
    out = own_files["root"] / "mine.skops"
    if not out.exists():
        assert main(["fit", "--data", str(own_files["fit"]), "--out", str(out)]) == 0
    assert main(["evaluate", "--calibrator", str(out), "--data", str(other), "--out", str(tmp_path / "r")]) == 2
    assert "fitted for model" in capsys.readouterr().err


GSM8K = REPO / "calibrators" / "data" / MODEL / "gsm8k.jsonl.gz"


def test_evaluate_transfer_between_two_sets_of_questions(tmp_path: Path) -> None:
    source, target = tmp_path / "svamp-part.jsonl.gz", tmp_path / "gsm8k-part.jsonl.gz"
    write_trajectories(source, list(read_trajectories(SVAMP))[:300], append=False)
    write_trajectories(target, list(read_trajectories(GSM8K))[:300], append=False)
    out = tmp_path / "transfer"
    assert main(["evaluate", "--transfer", str(source), str(target), "--sizes", "25", "--out", str(out)]) == 0
    entry = json.loads((out / "transfer.json").read_text())
    assert (entry["source"], entry["target"]) == ("svamp-part", "gsm8k-part")
    assert entry["target_test"] > 30 and entry["source_train"] > 200
    assert [a["n"] for a in entry["adapted"]] == [a["n"] for a in entry["recalibrated"]] == [25]
    # recalibrating is an increasing map of the transferred calibrator's P(correct): its ranking is kept
    assert entry["recalibrated"][0]["auroc_100"] == pytest.approx(entry["transfer"]["auroc_100"], abs=1e-9)
    for scores in (entry["transfer"], entry["in_domain"], entry["adapted"][0], entry["recalibrated"][0]):
        assert 0.0 <= scores["auroc_50"] <= 1.0 and 0.0 <= scores["auroc_100"] <= 1.0 and 0.0 <= scores["ece"] <= 1.0
    markdown = (out / "transfer.md").read_text()
    assert "svamp-part → gsm8k-part" in markdown and "AUROC drop at 50 %" in markdown


@pytest.mark.parametrize("extra, message", [
    ([], "--transfer needs --out DIR"),
    (["--out", "{root}/t", "--sizes", "0"], "--sizes must be positive"),
    (["--out", "{root}/t", "--data", "{judge}"], "--transfer fits its own calibrators"),
])
def test_bad_transfer_options_are_one_line(own_files: dict[str, Path], extra: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--transfer", str(own_files["fit"]), str(own_files["judge"]), *extra]
    filled = [a.format(**{k: str(v) for k, v in own_files.items()}) for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

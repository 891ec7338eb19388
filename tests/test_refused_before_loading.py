"""Bad input a new user tried, each refused in one line with exit 2, and before the model loads.

"Before the model loads" is checked for real: the cache folder is pointed at an empty temporary one, and a
registry model that had been loaded would have been assembled into it. After a refusal it is still empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sia_monitor.cli import build_parser, main
from sia_monitor.models import FIXTURE_MODEL
from sia_monitor.options import AnswerOptions

FIXTURE = ["--model", FIXTURE_MODEL]


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIA_MONITOR_CACHE", str(cache))
    monkeypatch.setenv("COLUMNS", "400")  # long temporary paths stay on one line
    return cache


def _garbage_calibrator(tmp_path: Path) -> str:
    path = tmp_path / "garbage.skops"
    path.write_bytes(b"this is not a calibrator" * 10)
    return str(path)


def _file_parent(tmp_path: Path) -> str:
    (tmp_path / "plain-file").write_text("x")
    return str(tmp_path / "plain-file" / "t.jsonl")


def _file(tmp_path: Path) -> str:
    (tmp_path / "t.jsonl").write_text("")
    return str(tmp_path / "t.jsonl")


QWEN_TRACES = Path(__file__).resolve().parents[1] / "calibrators/data/qwen2.5-coder-0.5b-instruct/arc-easy.jsonl.gz"

CASES = {
    "negative temperature": (lambda t: ["run", "What is 2+3?", "--temperature", "-1"], "--temperature must be"),
    "nan temperature": (lambda t: ["run", "What is 2+3?", "--temperature", "nan"], "--temperature must be"),
    "inf temperature": (lambda t: ["tui", "What is 2+3?", "--temperature", "inf"], "--temperature must be"),
    "regex without pattern": (lambda t: ["run", "What is 2+3?", "--steps", "regex"], "needs a pattern"),
    "garbage calibrator": (lambda t: ["run", "What is 2+3?", "--calibrator", _garbage_calibrator(t)], "garbage.skops"),
    "missing calibrator": (lambda t: ["run", "What is 2+3?", "--calibrator", str(t / "none.skops")], "none.skops"),
    "unwritable save": (lambda t: ["run", "What is 2+3?", "--save", "/sys/t.jsonl"], "Cannot write /sys/t.jsonl"),
    "save under a file": (lambda t: ["run", "What is 2+3?", "--save", _file_parent(t)], "is a file, not a folder"),
    "tui unwritable save": (lambda t: ["tui", "What is 2+3?", "--save", "/sys/t.jsonl"], "Cannot write"),
    "collect unwritable out": (lambda t: ["collect", "--benchmark", "svamp", "--out", "/sys/c.jsonl"], "Cannot write"),
    "collect data dir without the benchmark": (
        lambda t: ["collect", "--benchmark", "svamp", "--out", str(t / "o.jsonl"), "--data-dir", str(t)],
        "is missing under"),
    "collect zero batch": (
        lambda t: ["collect", "--benchmark", "svamp", "--out", str(t / "o.jsonl"), "--batch-size", "0"],
        "--batch-size must be at least 1"),
    "collect zero hidden dims": (
        lambda t: ["collect", "--benchmark", "svamp", "--out", str(t / "o.jsonl"), "--hidden-dims", "0"],
        "--hidden-dims must be between 1 and 4096"),
    "run zero hidden dims": (lambda t: ["run", "What is 2+3?", "--hidden-states", "--hidden-dims", "0"],
                             "--hidden-dims must be between 1 and 4096"),
    "reprobe another model's traces": (
        lambda t: ["collect", "--reprobe", str(QWEN_TRACES), "--out", str(t / "o.jsonl")],
        "holds trajectories of qwen2.5-coder-0.5b-instruct, not smollm2-135m-instruct"),
    "reprobe a missing file": (lambda t: ["collect", "--reprobe", str(t / "none.jsonl"), "--out", str(t / "o.jsonl")],
                               "none.jsonl does not exist"),
    "reprobe onto itself": (lambda t: ["collect", "--reprobe", _file(t), "--out", _file(t)], "are the same file"),
    "reprobe on an engine": (
        lambda t: ["collect", "--reprobe", _file(t), "--out", str(t / "o.jsonl"), "--engine", "http://127.0.0.1:9"],
        "--reprobe runs the model in process"),
    "vote no samples": (lambda t: ["vote", "What is 2+3?", "-n", "0"], "samples must be at least 1"),
    "vote zero width": (lambda t: ["vote", "What is 2+3?", "--width", "0"], "width must be at least 1"),
    "vote greedy": (lambda t: ["vote", "What is 2+3?", "--temperature", "0"], "give --temperature above 0"),
    "vote stop confidence": (lambda t: ["vote", "What is 2+3?", "--stop-confidence", "1"], "stop_confidence"),
    "vote unwritable save": (lambda t: ["vote", "What is 2+3?", "--save", "/sys/v.jsonl"], "Cannot write"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_in_one_line_before_the_model_loads(
    case: str, tmp_path: Path, empty_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, message = CASES[case]
    assert main([*argv(tmp_path), *FIXTURE]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert not (empty_cache / "models").exists(), "the model was loaded before the input was refused"


def test_unknown_benchmark_is_one_line_not_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--benchmark", "nosuch", "--out", "x.jsonl"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "usage:" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("question", "kind", "stem"),
    [
        ("Plan A) costs 5 and plan B) costs 7. What is the total cost?", "numeric", None),
        ("Which is a mammal? a) trout b) whale c) shark", "choice", "Which is a mammal?"),
        ("Which is a mammal? A. trout B. whale C. shark", "choice", "Which is a mammal?"),
        ("Which is a mammal?\n1) trout\n2) whale\n3) shark", "choice", "Which is a mammal?"),
    ],
)
def test_inline_options_are_found_only_where_they_are_options(question: str, kind: str, stem: str | None) -> None:
    args = build_parser().parse_args(["run", question])
    asked, space = AnswerOptions.from_args(args).resolve(args.question)
    assert space.kind == kind
    assert asked == (stem or question)


def test_run_says_which_answer_space_it_chose_and_hints_fit_only_where_a_recipe_exists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "Which is a mammal? a) trout b) whale", "--max-new-tokens", "4", *FIXTURE]) == 0
    err = capsys.readouterr().err
    assert "answer space: choice (A) trout, B) whale)" in err
    assert "No calibrator ships for smollm2-135m-instruct" in err
    assert "sia-monitor fit" not in err  # calibrators/recipes.toml has no recipe for the fixture model

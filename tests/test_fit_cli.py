"""`sia-monitor fit` and `sia-monitor evaluate` on a small temporary recipe (never the shipped folders)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from calibrators.artifact import SHIPPED_DIR, card_path, load_calibrator, sha256_of
from calibrators.dataset import PrefixTable
from calibrators.features import FEATURE_NAMES, FEATURE_VERSION
from calibrators.fitting import CANDIDATES, estimator_config, load_recipes
from calibrators.report import BEGIN, END, splice
from sia_monitor.cli import main
from sia_monitor.trajectory import read_trajectories, write_trajectories

REPO = Path(__file__).resolve().parents[1]
MODEL = "qwen2.5-coder-0.5b-instruct"
SVAMP = REPO / "calibrators" / "data" / MODEL / "svamp.jsonl.gz"
PNG = b"\x89PNG\r\n\x1a\n"
OUTSIDE_HEAD = "# Benchmarks\n\nHand-written intro that must survive.\n\n"
OUTSIDE_TAIL = "\n\n## Later section\n\nAlso kept.\n"


def write_recipes(path: Path, data: list[Path], name: str = "numeric") -> Path:
    files = ", ".join(json.dumps(str(p)) for p in data)
    path.write_text(f'[[calibrator]]\nname = "{name}"\nmodel = "{MODEL}"\nkinds = ["numeric"]\ndata = [{files}]\n'
                    'evaluation = "heldout"\n', encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps stderr at 80 columns; long temporary paths must stay on one line to be matched."""
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """300 SVAMP trajectories, a recipe over them, one `fit` and one `evaluate --update`."""
    root = tmp_path_factory.mktemp("calibration")
    data = root / "svamp300.jsonl.gz"
    write_trajectories(data, list(read_trajectories(SVAMP))[:300], append=False)
    recipes = write_recipes(root / "recipes.toml", [data])
    shipped, out = root / "shipped", root / "report"
    benchmarks = root / "BENCHMARKS.md"
    benchmarks.write_text(OUTSIDE_HEAD + f"{BEGIN}\nold numbers\n{END}" + OUTSIDE_TAIL, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "400")
        assert main(["fit", "--recipes", str(recipes), "--shipped", str(shipped)]) == 0
        assert main(["evaluate", "--recipes", str(recipes), "--shipped", str(shipped), "--out", str(out),
                     "--update", str(benchmarks)]) == 0
    return {"root": root, "data": data, "recipes": recipes, "shipped": shipped, "out": out, "benchmarks": benchmarks}


def test_fit_writes_the_calibrator_and_its_card(workspace: dict[str, Path]) -> None:
    artifact = workspace["shipped"] / MODEL / "numeric.skops"
    assert artifact.is_file() and card_path(artifact).is_file()
    assert sorted(p.name for p in (workspace["shipped"] / MODEL).iterdir()) == ["numeric.json", "numeric.skops"]
    card = json.loads(card_path(artifact).read_text(encoding="utf-8"))
    assert card["sha256"] == sha256_of(artifact)
    assert card["model_id"] == MODEL and card["answer_kinds"] == ["numeric"] and card["name"] == "numeric"
    assert {(c["model"], c["method"]) for c in card["config"]["selection"]} == {
        (c["model"], c["method"]) for c in CANDIDATES}
    chosen = min(card["config"]["selection"], key=lambda s: s["brier"])
    assert (card["config"]["model"], card["config"]["method"]) == (chosen["model"], chosen["method"])
    assert card["data"][0]["benchmark"] == "svamp" and card["data"][0]["files"] == ["svamp300.jsonl.gz"]
    metrics = card["metrics"]
    assert 0 < metrics["heldout_traces"] < 300
    assert 0.5 < metrics["all_prefixes"]["auroc"] <= 1.0
    trained = card["config"]["trained_on"]
    assert trained["traces"] + metrics["heldout_traces"] == card["data"][0]["traces"]
    calibrator = load_calibrator(artifact)
    assert calibrator.info.model_id == MODEL


def test_evaluate_writes_the_report(workspace: dict[str, Path]) -> None:
    out = workspace["out"]
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "reliability.png", "auroc_by_fraction.png",
                                               "entropy_curves.png"}
    for name in ("reliability.png", "auroc_by_fraction.png", "entropy_curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000, name
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entry = report["recipes"][f"{MODEL}/numeric"]
    assert [row["position"] for row in entry["positions"]] == ["25%", "50%", "75%", "100%", "step 1", "step 2",
                                                              "step 3", "step 4", "step 5"]
    assert entry["positions"][0]["n"] == entry["positions"][3]["n"] == entry["positions"][4]["n"]
    kept = [t for t in read_trajectories(workspace["data"]) if t.steps and t.correct is not None]
    assert report["data"][0]["traces"] == len(kept)  # every trace with a step is described
    assert f"{MODEL} / svamp" in report["sia"]
    text = (out / "report.md").read_text(encoding="utf-8")
    for position in ("| 25% |", "| 50% |", "| 75% |", "| 100% |", "| step 1 |"):
        assert position in text, position
    assert "### SIA signatures" in text and f"| {MODEL} / svamp |" in text
    assert f"### {MODEL}/numeric (heldout;" in text


def test_update_splices_between_the_markers(workspace: dict[str, Path]) -> None:
    text = workspace["benchmarks"].read_text(encoding="utf-8")
    report = (workspace["out"] / "report.md").read_text(encoding="utf-8")
    assert text.startswith(OUTSIDE_HEAD + BEGIN) and text.endswith(END + OUTSIDE_TAIL)
    assert "old numbers" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    inside = text.split(BEGIN, 1)[1].split(END, 1)[0]

    def tables(markdown: str) -> list[str]:
        return [line for line in markdown.strip().splitlines() if not line.startswith("![")]

    assert tables(inside) == tables(report.replace("`sia-monitor evaluate`",
                                                   f"`sia-monitor evaluate --update {workspace['benchmarks']}`"))
    # the images are linked relative to the markdown file that shows them
    links = [line.split("(", 1)[1].rstrip(")") for line in inside.splitlines() if line.startswith("![")]
    assert len(links) == 3
    assert all((workspace["benchmarks"].parent / link).is_file() for link in links)


def test_splice_appends_a_section_when_markers_are_absent(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nNo markers yet.\n", encoding="utf-8")
    splice(path, "table v1\n")
    first = path.read_text(encoding="utf-8")
    assert first.startswith("# Benchmarks\n\nNo markers yet.\n") and f"{BEGIN}\ntable v1\n{END}" in first
    splice(path, "table v2\n")  # the second time the markers are there: replaced, not appended again
    second = path.read_text(encoding="utf-8")
    assert second == first.replace("table v1", "table v2")
    missing = tmp_path / "new.md"
    splice(missing, "t\n")
    assert f"{BEGIN}\nt\n{END}" in missing.read_text(encoding="utf-8")


def test_fit_is_deterministic(workspace: dict[str, Path]) -> None:
    again = workspace["root"] / "shipped-again"
    assert main(["fit", "--recipes", str(workspace["recipes"]), "--shipped", str(again)]) == 0
    first = load_calibrator(workspace["shipped"] / MODEL / "numeric.skops")
    second = load_calibrator(again / MODEL / "numeric.skops")
    table = PrefixTable.build(list(read_trajectories(workspace["data"])))
    np.testing.assert_array_equal(first.estimator.predict_proba(table.X), second.estimator.predict_proba(table.X))
    assert first.info.config == second.info.config and first.info.metrics == second.info.metrics


def test_evaluate_without_a_fitted_calibrator(workspace: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "nothing-fitted"
    code = main(["evaluate", "--recipes", str(workspace["recipes"]), "--shipped", str(empty), "--out",
                 str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "No fitted calibrator" in err and "sia-monitor fit" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_missing_data_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    missing = tmp_path / "not-collected-yet.jsonl.gz"
    recipes = write_recipes(tmp_path / "recipes.toml", [SVAMP, missing])
    code = main([command, "--recipes", str(recipes), "--shipped", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
                if command == "evaluate" else [command, "--recipes", str(recipes), "--shipped", str(tmp_path / "s")])
    assert code == 2
    err = re.sub(r"\s+", "", capsys.readouterr().err)
    assert str(missing) in err and "missing" in err
    assert not (tmp_path / "s").exists()


def test_relative_data_paths_are_read_from_the_recipes_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    recipes = tmp_path / "recipes.toml"
    recipes.write_text(f'[[calibrator]]\nname = "numeric"\nmodel = "{MODEL}"\nkinds = ["numeric"]\n'
                       'data = ["data/svamp.jsonl.gz"]\n', encoding="utf-8")
    (recipe,) = load_recipes(recipes)
    assert recipe.data == [tmp_path / "data" / "svamp.jsonl.gz"] and recipe.evaluation == "heldout"
    assert recipe.artifact(tmp_path / "s") == tmp_path / "s" / MODEL / "numeric.skops"


def test_unknown_only_and_bad_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipes = write_recipes(tmp_path / "recipes.toml", [SVAMP])
    assert main(["fit", "--recipes", str(recipes), "--shipped", str(tmp_path / "s"), "--only", "nope"]) == 2
    assert "No recipe named nope" in capsys.readouterr().err
    recipes.write_text(recipes.read_text(encoding="utf-8").replace('"heldout"', '"sometimes"'), encoding="utf-8")
    assert main(["fit", "--recipes", str(recipes), "--shipped", str(tmp_path / "s")]) == 2
    assert "evaluation must be" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_shipped_numeric_calibrator_loads() -> None:
    path = SHIPPED_DIR / MODEL / "numeric.skops"
    if not path.is_file():
        pytest.skip(f"{path} is not fitted in this checkout")
    card = json.loads(card_path(path).read_text(encoding="utf-8"))
    assert card["sha256"] == sha256_of(path)
    assert (card["feature_version"], card["feature_names"]) == (FEATURE_VERSION, list(FEATURE_NAMES)), (
        "the shipped calibrator was fitted on other features than calibrators/features.py computes: "
        "bump FEATURE_VERSION if their meaning changed, and refit with `sia-monitor fit`")
    calibrator = load_calibrator(path)
    assert calibrator.info.model_id == MODEL and card["model_id"] == MODEL
    assert "numeric" in calibrator.info.answer_kinds
    trajectory = next(t for t in read_trajectories(SVAMP) if len(t.steps) >= 3)
    curve = calibrator.curve(trajectory)
    assert len(curve) == len(trajectory.steps) and all(0.0 <= p <= 1.0 for p in curve)


def _shipped_recipe_prefixes(name: str) -> np.ndarray:
    (recipe,) = [r for r in load_recipes() if r.key == f"{MODEL}/{name}"]
    traces = [t for t in read_trajectories(recipe.data[0]) if t.steps][:200]
    return PrefixTable.build(traces, hidden=recipe.features == "hidden").X


# Why a tolerance, and this one: the features are float sums whose last bits depend on the CPU's SIMD path
# (AVX2, AVX-512, AMX), and HistGradientBoosting bins plus isotonic steps turn a last-bit difference into a
# step of a few hundredths for the few prefixes that sit on a bin edge. Measured on an Intel Xeon with AMX
# against artifacts fitted on AMD EPYC: 21 of 2341 predictions differed, by at most 0.040, and the held-out
# metrics did not move at the third decimal. So: 99% of prefixes within 0.01, none off by more than 0.1, and
# every held-out metric on the card within 0.005. Exactness is tested where it can hold, in one process:
# `test_fit_is_deterministic` above refits the same recipe twice and finds identical predictions and metrics.
CLOSE, MOST, WORST, METRIC = 0.01, 0.99, 0.1, 0.005


@pytest.mark.parametrize("name", ["numeric", "choice", "numeric-hidden"])
def test_fit_reproduces_the_shipped_calibrator(name: str, tmp_path: Path) -> None:
    """The shipped artifacts are what `sia-monitor fit` makes of the committed trajectories, on any x86 CPU.

    Fails when data, features or fitting change without a refit: run `make calibrate` and commit the result.
    """
    shipped = SHIPPED_DIR / MODEL / f"{name}.skops"
    if not shipped.is_file():
        pytest.skip(f"{shipped} is not fitted in this checkout")
    assert main(["fit", "--only", f"{MODEL}/{name}", "--shipped", str(tmp_path)]) == 0
    ours, theirs = load_calibrator(tmp_path / MODEL / f"{name}.skops"), load_calibrator(shipped)
    assert theirs.info.data == ours.info.data, "the shipped calibrator was fitted on other trajectories"
    assert estimator_config(ours.info.config) == estimator_config(theirs.info.config), (
        "fit chose another model, calibration method or regularisation")
    assert ours.info.hidden == theirs.info.hidden
    X = _shipped_recipe_prefixes(name)
    diff = np.abs(ours.estimator.p_correct(X) - theirs.estimator.p_correct(X))
    assert (diff <= CLOSE).mean() >= MOST and diff.max() <= WORST, (
        f"{(diff > CLOSE).sum()} of {diff.size} predictions differ by more than {CLOSE} (max {diff.max():.3f})")
    for where in ("at_last_step", "at_50pct", "all_prefixes"):
        for metric, value in theirs.info.metrics[where].items():
            if isinstance(value, float):
                assert ours.info.metrics[where][metric] == pytest.approx(value, abs=METRIC), (where, metric)


"""Calibrators: the prefix table and its grouped split, the estimator, the metrics, and the artifact on disk."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import asdict, replace
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import calibrators.estimator as estimator_module
from calibrators import fitting
from calibrators.artifact import (
    FORMAT,
    FORMAT_VERSION,
    TRUSTED_TYPES,
    Calibrator,
    CalibratorInfo,
    CalibratorMismatchWarning,
    calibrator_for,
    card_path,
    load_calibrator,
    save_calibrator,
)
from calibrators.dataset import PrefixTable, load_graded, question_id, source_of
from calibrators.estimator import StepCalibrator
from calibrators.features import FEATURE_NAMES, FEATURE_VERSION, MONOTONIC_CST, prefix_features, trajectory_features
from calibrators.metrics import (
    auroc,
    ece_noise_floor,
    expected_calibration_error,
    prediction_rejection_ratio,
    reliability_bins,
    score_signal,
)
from sia_monitor.errors import SIAError
from sia_monitor.scoring import Prefix
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace
from sia_monitor.tasks.benchmarks import HELDOUT_FRACTION, is_heldout
from sia_monitor.tasks.prompts import probe_suffix
from sia_monitor.trajectory import Trajectory, read_trajectories, write_trajectories

REPO = Path(__file__).resolve().parents[1]
SVAMP = REPO / "calibrators" / "data" / "qwen2.5-coder-0.5b-instruct" / "svamp.jsonl.gz"
MODEL = "test-model"


@pytest.fixture(autouse=True)
def one_thread():
    """HistGradientBoosting's OpenMP threads spin-wait next to a busy CPU (see calibrators/fitting.py)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def svamp() -> list[Trajectory]:
    trajectories = list(read_trajectories(SVAMP))
    assert len(trajectories) == 1000
    return trajectories


@pytest.fixture(scope="module")
def table(svamp: list[Trajectory]) -> PrefixTable:
    return PrefixTable.build(svamp[:200])


@pytest.fixture(scope="module")
def full_table(svamp: list[Trajectory]) -> PrefixTable:
    return PrefixTable.build(svamp)


def make_info(**changes) -> CalibratorInfo:
    info = CalibratorInfo(name="numeric", model_id=MODEL, answer_kinds=["numeric"],
                          suffixes={"numeric": probe_suffix(NUMERIC)}, segmenter="line",
                          config={"model": "logistic", "method": "sigmoid"},
                          data=[{"benchmark": "svamp", "traces": 200, "accuracy": 0.4}],
                          metrics={"all_prefixes": {"auroc": 0.7, "n": 12}})
    return replace(info, **changes)


@pytest.fixture(scope="module")
def fitted(table: PrefixTable) -> Calibrator:
    with threadpool_limits(limits=1):
        estimator = StepCalibrator(model="logistic", method="sigmoid").fit(table.X, table.y, groups=table.groups)
    return Calibrator(estimator, make_info())


# -- the prefix table and its grouped split -----------------------------------------------------------------
def test_question_id() -> None:
    t = Trajectory(model_id=MODEL, question="What is 2 + 2?", answer_space=NUMERIC, suffix="", segmenter="line",
                   benchmark="svamp", item_id="chal-7")
    assert question_id(t) == "svamp:chal-7"
    anonymous = replace(t, item_id=None, benchmark=None)
    assert question_id(anonymous) == "q:" + hashlib.sha1(b"What is 2 + 2?").hexdigest()[:16]
    assert question_id(replace(anonymous, generation={"sample": 3})) == question_id(anonymous)
    assert question_id(replace(anonymous, question="What is 2 + 3?")) != question_id(anonymous)


def test_sampled_traces_share_the_question_but_not_the_report_label() -> None:
    greedy = Trajectory(model_id=MODEL, question="What is 2 + 2?", answer_space=NUMERIC, suffix="", segmenter="line",
                        benchmark="svamp", item_id="chal-7", generation={"temperature": 0.0, "sample": 0})
    sampled = replace(greedy, generation={"temperature": 0.7, "sample": 1})
    assert question_id(sampled) == question_id(greedy)
    assert (source_of(greedy), source_of(sampled)) == ("svamp", "svamp T=0.7")
    assert source_of(replace(greedy, generation={}, benchmark=None)) == "?"


def test_every_prefix_of_a_question_shares_its_group(svamp: list[Trajectory]) -> None:
    base = svamp[:200]
    resampled = [replace(t, generation={**t.generation, "sample": 1}, correct=not t.correct) for t in base[:40]]
    no_id = [replace(t, item_id=None) for t in base[40:60]]
    again = [replace(t, generation={**t.generation, "sample": 2}) for t in no_id]
    table = PrefixTable.build(base + resampled + no_id + again)
    assert len(table) == sum(len(t.steps) for t in table.trajectories)
    for i, t in enumerate(table.trajectories):
        rows = table.trace == i
        assert set(table.groups[rows].tolist()) == {question_id(t)}
        np.testing.assert_array_equal(table.k[rows], np.arange(1, len(t.steps) + 1))
        assert set(table.n_steps[rows].tolist()) == {len(t.steps)}
        assert set(table.y[rows].tolist()) == {int(t.correct)}
    # samples of one question land in one group (two samples per group for the copies)
    traces_per_group: dict[str, set[int]] = {}
    for g, trace in zip(table.groups.tolist(), table.trace.tolist(), strict=True):
        traces_per_group.setdefault(g, set()).add(trace)
    sizes = sorted(len(v) for v in traces_per_group.values())
    assert sizes.count(2) == 60 and max(sizes) == 2


def test_heldout_rows_never_split_a_group(svamp: list[Trajectory]) -> None:
    base = svamp[:200]
    resampled = [replace(t, generation={**t.generation, "sample": 1}) for t in base[:100]]
    table = PrefixTable.build(base + resampled)
    held = table.heldout_rows()
    assert held.any() and (~held).any()
    for g in set(table.groups.tolist()):
        flags = set(held[table.groups == g].tolist())
        assert flags == {is_heldout(g)}, g
    train, test = table.subset(~held), table.subset(held)
    assert not set(train.groups.tolist()) & set(test.groups.tolist())
    assert len(train) + len(test) == len(table)
    # a smaller fraction holds out a subset of the same questions (a threshold on one hash)
    small = table.heldout_rows(0.1)
    assert not (small & ~held).any() and small.sum() < held.sum()


def test_sampled_traces_train_but_are_judged_apart(svamp: list[Trajectory], fitted: Calibrator) -> None:
    base = svamp[:200]
    sampled = [replace(t, generation={**t.generation, "temperature": 0.7, "sample": 1}) for t in base[:100]]
    table = PrefixTable.build(base + sampled)
    greedy = table.greedy_rows()
    assert greedy.sum() == len(PrefixTable.build(base)) and (~greedy).sum() == len(PrefixTable.build(base[:100]))
    recipe = fitting.Recipe(name="numeric", model=MODEL, kinds=["numeric"], data=[])
    judged, p = fitting.heldout_predictions(recipe, fitted, table)
    everything, p_all = fitting.heldout_predictions(recipe, fitted, table, sampled=True)
    assert judged.greedy_rows().all() and len(judged) == (table.heldout_rows() & greedy).sum()
    assert len(everything) == table.heldout_rows().sum() > len(judged)
    np.testing.assert_array_equal(p, p_all[everything.greedy_rows()])


def test_is_heldout_is_a_stable_share(svamp: list[Trajectory]) -> None:
    ids = [question_id(t) for t in svamp]
    assert len(set(ids)) == 1000
    flags = [is_heldout(g) for g in ids]
    assert flags == [is_heldout(g) for g in reversed(ids)][::-1]  # no state, no order dependence
    assert abs(np.mean(flags) - HELDOUT_FRACTION) <= 0.08
    synthetic = [f"bench:{i}" for i in range(1000)]
    assert abs(np.mean([is_heldout(g) for g in synthetic]) - HELDOUT_FRACTION) <= 0.08
    assert not any(is_heldout(g, 0.0) for g in synthetic)
    assert all(is_heldout(g, 1.0) for g in synthetic)
    expected = int(hashlib.sha256(b"svamp:chal-1").hexdigest()[:8], 16) / 0xFFFFFFFF < HELDOUT_FRACTION
    assert is_heldout("svamp:chal-1") == expected


def test_build_skips_traces_without_steps_or_grade(svamp: list[Trajectory]) -> None:
    ungraded = replace(svamp[0], correct=None)
    stepless = replace(svamp[1], steps=[])
    table = PrefixTable.build([ungraded, stepless, svamp[2]])
    assert table.skipped == 2 and table.trajectories == [svamp[2]]
    np.testing.assert_array_equal(table.X, trajectory_features(svamp[2]))
    empty = PrefixTable.build([stepless])
    assert len(empty) == 0 and empty.X.shape == (0, len(FEATURE_NAMES))


def test_load_graded(tmp_path: Path, svamp: list[Trajectory]) -> None:
    mixed = tmp_path / "mixed.jsonl"
    write_trajectories(mixed, [svamp[0], replace(svamp[1], correct=None), svamp[2]], append=False)
    assert [t.item_id for t in load_graded([mixed])] == [svamp[0].item_id, svamp[2].item_id]
    ungraded = tmp_path / "ungraded.jsonl"
    write_trajectories(ungraded, [replace(svamp[0], correct=None)], append=False)
    with pytest.raises(SIAError, match="no graded trajectories"):
        load_graded([mixed, ungraded])


def expected_k(fraction: float, n: int) -> int:
    return max(1, math.ceil(Fraction(fraction).limit_denominator(1000) * n))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 1 / 3, 0.5, 0.75, 1.0])
def test_at_fraction_picks_one_row_per_trace(table: PrefixTable, fraction: float) -> None:
    rows = table.at_fraction(fraction)
    assert sorted(table.trace[rows].tolist()) == list(range(len(table.trajectories)))
    for row in rows:
        n = len(table.trajectories[table.trace[row]].steps)
        assert table.n_steps[row] == n
        assert table.k[row] == expected_k(fraction, n)
    if fraction == 1.0:
        np.testing.assert_array_equal(table.k[rows], table.n_steps[rows])


@pytest.mark.parametrize("k", [1, 3, 8, 20])
def test_at_step_picks_traces_that_reach_it(table: PrefixTable, k: int) -> None:
    rows = table.at_step(k)
    reaching = [i for i, t in enumerate(table.trajectories) if len(t.steps) >= k]
    assert sorted(table.trace[rows].tolist()) == reaching
    assert (table.k[rows] == k).all()
    if k == 20:
        assert 0 < len(rows) < len(table.trajectories)


# -- grouped folds ----------------------------------------------------------------------------------------------
def recording_group_kfold(record: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> type[GroupKFold]:
    class RecordingGroupKFold(GroupKFold):
        def split(self, X, y=None, groups=None):  # type: ignore[no-untyped-def]
            assert groups is not None, "GroupKFold was not given the groups"
            for train, test in super().split(X, y, groups):
                record.append((train, test, np.asarray(groups)))
                yield train, test

    return RecordingGroupKFold


def test_grouped_oof_keeps_each_question_in_one_fold(table: PrefixTable, monkeypatch: pytest.MonkeyPatch) -> None:
    outer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    fitted_groups: list[set[str]] = []

    class SpyCalibrator(StepCalibrator):
        def fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
            assert groups is not None
            fitted_groups.append(set(np.asarray(groups).tolist()))
            return super().fit(X, y, groups=groups)

    monkeypatch.setattr(fitting, "GroupKFold", recording_group_kfold(outer))
    monkeypatch.setattr(fitting, "StepCalibrator", SpyCalibrator)
    oof = fitting.grouped_oof(table, {"model": "logistic", "method": "sigmoid"}, folds=3)
    assert len(outer) == 3 and len(fitted_groups) == 3
    tested = np.zeros(len(table), dtype=int)
    for (train, test, groups), seen in zip(outer, fitted_groups, strict=True):
        assert not set(groups[train].tolist()) & set(groups[test].tolist())
        assert seen == set(table.groups[train].tolist())  # the fold's model trained on exactly its groups
        assert not seen & set(table.groups[test].tolist())
        tested[test] += 1
    assert (tested == 1).all()  # every row predicted once, out of fold
    assert oof.shape == (len(table),) and ((oof > 0) & (oof < 1)).all()


def test_step_calibrator_calibrates_with_group_folds(table: PrefixTable, monkeypatch: pytest.MonkeyPatch) -> None:
    inner: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    monkeypatch.setattr(estimator_module, "GroupKFold", recording_group_kfold(inner))
    model = StepCalibrator(model="logistic", method="isotonic", cv=4).fit(table.X, table.y, groups=table.groups)
    assert isinstance(model.calibrated_.cv, GroupKFold) and model.calibrated_.cv.n_splits == 4
    assert len(inner) == 4
    for train, test, groups in inner:
        np.testing.assert_array_equal(groups, table.groups)
        assert not set(groups[train].tolist()) & set(groups[test].tolist())


def test_step_calibrator_without_groups_uses_stratified_folds(table: PrefixTable) -> None:
    model = StepCalibrator(model="logistic", cv=3, random_state=7).fit(table.X, table.y)
    cv = model.calibrated_.cv
    assert isinstance(cv, StratifiedKFold) and not isinstance(cv, GroupKFold)
    assert cv.n_splits == 3 and cv.shuffle and cv.random_state == 7


# -- the estimator ----------------------------------------------------------------------------------------------
def test_step_calibrator_is_a_sklearn_estimator(table: PrefixTable) -> None:
    original = StepCalibrator(model="logistic", method="sigmoid", cv=4, monotonic=False, random_state=3)
    copy_ = clone(original)
    assert copy_ is not original and copy_.get_params() == original.get_params()
    assert copy_.get_params() == {"model": "logistic", "method": "sigmoid", "cv": 4, "monotonic": False,
                                  "random_state": 3, "C": 0.003, "components": None}
    with pytest.raises(NotFittedError):
        copy_.predict_proba(table.X[:3])
    copy_.fit(table.X, table.y)
    assert not hasattr(clone(copy_), "calibrated_")
    assert copy_.n_features_in_ == len(FEATURE_NAMES)
    assert copy_.score(table.X, table.y) > 0.5  # ClassifierMixin.score: accuracy

    pipeline = make_pipeline(StandardScaler(), StepCalibrator(model="logistic"))
    pipeline.fit(table.X, table.y)
    proba = pipeline.predict_proba(table.X)
    assert proba.shape == (len(table), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(pipeline.predict(table.X).tolist()) <= {0, 1}
    grouped = make_pipeline(StandardScaler(), StepCalibrator(model="logistic"))
    grouped.fit(table.X, table.y, stepcalibrator__groups=table.groups)
    assert isinstance(grouped[-1].calibrated_.cv, GroupKFold)


@pytest.mark.parametrize("model", ["logistic", "hgb"])
@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_every_configuration_fits(table: PrefixTable, model: str, method: str) -> None:
    X, y, groups = table.X[:1500], table.y[:1500], table.groups[:1500]
    calibrator = StepCalibrator(model=model, method=method).fit(X, y, groups=groups)
    proba = calibrator.predict_proba(X)
    assert proba.shape == (len(X), 2) and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(calibrator.classes_) == [0, 1]
    np.testing.assert_array_equal(calibrator.p_correct(X), proba[:, 1])
    np.testing.assert_array_equal(calibrator.predict(X), (proba[:, 1] >= 0.5).astype(int))


def test_hgb_gets_the_monotonic_constraints(table: PrefixTable) -> None:
    base = StepCalibrator(model="hgb")._base(len(FEATURE_NAMES))
    assert list(base.monotonic_cst) == list(MONOTONIC_CST)
    assert StepCalibrator(model="hgb", monotonic=False)._base(len(FEATURE_NAMES)).monotonic_cst is None
    assert StepCalibrator(model="hgb")._base(3).monotonic_cst is None  # other columns: no constraints


def test_unknown_model_or_method_is_refused(table: PrefixTable) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        StepCalibrator(model="forest").fit(table.X[:300], table.y[:300])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown method"):
        StepCalibrator(method="beta").fit(table.X[:300], table.y[:300])  # type: ignore[arg-type]


def test_heldout_auroc_beats_chance_on_real_prefixes(full_table: PrefixTable) -> None:
    held = full_table.heldout_rows()
    train, test = full_table.subset(~held), full_table.subset(held)
    assert 0.2 * len(full_table) < len(test) < 0.4 * len(full_table)
    model = StepCalibrator().fit(train.X, train.y, groups=train.groups)
    p = model.p_correct(test.X)
    assert auroc(test.y, p) > 0.6  # a sanity floor, not a benchmark
    last = test.at_fraction(1.0)
    assert auroc(test.y[last], p[last]) > 0.6


# -- metrics ------------------------------------------------------------------------------------------------------
def test_ece_is_zero_when_perfectly_calibrated() -> None:
    p = np.array([0.2] * 5 + [0.8] * 5)
    y = np.array([1, 0, 0, 0, 0] + [1, 1, 1, 0, 1])
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_two_bins_by_hand() -> None:
    p = np.array([0.2, 0.2, 0.9, 0.9])
    y = np.array([1, 0, 1, 1])
    # bin [0, .5): accuracy .5 vs confidence .2, half the samples; bin [.5, 1]: 1 vs .9, half
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)
    assert expected_calibration_error(y, p) == pytest.approx(0.2)  # 15 bins: the same two groups
    assert expected_calibration_error([1, 1], [1.0, 1.0], bins=2) == 0.0  # p = 1 falls in the last bin


def test_prediction_rejection_ratio() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(20000) < 0.4).astype(int)
    assert prediction_rejection_ratio(y, y.astype(float)) == pytest.approx(1.0)
    assert prediction_rejection_ratio(y, y + rng.random(len(y)) * 0.5) == pytest.approx(1.0)
    assert abs(prediction_rejection_ratio(y, rng.random(len(y)))) < 0.1
    assert prediction_rejection_ratio(y, -y.astype(float)) < -0.5
    noisy = y + rng.normal(0, 1.0, len(y))
    assert 0.1 < prediction_rejection_ratio(y, noisy) < 1.0
    assert math.isnan(prediction_rejection_ratio(np.ones(50), rng.random(50)))
    assert math.isnan(prediction_rejection_ratio(np.zeros(50), rng.random(50)))


def test_auroc_and_reliability_bins() -> None:
    assert math.isnan(auroc(np.ones(10), np.linspace(0, 1, 10)))
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(997), [0.0, 1.0, 1.0]])
    y = (rng.random(1000) < p).astype(int)
    bins = reliability_bins(y, p)
    assert sum(b["count"] for b in bins) == 1000
    assert all(b["count"] > 0 for b in bins) and len(bins) <= 15
    confidences = [b["confidence"] for b in bins]
    assert confidences == sorted(confidences)
    two = reliability_bins(np.array([1, 0, 1, 1]), np.array([0.2, 0.2, 0.9, 0.9]), bins=2)
    assert two == [{"confidence": 0.2, "accuracy": 0.5, "count": 2}, {"confidence": 0.9, "accuracy": 1.0, "count": 2}]


def test_score_signal_only_scores_probabilities_for_calibration() -> None:
    y = np.array([0, 1, 1, 0, 1])
    score = np.array([0.1, 0.8, 0.7, 0.4, 0.9])
    raw = score_signal(y, score, is_probability=False)
    assert raw["brier"] is None and raw["ece"] is None and raw["n"] == 5 and raw["auroc"] == 1.0
    prob = score_signal(y, score, is_probability=True)
    assert prob["brier"] == pytest.approx(np.mean((score - y) ** 2)) and prob["accuracy"] == 0.6
    assert raw["mean_p"] is None and prob["mean_p"] == pytest.approx(0.58)


def test_ece_noise_floor_is_what_perfect_calibration_measures_on_few_traces() -> None:
    p = np.random.default_rng(1).uniform(0.05, 0.95, 4000)
    few, many = ece_noise_floor(p[:400]), ece_noise_floor(p)
    assert 0 < few[0] < few[1] and 0 < many[0] < many[1]
    assert many[0] < few[0] / 2  # the noise shrinks about as 1/sqrt(n)
    assert ece_noise_floor(p[:400]) == few  # seeded
    # a constant, honest forecast of the base rate has almost no floor: one bin, sampling error only
    assert ece_noise_floor(np.full(400, 0.5))[0] == pytest.approx(0.02, abs=0.01)


# -- artifacts ------------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path: Path, fitted: Calibrator, table: PrefixTable) -> None:
    path = save_calibrator(fitted, tmp_path / "deep" / "numeric.skops")
    assert path.is_file() and card_path(path).is_file()
    loaded = load_calibrator(path)
    assert isinstance(loaded.estimator, StepCalibrator)
    np.testing.assert_array_equal(loaded.estimator.predict_proba(table.X), fitted.estimator.predict_proba(table.X))
    assert asdict(loaded.info) == asdict(fitted.info)
    card = json.loads(card_path(path).read_text(encoding="utf-8"))
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["format"] == FORMAT and card["version"] == FORMAT_VERSION and card["file"] == "numeric.skops"
    assert card["model_id"] == MODEL and card["feature_version"] == FEATURE_VERSION
    assert card["feature_names"] == list(FEATURE_NAMES)


def test_card_is_strict_json(tmp_path: Path, fitted: Calibrator) -> None:
    calibrator = Calibrator(fitted.estimator, make_info(metrics={"auroc": np.float64(0.5), "ece": float("nan")}))
    path = save_calibrator(calibrator, tmp_path / "numeric.skops")
    card = json.loads(card_path(path).read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(c))
    assert card["metrics"] == {"auroc": 0.5, "ece": None}


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("model,method", [("logistic", "isotonic"), ("logistic", "sigmoid"), ("hgb", "isotonic"),
                                          ("hgb", "sigmoid")])
def test_trusted_types_cover_every_configuration(tmp_path: Path, table: PrefixTable, model: str, method: str,
                                                 grouped: bool) -> None:
    X, y, groups = table.X[:1200], table.y[:1200], table.groups[:1200]
    estimator = StepCalibrator(model=model, method=method).fit(X, y, groups=groups if grouped else None)
    path = save_calibrator(Calibrator(estimator, make_info()), tmp_path / "c.skops")
    untrusted = set(sio.get_untrusted_types(file=path))
    assert untrusted <= set(TRUSTED_TYPES), untrusted - set(TRUSTED_TYPES)
    assert "calibrators.estimator.StepCalibrator" in untrusted
    np.testing.assert_array_equal(load_calibrator(path).estimator.p_correct(X), estimator.p_correct(X))


@pytest.mark.parametrize("damage", ["flip", "append"])
def test_tampered_file_is_refused(tmp_path: Path, fitted: Calibrator, damage: str) -> None:
    path = save_calibrator(fitted, tmp_path / "numeric.skops")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"\x00extra"
    path.write_bytes(bytes(data))
    with pytest.raises(SIAError, match="sha256"):
        load_calibrator(path)


class Smuggled:
    """Stands in for a payload that runs code when built: it records every construction."""

    built: ClassVar[list[str]] = []

    def __new__(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        cls.built.append("new")
        return super().__new__(cls)

    def __init__(self) -> None:
        self.command = "rm -rf /"

    def __setstate__(self, state) -> None:  # type: ignore[no-untyped-def]
        type(self).built.append("setstate")
        self.__dict__.update(state)


def test_untrusted_type_is_refused_before_it_is_built(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    sio.dump({"format": FORMAT, "version": FORMAT_VERSION, "info": "{}", "estimator": Smuggled()}, path)
    name = f"{Smuggled.__module__}.{Smuggled.__qualname__}"
    assert sio.get_untrusted_types(file=path) == [name]
    Smuggled.built.clear()
    with pytest.raises(SIAError, match="not trusted") as info:
        load_calibrator(path)
    assert name in str(info.value)
    assert Smuggled.built == []
    sio.load(path, trusted=[name])  # the probe does notice a construction when one happens
    assert Smuggled.built


def test_not_a_skops_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.skops"
    path.write_bytes(b"this is not a zip file at all\x00\x01\x02" * 10)
    with pytest.raises(SIAError, match="not a skops calibrator file"):
        load_calibrator(path)


def test_skops_file_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "other.skops"
    sio.dump({"format": "something/else", "version": 1}, path)
    with pytest.raises(SIAError, match="not a sia-monitor calibrator"):
        load_calibrator(path)
    sio.dump([1, 2, 3], path)
    with pytest.raises(SIAError, match="not a sia-monitor calibrator"):
        load_calibrator(path)
    sio.dump({"format": FORMAT, "version": FORMAT_VERSION + 1, "info": "{}", "estimator": None}, path)
    with pytest.raises(SIAError, match="format version"):
        load_calibrator(path)
    lr = LogisticRegression().fit([[0.0], [1.0]], [0, 1])  # trusted by skops, but not a StepCalibrator
    sio.dump({"format": FORMAT, "version": FORMAT_VERSION, "info": "{}", "estimator": lr}, path)
    with pytest.raises(SIAError, match="does not hold a StepCalibrator"):
        load_calibrator(path)


def test_malformed_info_is_refused(tmp_path: Path, fitted: Calibrator) -> None:
    path = tmp_path / "c.skops"
    sio.dump({"format": FORMAT, "version": FORMAT_VERSION, "info": '{"name": "x"}', "estimator": fitted.estimator},
             path)
    with pytest.raises(SIAError, match="malformed"):
        load_calibrator(path)


@pytest.mark.parametrize("change", [{"feature_version": FEATURE_VERSION + 1},
                                    {"feature_names": list(FEATURE_NAMES[:-1])}])
def test_other_feature_version_is_refused(tmp_path: Path, fitted: Calibrator, change: dict) -> None:
    path = save_calibrator(Calibrator(fitted.estimator, make_info(**change)), tmp_path / "old.skops")
    with pytest.raises(SIAError, match="feature version"):
        load_calibrator(path)


def test_missing_file_and_bad_card(tmp_path: Path, fitted: Calibrator) -> None:
    with pytest.raises(SIAError, match="does not exist"):
        load_calibrator(tmp_path / "nowhere.skops")
    path = save_calibrator(fitted, tmp_path / "c.skops")
    card_path(path).write_text("{not json", encoding="utf-8")
    with pytest.raises(SIAError, match="not valid JSON"):
        load_calibrator(path)
    card_path(path).unlink()  # no card: nothing to compare, the rest of the checks still apply
    assert load_calibrator(path).info.model_id == MODEL


# -- compatibility checks and lookup -------------------------------------------------------------------------------
def test_check_accepts_its_own_model_and_kind(fitted: Calibrator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.check(MODEL, NUMERIC)
        fitted.check(MODEL, NUMERIC, force=True)


def test_check_refuses_another_model(fitted: Calibrator) -> None:
    with pytest.raises(SIAError, match="--force") as info:
        fitted.check("other-model", NUMERIC)
    assert "other-model" in str(info.value) and MODEL in str(info.value)
    with pytest.warns(CalibratorMismatchWarning, match="other-model"):
        fitted.check("other-model", NUMERIC, force=True)


def test_check_refuses_another_answer_kind_or_suffix(fitted: Calibrator) -> None:
    choice = AnswerSpace("choice", labels=("A", "B", "C", "D"))
    with pytest.raises(SIAError, match="choice"):
        fitted.check(MODEL, choice)
    with pytest.warns(CalibratorMismatchWarning):
        fitted.check(MODEL, choice, force=True)
    stale = Calibrator(fitted.estimator, make_info(suffixes={"numeric": "Final answer: "}))
    with pytest.raises(SIAError, match="probe suffix"):
        stale.check(MODEL, NUMERIC)


def test_calibrator_for(tmp_path: Path, fitted: Calibrator) -> None:
    assert calibrator_for(MODEL, NUMERIC, "none") is None
    assert calibrator_for("no-such-model-anywhere", NUMERIC, "auto") is None
    path = save_calibrator(fitted, tmp_path / "mine.skops")
    chosen = calibrator_for(MODEL, NUMERIC, str(path))
    assert chosen is not None and chosen.info == fitted.info
    with pytest.raises(SIAError, match="--force"):
        calibrator_for("other-model", NUMERIC, str(path))
    with pytest.warns(CalibratorMismatchWarning):
        assert calibrator_for("other-model", NUMERIC, str(path), force=True) is not None


def test_curve_is_p_correct_after_each_step(fitted: Calibrator, svamp: list[Trajectory]) -> None:
    for trajectory in [t for t in svamp[200:260] if t.steps][:5]:
        curve = fitted.curve(trajectory)
        assert len(curve) == len(trajectory.steps)
        # one batched call: the same numbers as one call per prefix, up to the last bit of float rounding
        assert curve == pytest.approx([fitted.p_correct(Prefix.of(trajectory, k))
                                       for k in range(1, len(trajectory.steps) + 1)], rel=1e-12, abs=1e-15)
        assert all(0.0 <= p <= 1.0 for p in curve)
        np.testing.assert_allclose(curve, fitted.estimator.p_correct(trajectory_features(trajectory)))
        assert fitted.p_correct(Prefix.of(trajectory, 1)) == pytest.approx(
            fitted.estimator.p_correct(prefix_features(Prefix.of(trajectory, 1))[None, :])[0])
    stepless = copy.copy(svamp[0])
    stepless.steps = []
    assert fitted.curve(stepless) == []


def test_the_logistic_calibrator_keeps_the_sia_signs_on_near_chance_data() -> None:
    """On ARC (the 0.5B model near chance) an unconstrained logistic regression gives the top-1 probability a
    negative weight; the calibrator's logistic base model keeps every sign `MONOTONIC_CST` fixes."""
    from calibrators.dataset import PrefixTable, load_graded
    from calibrators.estimator import SignedLogisticRegression
    from calibrators.features import COLUMN, MONOTONIC_CST

    data = Path(__file__).resolve().parents[1] / "calibrators" / "data" / "qwen2.5-coder-0.5b-instruct"
    table = PrefixTable.build(load_graded([data / "arc-easy.jsonl.gz", data / "arc-challenge.jsonl.gz"]))
    X = StandardScaler().fit_transform(table.X)
    free = LogisticRegression(C=1.0, max_iter=2000).fit(X, table.y).coef_[0]
    assert free[COLUMN["top1"]] < 0  # the pattern the constraint exists for
    signed = SignedLogisticRegression(tuple(MONOTONIC_CST)).fit(X, table.y).coef_[0]
    for sign, weight in zip(MONOTONIC_CST, signed, strict=True):
        assert sign * weight >= 0 if sign else True
    unsigned = SignedLogisticRegression().fit(X, table.y).coef_[0]  # no signs: scikit-learn's own fit
    assert np.allclose(unsigned, free, atol=0.02)  # the two solvers stop at slightly different points
    model = StepCalibrator(model="logistic", method="sigmoid").fit(table.X, table.y, groups=table.groups)
    for fold in model.calibrated_.calibrated_classifiers_:
        weights = fold.estimator.named_steps["logistic"].coef_[0]
        assert all(sign * w >= 0 for sign, w in zip(MONOTONIC_CST, weights, strict=True))

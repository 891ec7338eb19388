"""A fitted calibrator on disk: a skops file, a JSON card beside it, and the checks that guard loading.

Why skops and not pickle: a pickle runs arbitrary code when loaded. skops refuses any type not on a trusted
list, and ours is explicit (`TRUSTED_TYPES`, the types a `StepCalibrator` is made of beyond skops' own
defaults), so a file that smuggles in anything else is refused before it is built. The card records the
file's sha256, which catches a file edited after it was fitted, and the facts a user checks before trusting
the numbers: model, answer type, probe suffix, feature version, training data and held-out metrics, and the
library versions it was fitted with (`fitted_with`), so a load under other versions says so (see
`CalibratorVersionWarning`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops
import skops.io as sio
from sklearn.exceptions import InconsistentVersionWarning
from threadpoolctl import threadpool_limits

from sia_monitor.errors import SIAError, SIAWarning
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.scoring import Prefix
from sia_monitor.tasks.answers import AnswerSpace
from sia_monitor.tasks.prompts import probe_suffix
from sia_monitor.trajectory import Trajectory

from .estimator import StepCalibrator
from .features import FEATURE_NAMES, FEATURE_VERSION, HiddenColumns, prefix_features

FORMAT = "sia-monitor/calibrator"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).parent / "shipped"

# Types a StepCalibrator holds that skops does not trust by default. Nothing else is ever loaded.
TRUSTED_TYPES: tuple[str, ...] = (
    "calibrators.estimator.SignedLogisticRegression",
    "calibrators.estimator.StepCalibrator",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.model_selection._split.GroupKFold",
    "sklearn.model_selection._split.StratifiedKFold",
)


class CalibratorMismatchWarning(UserWarning):
    """A calibrator is used for a model or answer type it was not fitted for (allowed with force=True)."""


class CalibratorVersionWarning(SIAWarning):
    """A calibrator is loaded under another scikit-learn or skops release series than it was fitted with.

    A warning, not a refusal: the file usually still loads and predicts, and refusing would leave the user
    with no P(correct) at all until they refit. But nothing guarantees the numbers, so the user is told once,
    with both versions and the fix (`sia-monitor fit`).
    """


# The libraries whose version decides whether a saved calibrator means what it meant when it was fitted.
VERSIONED = ("scikit-learn", "skops")


def installed_versions() -> dict[str, str]:
    """What `save_calibrator` records on the card, and what `load_calibrator` compares the card with."""
    return {"scikit-learn": sklearn.__version__, "skops": skops.__version__}


def release_series(package: str, version: str) -> tuple[str, ...]:
    """The part of a version that must match for a saved calibrator to be trusted as it is.

    scikit-learn: major.minor. Its estimators' internals (the attributes a skops file stores) change across
    minor releases, and it only promises to unpickle its own version; patch releases are bug fixes that keep
    them, so warning on those would fire on every routine upgrade and teach users to ignore the warning.
    skops: the major version, or major.minor while the major is 0 (semantic versioning lets a 0.x minor
    break). skops reads files of older protocols on purpose, so a patch or, from 1.0, a minor change is safe.
    """
    parts = version.split("+")[0].split(".")
    width = 2 if package == "scikit-learn" or parts[0] == "0" else 1
    return tuple(parts[:width])


def _version_mismatches(recorded: dict[str, str]) -> list[str]:
    installed = installed_versions()
    return [f"{package} {recorded[package]} (installed: {installed[package]})" for package in VERSIONED
            if isinstance(recorded.get(package), str)
            and release_series(package, recorded[package]) != release_series(package, installed[package])]


@dataclass
class CalibratorInfo:
    """What a calibrator was fitted for and on. `answer_kinds`: one kind, or several for a pooled one."""

    name: str
    model_id: str
    answer_kinds: list[str]
    suffixes: dict[str, str]
    segmenter: str
    config: dict[str, Any]
    data: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    feature_version: int = FEATURE_VERSION
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    hidden: dict[str, Any] | None = None  # feature version 2: the hidden-state vectors read (`HiddenColumns`)


class Calibrator:
    """A fitted `StepCalibrator` plus its `CalibratorInfo`; implements `sia_monitor.scoring.StepScorer`."""

    def __init__(self, estimator: StepCalibrator, info: CalibratorInfo) -> None:
        self.estimator = estimator
        self.info = info
        self.hidden_columns = HiddenColumns.from_json(info.hidden) if info.hidden else None

    @property
    def hidden_state_spec(self) -> HiddenStateSpec | None:
        """What the monitor must record for this calibrator (None: it reads the entropy curve only)."""
        return self.hidden_columns.spec() if self.hidden_columns else None

    def describe(self) -> str:
        """One line for the user: which calibrator is in use and what it reads."""
        reads = "the entropy curve + hidden states" if self.hidden_columns else "the entropy curve"
        return f"{self.info.model_id}/{self.info.name} ({reads})"

    def p_correct(self, prefix: Prefix) -> float:
        with threadpool_limits(limits=1, user_api="openmp"):  # see curve
            row = prefix_features(prefix, self.hidden_columns)
            return float(self.estimator.p_correct(row[None, :])[0])

    def curve(self, trajectory: Trajectory) -> list[float]:
        """P(correct) after each step of a saved trajectory (what the live monitor would have shown), in one
        call to the estimator: replaying thousands of saved samples step by step is then seconds, not minutes."""
        if not trajectory.steps:
            return []
        rows = np.stack([prefix_features(Prefix.of(trajectory, k), self.hidden_columns)
                         for k in range(1, len(trajectory.steps) + 1)])
        # One OpenMP thread: HistGradientBoosting's threads spin-wait, and next to a running model (or any busy
        # core) a prediction of a few rows took 2 s instead of 6 ms (measured on 2 cores during a collection).
        with threadpool_limits(limits=1, user_api="openmp"):
            return [float(p) for p in self.estimator.p_correct(rows)]

    def p_correct_rows(self, X: np.ndarray, hidden: HiddenColumns | None) -> np.ndarray:
        """P(correct) for rows of a `PrefixTable` (X, with its hidden columns `hidden`): an entropy-only
        calibrator reads the entropy columns of any table; a hidden-state one needs its own kind of vector."""
        if self.hidden_columns is None:
            return self.estimator.p_correct(X[:, :len(FEATURE_NAMES)])
        if hidden != self.hidden_columns:
            raise SIAError(f"Calibrator {self.describe()} reads hidden states these trajectories "
                           f"{'do not carry' if hidden is None else 'carry in another kind'}.",
                           "Judge it on trajectories collected in-process with the same --hidden-dims.")
        return self.estimator.p_correct(X)

    def check(self, model_id: str, space: AnswerSpace, force: bool = False) -> None:
        """Refuse (or with force, warn) when used for a model or answer type it was not fitted for."""
        problems = []
        if model_id != self.info.model_id:
            problems.append(f"it was fitted for model '{self.info.model_id}', not '{model_id}'")
        if space.kind not in self.info.answer_kinds:
            problems.append(f"it was fitted for {'/'.join(self.info.answer_kinds)} answers, not {space.kind}")
        elif self.info.suffixes.get(space.kind) != probe_suffix(space):
            problems.append(f"it was fitted with the probe suffix {self.info.suffixes.get(space.kind)!r}, "
                            f"the monitor now uses {probe_suffix(space)!r}")
        if not problems:
            return
        message = f"Calibrator '{self.info.name}': " + "; ".join(problems) + "."
        if not force:
            raise SIAError(message + " Its probabilities would not be calibrated here.",
                           "Fit one for this model with `sia-monitor fit`, or pass --force to use it anyway.")
        warnings.warn(message + " Using it anyway (--force): P(correct) is not calibrated for this setting.",
                      CalibratorMismatchWarning, stacklevel=2)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_calibrator(calibrator: Calibrator, path: str | Path) -> Path:
    """Write `path` (.skops) and its card (.json, with the file's sha256); return the skops path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = jsonable(asdict(calibrator.info))
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "info": json.dumps(info), "estimator": calibrator.estimator}
    # each file is written beside its old self and moved over it, so a failed or killed save leaves the old
    # calibrator whole (a new .skops with an old card is refused on load by the sha256, never used)
    partial = path.with_name(path.name + ".partial")
    sio.dump(payload, partial, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    card = {"format": FORMAT, "version": FORMAT_VERSION, "file": path.name, "sha256": sha256_of(partial),
            "fitted_with": installed_versions(), **info}
    card_partial = card_path(path).with_name(card_path(path).name + ".partial")
    card_partial.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    os.replace(card_partial, card_path(path))
    return path


def load_calibrator(path: str | Path) -> Calibrator:
    """Load a calibrator, refusing files that are missing, tampered with, untrusted or of another version."""
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"Calibrator file {path} does not exist.", "List the shipped ones with `sia-monitor models`.")
    card = card_path(path)
    fitted_with: dict[str, str] = {}
    if card.is_file():
        try:
            facts = json.loads(card.read_text(encoding="utf-8"))
            expected = facts.get("sha256")
        except (ValueError, AttributeError) as exc:
            raise SIAError(f"The card {card} is not valid JSON ({exc}).") from exc
        if isinstance(facts.get("fitted_with"), dict):
            fitted_with = facts["fitted_with"]
        if expected and expected != sha256_of(path):
            raise SIAError(f"Calibrator {path} does not match the sha256 in its card {card.name}: "
                           "the file was changed after it was fitted.", "Refit it with `sia-monitor fit`.")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise SIAError(f"{path} is not a skops calibrator file ({exc}).") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise SIAError(f"Calibrator {path} contains types that are not trusted: {', '.join(refused)}.",
                       "It was not loaded. Only load calibrators you fitted or that ship with sia-monitor.")
    try:
        # scikit-learn warns once per estimator in the file when its version differs; one warning of ours,
        # below, says it instead (with the fix). Its record of the version is kept for cards that have none.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InconsistentVersionWarning)
            payload = sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise SIAError(f"Cannot load calibrator {path}: {exc}.") from exc
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            fitted_with.setdefault("scikit-learn", warning.message.original_sklearn_version)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SIAError(f"{path} is not a sia-monitor calibrator.")
    if payload.get("version") != FORMAT_VERSION:
        raise SIAError(f"{path} has calibrator format version {payload.get('version')}; "
                       f"this sia-monitor reads version {FORMAT_VERSION}.", "Refit it with `sia-monitor fit`.")
    estimator = payload.get("estimator")
    if not isinstance(estimator, StepCalibrator):
        raise SIAError(f"{path} does not hold a StepCalibrator.")
    try:
        info = CalibratorInfo(**json.loads(payload["info"]))
        if info.hidden is not None:
            HiddenColumns.from_json(info.hidden)
    except (TypeError, ValueError, KeyError) as exc:
        raise SIAError(f"{path} has a malformed description ({exc}).") from exc
    if info.feature_version != FEATURE_VERSION:
        raise SIAError(f"Calibrator {path} was fitted on feature version {info.feature_version}; "
                       f"this sia-monitor computes version {FEATURE_VERSION}.", "Refit it with `sia-monitor fit`.")
    if tuple(info.feature_names) != FEATURE_NAMES:
        raise SIAError(f"Calibrator {path} was fitted on {len(info.feature_names)} features under feature version "
                       f"{info.feature_version}; this sia-monitor computes {len(FEATURE_NAMES)} under that version.",
                       "Refit it with `sia-monitor fit`.")
    mismatches = _version_mismatches(fitted_with)
    if mismatches:
        warnings.warn(f"Calibrator {path} was fitted with {' and '.join(mismatches)}: its P(correct) may be off "
                      "or fail to compute. Refit it with `sia-monitor fit`.", CalibratorVersionWarning, stacklevel=2)
    return Calibrator(estimator, info)


HIDDEN_SUFFIX = "-hidden"  # shipped/<model>/<kind>-hidden.skops: the feature-v2 calibrator of that answer type


def shipped_calibrator_path(model_id: str, kind: str) -> Path | None:
    """The calibrator shipped for a model and answer type, if there is one."""
    path = SHIPPED_DIR / model_id / f"{kind}.skops"
    return path if path.is_file() else None


def shipped_hidden_state_spec(model_id: str) -> HiddenStateSpec | None:
    """The hidden states a model's shipped hidden-state calibrators read (from their cards; None: none ships), so
    a server can record them from the start, before any request says which answer type it needs."""
    for path in sorted((SHIPPED_DIR / model_id).glob(f"*{HIDDEN_SUFFIX}.json")):
        try:
            hidden = json.loads(path.read_text(encoding="utf-8")).get("hidden")
        except (OSError, ValueError):
            continue
        if isinstance(hidden, dict):
            return HiddenColumns.from_json(hidden).spec()
    return None


def calibrator_for(model_id: str, space: AnswerSpace, choice: str = "auto", force: bool = False,
                   hidden_states: bool = False) -> Calibrator | None:
    """The calibrator to score a generation with: "auto", "none", or a path to a .skops file (checked against
    the model).

    "auto" takes, in order: the shipped hidden-state calibrator for this model and answer type when
    `hidden_states` (the backend records them: in-process, yes; an engine, no), the shipped entropy-only one,
    the model's pooled one, else None. A hidden-state calibrator ships only where it beat the entropy-only one
    on held-out questions (BENCHMARKS.md), so the entropy-only one is always there as the fallback.
    """
    if choice == "none":
        return None
    if choice == "auto":
        path = ((hidden_states and shipped_calibrator_path(model_id, space.kind + HIDDEN_SUFFIX))
                or shipped_calibrator_path(model_id, space.kind) or shipped_calibrator_path(model_id, "pooled"))
        if not path:
            return None
    else:
        path = Path(choice)
    calibrator = load_calibrator(path)
    calibrator.check(model_id, space, force=force)
    return calibrator

"""A fitted calibrator on disk: a skops file, a JSON card beside it, and the checks that guard loading.

Why skops and not pickle: a pickle runs arbitrary code when loaded. skops refuses any type not on a trusted
list, and ours is explicit (`TRUSTED_TYPES`, the types a `StepCalibrator` is made of beyond skops' own
defaults), so a file that smuggles in anything else is refused before it is built. The card records the
file's sha256, which catches a file edited after it was fitted, and the facts a user checks before trusting
the numbers: model, answer type, probe suffix, feature version, training data and held-out metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio

from sia_monitor.answers import AnswerSpace
from sia_monitor.errors import SIAError
from sia_monitor.prompts import probe_suffix
from sia_monitor.scoring import Prefix
from sia_monitor.trajectory import Trajectory

from .estimator import StepCalibrator
from .features import FEATURE_NAMES, FEATURE_VERSION, prefix_features

FORMAT = "sia-monitor/calibrator"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).parent / "shipped"

# Types a StepCalibrator holds that skops does not trust by default. Nothing else is ever loaded.
TRUSTED_TYPES: tuple[str, ...] = (
    "calibrators.estimator.StepCalibrator",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.model_selection._split.GroupKFold",
    "sklearn.model_selection._split.StratifiedKFold",
)


class CalibratorMismatchWarning(UserWarning):
    """A calibrator is used for a model or answer type it was not fitted for (allowed with force=True)."""


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


class Calibrator:
    """A fitted `StepCalibrator` plus its `CalibratorInfo`; implements `sia_monitor.scoring.StepScorer`."""

    def __init__(self, estimator: StepCalibrator, info: CalibratorInfo) -> None:
        self.estimator = estimator
        self.info = info

    def p_correct(self, prefix: Prefix) -> float:
        return float(self.estimator.p_correct(prefix_features(prefix)[None, :])[0])

    def curve(self, trajectory: Trajectory) -> list[float]:
        """P(correct) after each step of a saved trajectory (what the live monitor would have shown)."""
        return [self.p_correct(Prefix.of(trajectory, k)) for k in range(1, len(trajectory.steps) + 1)]

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
    sio.dump(payload, path, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    card = {"format": FORMAT, "version": FORMAT_VERSION, "file": path.name, "sha256": sha256_of(path), **info}
    card_path(path).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def load_calibrator(path: str | Path) -> Calibrator:
    """Load a calibrator, refusing files that are missing, tampered with, untrusted or of another version."""
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"Calibrator file {path} does not exist.", "List the shipped ones with `sia-monitor models`.")
    card = card_path(path)
    if card.is_file():
        try:
            expected = json.loads(card.read_text(encoding="utf-8")).get("sha256")
        except (ValueError, AttributeError) as exc:
            raise SIAError(f"The card {card} is not valid JSON ({exc}).") from exc
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
        payload = sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise SIAError(f"Cannot load calibrator {path}: {exc}.") from exc
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
    except (TypeError, ValueError, KeyError) as exc:
        raise SIAError(f"{path} has a malformed description ({exc}).") from exc
    if info.feature_version != FEATURE_VERSION:
        raise SIAError(f"Calibrator {path} was fitted on feature version {info.feature_version}; "
                       f"this sia-monitor computes version {FEATURE_VERSION}.", "Refit it with `sia-monitor fit`.")
    if tuple(info.feature_names) != FEATURE_NAMES:
        raise SIAError(f"Calibrator {path} was fitted on {len(info.feature_names)} features under feature version "
                       f"{info.feature_version}; this sia-monitor computes {len(FEATURE_NAMES)} under that version.",
                       "Refit it with `sia-monitor fit`.")
    return Calibrator(estimator, info)


def shipped_calibrator_path(model_id: str, kind: str) -> Path | None:
    """The calibrator shipped for a model and answer type, if there is one."""
    path = SHIPPED_DIR / model_id / f"{kind}.skops"
    return path if path.is_file() else None


def calibrator_for(model_id: str, space: AnswerSpace, choice: str = "auto", force: bool = False) -> Calibrator | None:
    """The calibrator to score a generation with: "auto" (the shipped one for this model and answer type,
    else the model's pooled one, else None), "none", or a path to a .skops file (checked against the model)."""
    if choice == "none":
        return None
    if choice == "auto":
        path = shipped_calibrator_path(model_id, space.kind) or shipped_calibrator_path(model_id, "pooled")
        if path is None:
            return None
    else:
        path = Path(choice)
    calibrator = load_calibrator(path)
    calibrator.check(model_id, space, force=force)
    return calibrator

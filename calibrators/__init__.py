"""Calibrators: from a partial answer-entropy curve to a calibrated P(the final answer will be correct).

- `features`: the features of a partial curve (one definition for fitting, evaluation and live scoring)
- `estimator`: `StepCalibrator`, a scikit-learn classifier with grouped, calibrated probabilities
- `dataset`: trajectories as one row per prefix, grouped by question, with the fixed held-out split
- `artifact`: skops save/load with an explicit trusted-type list, the JSON card, compatibility checks
- `fitting`: what `sia-monitor fit` does, driven by `recipes.toml`
- `metrics`, `evaluation`, `plots`, `report`: what `sia-monitor evaluate` writes

The fitted calibrators we ship live in `shipped/<model>/<name>.skops`, each with its card; the trajectories
they were fitted on in `data/<model>/<benchmark>.jsonl.gz`.
"""

from __future__ import annotations

from .artifact import Calibrator, CalibratorInfo, calibrator_for, load_calibrator, save_calibrator
from .estimator import StepCalibrator
from .features import FEATURE_NAMES, FEATURE_VERSION, prefix_features

__all__ = [
    "FEATURE_NAMES", "FEATURE_VERSION", "Calibrator", "CalibratorInfo", "StepCalibrator", "calibrator_for",
    "load_calibrator", "prefix_features", "save_calibrator",
]

"""`StepCalibrator`: a scikit-learn classifier from partial-curve features to a calibrated P(correct).

It is an ordinary estimator (`fit` / `predict_proba`, `get_params`, usable in a Pipeline or `cross_val_score`)
whose probabilities come from `CalibratedClassifierCV`. When `fit` is given `groups` (the question id of each
prefix), the calibration folds split by question, so the calibration map never sees a prefix of a question
its base model was trained on: without that, prefixes of one trace leak across folds and the map is too
confident.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from .features import MONOTONIC_CST

BaseModel = Literal["logistic", "hgb"]
Method = Literal["isotonic", "sigmoid"]


class StepCalibrator(ClassifierMixin, BaseEstimator):
    """Calibrated P(correct) from the features of `calibrators.features` (one row per prefix).

    model: "logistic" (standardised logistic regression) or "hgb" (HistGradientBoosting with the monotonic
    constraints the SIA argument fixes). method: "isotonic" or "sigmoid" calibration. cv: calibration folds.
    """

    def __init__(
        self,
        model: BaseModel = "hgb",
        method: Method = "isotonic",
        cv: int = 3,
        monotonic: bool = True,
        random_state: int = 0,
    ) -> None:
        self.model = model
        self.method = method
        self.cv = cv
        self.monotonic = monotonic
        self.random_state = random_state

    def _base(self, n_features: int) -> Any:
        if self.model == "logistic":
            return Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(C=1.0, max_iter=2000))])
        if self.model == "hgb":
            constraints = list(MONOTONIC_CST) if self.monotonic and n_features == len(MONOTONIC_CST) else None
            return HistGradientBoostingClassifier(
                learning_rate=0.05, max_iter=150, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
                monotonic_cst=constraints, early_stopping=False, random_state=self.random_state,
            )
        raise ValueError(f"unknown model {self.model!r}: use 'logistic' or 'hgb'")

    def fit(self, X: Any, y: Any, groups: Any = None) -> StepCalibrator:
        X = np.asarray(X, dtype=float)
        y = np.asarray(y).astype(int)
        if self.method not in ("isotonic", "sigmoid"):
            raise ValueError(f"unknown method {self.method!r}: use 'isotonic' or 'sigmoid'")
        if groups is not None:
            splitter: Any = GroupKFold(n_splits=self.cv)
            kwargs = {"groups": np.asarray(groups)}
        else:
            splitter = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
            kwargs = {}
        with config_context(enable_metadata_routing=True):
            self.calibrated_ = CalibratedClassifierCV(self._base(X.shape[1]), method=self.method, cv=splitter)
            self.calibrated_.fit(X, y, **kwargs)
        self.classes_ = self.calibrated_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "calibrated_")
        return self.calibrated_.predict_proba(np.asarray(X, dtype=float))

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def p_correct(self, X: Any) -> np.ndarray:
        """P(correct) per row: the probability of class 1."""
        return self.predict_proba(X)[:, list(self.classes_).index(1)]

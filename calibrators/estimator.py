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
from scipy.optimize import minimize
from scipy.special import expit
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from .features import MONOTONIC_CST

BaseModel = Literal["logistic", "hgb", "hidden"]
Method = Literal["isotonic", "sigmoid"]


class SignedLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression whose coefficients keep the signs `signs` fixes (+1: >= 0, -1: <= 0,
    0: free), fitted by L-BFGS-B with those bounds. `signs` covers the first columns; columns after them (the
    hidden-state components of a feature-v2 calibrator, which have no meaningful sign) are free.

    Why: scikit-learn's LogisticRegression has no sign constraints, and fitted on near-chance data (ARC on a
    0.5B model) it gave the top-1 probability a negative weight: a surer answer lowered P(correct). The signs
    are the ones HistGradientBoosting's `monotonic_cst` already enforces (`features.MONOTONIC_CST`), so both
    base models obey the same SIA directions. Same loss as LogisticRegression(C): C * log-loss + ||w||^2 / 2.
    """

    def __init__(self, signs: tuple[int, ...] | None = None, C: float = 1.0, max_iter: int = 2000) -> None:
        self.signs = signs
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SignedLogisticRegression:
        X = np.asarray(X, dtype=float)
        y = np.asarray(y).astype(float)
        self.classes_ = np.array([0, 1])
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        signs = np.zeros(X.shape[1]) if self.signs is None else np.asarray(self.signs)
        if len(signs) > X.shape[1]:
            raise ValueError(f"signs has {len(signs)} entries for {X.shape[1]} features")
        signs = np.concatenate([signs, np.zeros(X.shape[1] - len(signs))])
        bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in signs] + [(None, None)]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:-1], theta[-1]
            z = X @ w + b
            residual = weight * (expit(z) - y)
            value = self.C * float(np.sum(weight * (np.logaddexp(0.0, z) - y * z))) + 0.5 * float(w @ w)
            return value, np.append(self.C * (X.T @ residual) + w, self.C * residual.sum())

        result = minimize(loss, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": self.max_iter})
        self.coef_ = result.x[None, :-1]
        self.intercept_ = result.x[-1:]
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return np.asarray(X, dtype=float) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) >= 0).astype(int)


class StepCalibrator(ClassifierMixin, BaseEstimator):
    """Calibrated P(correct) from the features of `calibrators.features` (one row per prefix).

    model: "logistic" (standardised logistic regression) or "hgb" (HistGradientBoosting), both with the signs
    the SIA argument fixes (`features.MONOTONIC_CST`; `monotonic=False` drops them); or "hidden", for feature
    version 2 rows (entropy columns, then hidden-state vectors): the entropy columns standardised, the hidden
    columns standardised and reduced by PCA to `components` (None: all kept), then one signed L2 logistic
    regression with strength `C` over both. Why so regularised: the vectors are 192 numbers per step, against
    a few hundred questions, and a correctness probe that memorises questions transfers nowhere.
    method: "isotonic" or "sigmoid" calibration. cv: calibration folds.
    """

    def __init__(
        self,
        model: BaseModel = "hgb",
        method: Method = "isotonic",
        cv: int = 3,
        monotonic: bool = True,
        random_state: int = 0,
        C: float = 0.003,
        components: int | None = None,
    ) -> None:
        self.model = model
        self.method = method
        self.cv = cv
        self.monotonic = monotonic
        self.random_state = random_state
        self.C = C
        self.components = components

    def _base(self, n_features: int) -> Any:
        if self.model == "hidden":
            return self._hidden_base(n_features)
        constrained = self.monotonic and n_features == len(MONOTONIC_CST)
        if self.model == "logistic":  # scaling keeps the signs: StandardScaler divides by a positive spread
            signs = tuple(MONOTONIC_CST) if constrained else None
            return Pipeline([("scale", StandardScaler()), ("logistic", SignedLogisticRegression(signs, C=1.0))])
        if self.model == "hgb":
            constraints = list(MONOTONIC_CST) if constrained else None
            return HistGradientBoostingClassifier(
                learning_rate=0.05, max_iter=150, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
                monotonic_cst=constraints, early_stopping=False, random_state=self.random_state,
            )
        raise ValueError(f"unknown model {self.model!r}: use 'logistic', 'hgb' or 'hidden'")

    def _hidden_base(self, n_features: int) -> Pipeline:
        entropy = len(MONOTONIC_CST)
        if n_features <= entropy:
            raise ValueError(f"model 'hidden' needs hidden-state columns after the {entropy} entropy columns")
        hidden = Pipeline([("scale", StandardScaler())] + (
            [("pca", PCA(self.components, random_state=self.random_state))] if self.components else []))
        columns = ColumnTransformer([("entropy", StandardScaler(), slice(0, entropy)),
                                     ("hidden", hidden, slice(entropy, n_features))])
        signs = tuple(MONOTONIC_CST) if self.monotonic else None  # the entropy columns come first, then free ones
        return Pipeline([("features", columns), ("logistic", SignedLogisticRegression(signs, C=self.C))])

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

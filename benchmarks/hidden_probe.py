"""Does a hidden-state probe beat the entropy-only calibrator? A study on the schema-2 re-collection (issue 14).

Every prefix row of the graded trajectories gets two feature sets: today's entropy features
(`calibrators.features`, what the shipped calibrators see) and the step's recorded hidden states (the answer
slot of 3 layers, each randomly projected to 64 numbers; `probing/hidden_states.py`). Candidates, each chosen
and fitted on the training questions only (grouped CV by question, as the shipped calibrators are), then
scored on the held-out questions at 50 % and 100 % of each trace's steps:

- `entropy`: the shipped recipe's model selection (HGB or logistic, isotonic or sigmoid) on entropy features;
- `hidden`: standardised hidden states -> PCA (32/64/128, or all 192) -> L2 logistic regression (C chosen by
  grouped CV);
- `both`: entropy features + the same PCA of the hidden states -> L2 logistic regression;
- each of the last two also with a sigmoid and an isotonic recalibration fitted on its grouped out-of-fold
  scores.

    python benchmarks/hidden_probe.py                                   # SVAMP, about 2 minutes
    python benchmarks/hidden_probe.py --data calibrators/data/qwen2.5-coder-0.5b-instruct/hidden/gsm8k.jsonl.gz

Writes benchmarks/results/hidden_probe.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from calibrators.dataset import PrefixTable, load_graded
from calibrators.estimator import StepCalibrator
from calibrators.fitting import select_config
from calibrators.metrics import auroc, expected_calibration_error
from sia_monitor.machine import cpu_name

console = Console()
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "calibrators" / "data" / "qwen2.5-coder-0.5b-instruct" / "hidden" / "svamp.jsonl.gz"
FOLDS = 5


def _shown(path: Path) -> str:
    """A data file as the report names it: relative to the repository when it is inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def hidden_matrix(table: PrefixTable) -> np.ndarray:
    """Each row's hidden states at its last step, layers concatenated."""
    rows = []
    for trace, k in zip(table.trace, table.k, strict=True):
        hidden = table.trajectories[trace].steps[k - 1].hidden
        if hidden is None:
            raise SystemExit("these trajectories have no hidden states (schema-2 collection needed)")
        rows.append(np.concatenate(hidden.values()))
    return np.asarray(rows, dtype=float)


def logistic(components: int | None, c: float, entropy_columns: int) -> Pipeline:
    """PCA of the hidden columns (after the first `entropy_columns`; None: all of them, scaled), scaled entropy
    columns, L2 logistic."""
    steps: list[tuple[str, object]] = [("scale", StandardScaler())]
    if components is not None:
        steps.append(("pca", PCA(components, random_state=0)))
    hidden = Pipeline(steps)
    parts = [("hidden", hidden, slice(entropy_columns, None))]
    if entropy_columns:
        parts.append(("entropy", StandardScaler(), slice(0, entropy_columns)))
    return Pipeline([("features", ColumnTransformer(parts)),
                     ("model", LogisticRegression(C=c, max_iter=2000))])


def choose(X: np.ndarray, y: np.ndarray, groups: np.ndarray, entropy_columns: int) -> tuple[dict[str, Any], list]:
    """The (components, C) with the lowest grouped-CV log loss on the training rows."""
    scores = []
    for components in (32, 64, 128, None):
        for c in (0.0003, 0.001, 0.003, 0.01):
            oof = np.zeros(len(y))
            for train, test in GroupKFold(n_splits=FOLDS).split(X, y, groups):
                model = logistic(components, c, entropy_columns).fit(X[train], y[train])
                oof[test] = model.predict_proba(X[test])[:, 1]
            clipped = np.clip(oof, 1e-6, 1 - 1e-6)
            loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
            scores.append({"components": components, "C": c, "log_loss": round(loss, 4),
                           "auroc": round(auroc(y, oof), 4)})
    best = min(scores, key=lambda s: s["log_loss"])
    return {"components": best["components"], "C": best["C"]}, scores


def recalibrations(X: np.ndarray, y: np.ndarray, groups: np.ndarray, config: dict[str, Any], columns: int
                   ) -> dict[str, Any]:
    """A sigmoid and an isotonic recalibration of the chosen model's score, fitted on its grouped out-of-fold
    scores over the training rows; each maps a decision score to P(correct)."""
    oof = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=FOLDS).split(X, y, groups):
        model = logistic(config["components"], config["C"], columns).fit(X[train], y[train])
        oof[test] = model.decision_function(X[test])
    sigmoid = LogisticRegression(C=1e6).fit(oof[:, None], y)
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof, y)
    return {"sigmoid": lambda score: sigmoid.predict_proba(score[:, None])[:, 1], "isotonic": isotonic.predict}


def scored(table: PrefixTable, test: np.ndarray, p: np.ndarray) -> dict[str, dict[str, float]]:
    held = table.subset(test)
    out = {}
    for fraction in (0.5, 1.0):
        rows = held.at_fraction(fraction)
        out[f"{fraction:.0%}"] = {"auroc": round(auroc(held.y[rows], p[rows]), 4),
                                  "ece": round(expected_calibration_error(held.y[rows], p[rows]), 4),
                                  "n": int(len(rows))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=[DEFAULT_DATA])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hidden_probe.json")
    args = parser.parse_args()

    table = PrefixTable.build(load_graded(args.data))
    hidden = hidden_matrix(table)
    held = table.heldout_rows()
    train = ~held
    results: dict[str, object] = {"machine": cpu_name(), "data": [_shown(p) for p in args.data],
                                  "traces": len(table.trajectories), "prefixes": len(table),
                                  "accuracy": round(float(np.mean([t.correct for t in table.trajectories])), 3)}
    console.print("entropy-only: selecting the shipped recipe's configuration")
    selection = select_config(table.subset(train))
    entropy_model = StepCalibrator(**selection.config).fit(table.X[train], table.y[train], groups=table.groups[train])
    p_entropy = entropy_model.p_correct(table.X[held])
    candidates = {"entropy": (selection.config, p_entropy)}
    for name, X in (("hidden", hidden), ("both", np.hstack([table.X, hidden]))):
        console.print(f"{name}: grouped CV over PCA size and C")
        columns = 0 if name == "hidden" else table.X.shape[1]
        config, _ = choose(X[train], table.y[train], table.groups[train], columns)
        model = logistic(config["components"], config["C"], columns).fit(X[train], table.y[train])
        candidates[name] = (config, model.predict_proba(X[held])[:, 1])
        score = model.decision_function(X[held])
        for method, mapping in recalibrations(X[train], table.y[train], table.groups[train], config, columns).items():
            candidates[f"{name} + {method}"] = (config, mapping(score))
    results["heldout"] = {name: {"config": config, **scored(table, held, p)} for name, (config, p) in
                          candidates.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"{', '.join(results['data'])}: {results['traces']} traces, accuracy {results['accuracy']}, "
             f"held-out questions only, on {cpu_name()}.", "",
             "| features | model | AUROC 50 % | AUROC last | ECE 50 % | ECE last |", "|---|---|---|---|---|---|"]
    for name, entry in results["heldout"].items():  # type: ignore[union-attr]
        config = entry["config"]
        model = (f"{config['model']} + {config['method']}" if name == "entropy" else
                 f"{'PCA ' + str(config['components']) if config['components'] else 'all 192'} + logistic "
                 f"C={config['C']}" + "".join(f" + {m}" for m in ("sigmoid", "isotonic") if m in name))
        lines.append(f"| {name} | {model} | {entry['50%']['auroc']:.3f} | {entry['100%']['auroc']:.3f} | "
                     f"{entry['50%']['ece']:.3f} | {entry['100%']['ece']:.3f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

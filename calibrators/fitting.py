"""Fit the calibrators listed in `recipes.toml`: choose a model by grouped CV, fit, save with a card.

Model choice happens on the training questions only (grouped K-fold by question id): every combination of
base model (logistic, HistGradientBoosting) and calibration (isotonic, sigmoid) is scored by out-of-fold Brier
score, and the lowest wins. The held-out questions are touched once, by `evaluation`, after fitting.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import AnswerSpace
from sia_monitor.tasks.benchmarks import HELDOUT_FRACTION
from sia_monitor.tasks.prompts import probe_suffix

from .artifact import SHIPPED_DIR, Calibrator, CalibratorInfo, load_calibrator, save_calibrator
from .dataset import PrefixTable, hidden_columns_of, load_graded, source_of
from .estimator import StepCalibrator
from .metrics import summary_metrics

RECIPES = Path(__file__).parent / "recipes.toml"
CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {"model": m, "method": c} for m, c in product(("logistic", "hgb"), ("isotonic", "sigmoid"))
)
# Feature version 2 (entropy + hidden states): PCA size and regularisation strength, chosen the same way, with
# the calibration method. The grid is the corner of benchmarks/hidden_probe.py's wider search (PCA 32-128 or
# none, C 0.0003-0.01) where its choices fell on SVAMP and on SVAMP + GSM8K (C 0.001-0.003); kept small because
# each candidate costs nine fits of a 218-column model, and the transfer study refits dozens.
HIDDEN_CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {"model": "hidden", "method": m, "components": k, "C": c}
    for m, k, c in product(("sigmoid", "isotonic"), (32, None), (0.001, 0.003))
)
ESTIMATOR_KEYS = ("model", "method", "components", "C")
FEATURE_SETS = ("entropy", "hidden")
SELECTION_FOLDS = 3
# ONE_THREAD: HistGradientBoosting's OpenMP threads spin-wait; next to a running model (collection, the TUI)
# they slowed fitting 50x on 2 cores. These data fit in seconds on one thread, so fitting always uses one.
EVALUATION_FOLDS = 5
Progress = Callable[[str], None]


@dataclass
class Recipe:
    """One calibrator to fit: for which model and answer kinds, on which trajectory files, evaluated how."""

    name: str
    model: str
    kinds: list[str]
    data: list[Path]
    evaluation: str = "heldout"
    config_from: str | None = None
    ship: bool = True  # False: fitted for the report only, not written to shipped/
    features: str = "entropy"  # "hidden": feature version 2's hidden-state columns too (schema-2 trajectories)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.name}"

    def artifact(self, shipped_dir: Path = SHIPPED_DIR) -> Path:
        return shipped_dir / self.model / f"{self.name}.skops"


def load_recipes(path: str | Path = RECIPES) -> list[Recipe]:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SIAError(f"Cannot read calibrator recipes {path}: {exc}.") from exc
    recipes = []
    for entry in raw.get("calibrator", []):
        try:
            recipe = Recipe(**{**entry, "data": [path.parent / p for p in entry["data"]]})
        except (TypeError, KeyError) as exc:
            raise SIAError(f"{path}: malformed [[calibrator]] entry {entry.get('name')!r} ({exc}).") from exc
        if recipe.evaluation not in ("heldout", "cv"):
            raise SIAError(f"{path}: evaluation must be 'heldout' or 'cv', not {recipe.evaluation!r}.")
        if recipe.features not in FEATURE_SETS:
            raise SIAError(f"{path}: features must be one of {', '.join(FEATURE_SETS)}, not {recipe.features!r}.")
        recipes.append(recipe)
    return recipes


def select_recipes(path: str | Path | None = None, only: list[str] | None = None) -> list[Recipe]:
    """The recipes of `path` (default: the shipped recipes.toml), or only those named in `only` (by name or
    model/name); a name that matches none is refused with the list of names."""
    recipes = load_recipes(path or RECIPES)
    if not only:
        return recipes
    wanted = [r for r in recipes if r.name in only or r.key in only]
    unknown = set(only) - {r.name for r in wanted} - {r.key for r in wanted}
    if unknown:
        raise SIAError(f"No recipe named {', '.join(sorted(unknown))}.", f"Recipes: {', '.join(r.key for r in recipes)}.")
    return wanted


def estimator_config(config: dict[str, Any]) -> dict[str, Any]:
    """The StepCalibrator parameters of a chosen configuration (a card's `config` also holds the CV scores)."""
    return {key: config[key] for key in ESTIMATOR_KEYS if key in config}


def recipe_for_data(data: list[Path], name: str, evaluation: str = "cv", features: str = "entropy") -> Recipe:
    """A recipe for a user's own trajectory files (`sia-monitor fit --data`): the model and answer types are
    read from the records, so a file of another model or a mix of models is refused before any fitting.

    Why grouped CV by default: a user's file is usually small, and the card's metrics should use every
    question; 'heldout' uses the fixed split instead (fit outside it, judge on it)."""
    missing = [str(p) for p in data if not Path(p).is_file()]
    if missing:
        raise SIAError(f"No such trajectory file: {', '.join(missing)}.",
                       "Collect one with `sia-monitor collect --dataset FILE --out FILE.jsonl.gz`.")
    trajectories = load_graded(data)
    models = sorted({t.model_id for t in trajectories})
    if len(models) != 1:
        raise SIAError(f"The trajectories are of {len(models)} models ({', '.join(models) or 'none'}); a calibrator "
                       "is fitted for one.", "Pass the files of one model.")
    kinds = sorted({t.answer_space.kind for t in trajectories})
    stepped = [t for t in trajectories if t.steps]
    right = {(t.benchmark, t.item_id) for t in stepped if t.correct}
    wrong = {(t.benchmark, t.item_id) for t in stepped if not t.correct}
    if min(len(right), len(wrong)) < 2 * EVALUATION_FOLDS:
        raise SIAError(f"Too little to fit on: {len(right)} questions answered right and {len(wrong)} wrong (with "
                       "reasoning steps).", f"A calibrator needs at least {2 * EVALUATION_FOLDS} of each, so that "
                       "every cross-validation fold sees both (a few hundred questions for a useful one: "
                       "benchmarks/own_data.py measures how many).")
    recipe = Recipe(name=name, model=models[0], kinds=kinds, data=[Path(p) for p in data], evaluation=evaluation,
                    features=features)
    if features == "hidden":
        hidden_columns_of(stepped)  # refused here, before any fitting, when a step has none
    return recipe


def recipe_table(recipe: Recipe) -> PrefixTable:
    missing = [str(p) for p in recipe.data if not p.is_file()]
    if missing:
        raise SIAError(f"Calibrator '{recipe.key}' needs trajectory files that are missing: {', '.join(missing)}.",
                       "They are committed under calibrators/data in the repository; or collect them with "
                       "`sia-monitor collect`.")
    return PrefixTable.build(load_graded(recipe.data), hidden=recipe.features == "hidden")


def grouped_oof(table: PrefixTable, config: dict[str, Any], folds: int) -> np.ndarray:
    """Out-of-fold P(correct) for every row, folds split by question."""
    oof = np.zeros(len(table))
    for train, test in GroupKFold(n_splits=folds).split(table.X, table.y, table.groups):
        model = StepCalibrator(**estimator_config(config)).fit(table.X[train], table.y[train], groups=table.groups[train])
        oof[test] = model.p_correct(table.X[test])
    return oof


@dataclass
class Selection:
    """Which configuration won on the training questions, and the CV scores of every candidate."""

    config: dict[str, Any]
    scores: list[dict[str, Any]] = field(default_factory=list)


def candidates_for(table: PrefixTable) -> tuple[dict[str, Any], ...]:
    return HIDDEN_CANDIDATES if table.hidden is not None else CANDIDATES


def describe_config(config: dict[str, Any]) -> str:
    """'hgb + isotonic', or 'hidden (PCA 32, C=0.003) + sigmoid'."""
    if config["model"] != "hidden":
        return f"{config['model']} + {config['method']}"
    reduced = f"PCA {config['components']}" if config.get("components") else "all dims"
    return f"hidden ({reduced}, C={config['C']:g}) + {config['method']}"


def select_config(table: PrefixTable, progress: Progress | None = None) -> Selection:
    """The candidate with the lowest grouped out-of-fold Brier score on `table` (training questions only)."""
    scores = []
    for config in candidates_for(table):
        if progress:
            progress(f"CV {describe_config(config)}")
        oof = grouped_oof(table, config, SELECTION_FOLDS)
        scores.append({**config, "brier": float(brier_score_loss(table.y, oof)),
                       "auroc": float(roc_auc_score(table.y, oof))})
    best = min(scores, key=lambda s: s["brier"])
    return Selection(estimator_config(best), scores)


def training_rows(recipe: Recipe, table: PrefixTable) -> np.ndarray:
    """Rows the shipped calibrator is fitted on: outside the held-out split, or everything for 'cv' recipes."""
    return ~table.heldout_rows() if recipe.evaluation == "heldout" else np.ones(len(table), dtype=bool)


def fit_recipe(
    recipe: Recipe,
    selections: dict[str, Selection],
    progress: Progress | None = None,
    shipped_dir: Path = SHIPPED_DIR,
) -> tuple[Calibrator, PrefixTable, Selection]:
    """Fit one recipe (choosing its configuration, or borrowing the one chosen for `config_from`)."""
    table = recipe_table(recipe)
    train = table.subset(training_rows(recipe, table))
    if recipe.config_from:
        selection = _borrowed_selection(recipe, selections, shipped_dir)
    else:
        selection = select_config(train, progress)
    if progress:
        progress(f"fit {describe_config(selection.config)}")
    estimator = StepCalibrator(**estimator_config(selection.config)).fit(train.X, train.y, groups=train.groups)
    trajectories = train.trajectories
    info = CalibratorInfo(
        name=recipe.name,
        model_id=recipe.model,
        answer_kinds=list(recipe.kinds),
        suffixes={kind: probe_suffix(_space(kind)) for kind in recipe.kinds},
        segmenter=trajectories[0].segmenter if trajectories else "line",
        config={**selection.config, "selection": selection.scores, "selection_folds": SELECTION_FOLDS},
        data=_describe(recipe, table),
        metrics={},
        hidden=table.hidden.to_json() if table.hidden else None,
    )
    info.config["trained_on"] = {
        "split": f"questions outside the {HELDOUT_FRACTION:.0%} held-out split" if recipe.evaluation == "heldout"
        else "all questions (report: grouped 5-fold CV)",
        "traces": len(set(train.trace.tolist())),
        "prefixes": len(train),
    }
    return Calibrator(estimator, info), table, selection


def _borrowed_selection(recipe: Recipe, selections: dict[str, Selection], shipped_dir: Path) -> Selection:
    """The configuration chosen for `recipe.config_from`: fitted earlier in this run, or read from its artifact."""
    source = recipe.config_from or ""
    if source in selections:
        return Selection(selections[source].config, [])
    path = shipped_dir / f"{source}.skops"
    if not path.is_file():
        raise SIAError(f"Calibrator '{recipe.key}' takes its configuration from '{source}', which is neither "
                       "fitted in this run nor shipped.", f"Fit '{source}' first.")
    return Selection(estimator_config(load_calibrator(path).info.config), [])


def _space(kind: str) -> AnswerSpace:
    return AnswerSpace(kind, labels=("A", "B")) if kind == "choice" else AnswerSpace(kind)  # type: ignore[arg-type]


def _describe(recipe: Recipe, table: PrefixTable) -> list[dict[str, Any]]:
    """Per benchmark in the data: traces with steps and their accuracy (the card's "data")."""
    by_benchmark: dict[str, list[bool]] = {}
    for t in table.trajectories:
        by_benchmark.setdefault(source_of(t), []).append(bool(t.correct))
    return [{"benchmark": name, "traces": len(flags), "accuracy": round(sum(flags) / len(flags), 4),
             "files": [p.name for p in recipe.data]} for name, flags in sorted(by_benchmark.items())]


def heldout_predictions(
    recipe: Recipe, calibrator: Calibrator, table: PrefixTable, sampled: bool = False
) -> tuple[PrefixTable, np.ndarray]:
    """The rows a recipe is judged on and P(correct) for each, never from a model that saw their question.

    'heldout': the shipped calibrator on the held-out questions; 'external': the calibrator on every row of
    a user's files (`evaluate --calibrator --data`). 'cv': grouped 5-fold out-of-fold predictions
    with the calibrator's configuration (the shipped one saw every question, so it cannot be judged on them).
    Sampled traces are left out unless `sampled` (`dataset.is_sampled`).
    """
    if recipe.evaluation == "heldout":
        test = table.subset(table.heldout_rows())
        p = calibrator.p_correct_rows(test.X, test.hidden)
    elif recipe.evaluation == "external":  # `evaluate --calibrator --data`: a calibrator on other questions
        test, p = table, calibrator.p_correct_rows(table.X, table.hidden)
    else:
        test, p = table, grouped_oof(table, estimator_config(calibrator.info.config), EVALUATION_FOLDS)
    if sampled:
        return test, p
    greedy = test.greedy_rows()
    return test.subset(greedy), p[greedy]


def fit_all(
    recipes: list[Recipe], progress: Progress | None = None, save: bool = True, shipped_dir: Path = SHIPPED_DIR
) -> dict[str, tuple[Calibrator, PrefixTable, Selection]]:
    """Fit every recipe in order, put its held-out summary on its card and (with `save`) write it to
    <shipped_dir>/<model>/<name>.skops (by default the calibrators that ship with sia-monitor)."""
    fitted: dict[str, tuple[Calibrator, PrefixTable, Selection]] = {}
    with threadpool_limits(limits=1):  # see ONE_THREAD
        for recipe in recipes:
            say = (lambda m, r=recipe: progress(f"{r.key}: {m}")) if progress else None
            calibrator, table, selection = fit_recipe(recipe, {k: v[2] for k, v in fitted.items()}, say, shipped_dir)
            test, p = heldout_predictions(recipe, calibrator, table)
            calibrator.info.metrics = summary_metrics(test, p)
            fitted[recipe.key] = (calibrator, table, selection)
            if save and recipe.ship:
                save_calibrator(calibrator, recipe.artifact(shipped_dir))
    return fitted

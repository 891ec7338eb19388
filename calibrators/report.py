"""`sia-monitor evaluate`: compute the calibration report from the shipped calibrators and committed data.

Writes report.json (every number), report.md (the tables) and three PNGs into one folder, and can splice the
tables into BENCHMARKS.md between `<!-- calibration:begin -->` and `<!-- calibration:end -->`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sia_monitor.errors import SIAError
from sia_monitor.machine import cpu_name

from . import plots
from .artifact import HIDDEN_SUFFIX, SHIPPED_DIR, Calibrator, jsonable, load_calibrator
from .dataset import PrefixTable, source_of
from .estimator import StepCalibrator
from .evaluation import (
    BASELINES,
    FRACTIONS,
    RecipeReport,
    describe_data,
    position_rows,
    positions,
    report_recipe,
    sia_signatures,
    transfer_rows,
)
from .features import COLUMN
from .fitting import (
    EVALUATION_FOLDS,
    Recipe,
    describe_config,
    estimator_config,
    fit_recipe,
    grouped_oof,
    load_recipes,
    recipe_table,
)
from .metrics import score_signal

DEFAULT_OUT = Path("benchmarks/results/calibration")
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"
QUESTION_FEATURES = ("question_words", "question_numbers")
TARGETS = {"auroc_last": 0.82, "auroc_50": 0.65, "ece": 0.05, "margin": 0.03}
# A hidden-state calibrator (feature version 2) must do better than the entropy-only one to ship (issue 14).
# (the same ECE target; AUROC targets per answer kind: the issue sets no halfway one for multiple choice)
HIDDEN_GAIN_TARGET = 0.04
HIDDEN_AUROC_TARGETS = {"numeric": {"auroc_last": 0.88, "auroc_50": 0.82}, "choice": {"auroc_last": 0.70}}
Progress = Callable[[str], None]


def _load(recipe: Recipe, shipped_dir: Path) -> Calibrator:
    if not recipe.ship:  # report-only recipes are refitted here (seconds); they borrow a shipped configuration
        return fit_recipe(recipe, {}, shipped_dir=shipped_dir)[0]
    path = recipe.artifact(shipped_dir)
    if not path.is_file():
        raise SIAError(f"No fitted calibrator for '{recipe.key}' at {path}.", "Run `sia-monitor fit` first.")
    return load_calibrator(path)


def ablation_without_question(recipe: Recipe, calibrator: Calibrator, table: PrefixTable) -> RecipeReport:
    """The same recipe with the question features held constant: what the entropy curve alone achieves."""
    blind = table.X.copy()
    for name in QUESTION_FEATURES:
        blind[:, COLUMN[name]] = 0.0
    masked = dataclasses.replace(table, X=blind)
    held, greedy = masked.heldout_rows(), masked.greedy_rows()
    config = estimator_config(calibrator.info.config)
    if recipe.evaluation == "heldout":
        train, test = masked.subset(~held), masked.subset(held & greedy)
        p = StepCalibrator(**config).fit(train.X, train.y, groups=train.groups).p_correct(test.X)
    else:
        test, p = masked.subset(greedy), grouped_oof(masked, config, EVALUATION_FOLDS)[greedy]
    report = RecipeReport(recipe.key + " (no question features)", recipe.evaluation, test, p)
    report.rows = position_rows(test, p)
    return report


def all_questions_cv(calibrator: Calibrator, table: PrefixTable) -> dict[str, Any]:
    """Grouped 5-fold out-of-fold P(correct) over every question, with the configuration `fit` chose.

    A second estimate next to the held-out one: five times the questions, so less luck of the split. The
    configuration was chosen on the training questions only; nothing else is tuned here.
    """
    config = estimator_config(calibrator.info.config)
    greedy = table.greedy_rows()
    p = grouped_oof(table, config, EVALUATION_FOLDS)[greedy]
    judged = table.subset(greedy)
    rows = {label: score_signal(judged.y[index], p[index], is_probability=True) for label, index in positions(judged)}
    return {"traces": len(set(judged.trace.tolist())), "positions": rows,
            "all_prefixes": score_signal(judged.y, p, is_probability=True)}


def same_questions(small: PrefixTable, large: PrefixTable, config: dict[str, Any]) -> dict[str, Any] | None:
    """Both models on the questions both answered greedily, each with grouped-CV P(correct) (None: too few)."""
    small, large = small.subset(small.greedy_rows()), large.subset(large.greedy_rows())
    shared = list(set(large.groups.tolist()) & set(small.groups.tolist()))
    small = small.subset(np.isin(small.groups, shared))
    large = large.subset(np.isin(large.groups, shared))
    if len(shared) < 2 * EVALUATION_FOLDS:
        return None
    out: dict[str, Any] = {}
    for label, table in (("small", small), ("large", large)):
        p = grouped_oof(table, config, EVALUATION_FOLDS)
        last = table.at_fraction(1.0)
        out[label] = {"traces": len(set(table.trace.tolist())), "accuracy": float(table.y[last].mean()),
                      "positions": position_rows(table, p)}
    return out


def entropy_twin(recipe: Recipe) -> str | None:
    """The entropy-only calibrator a hidden-state one is measured against: same model, name without -hidden."""
    if recipe.features != "hidden" or not recipe.name.endswith(HIDDEN_SUFFIX):
        return None
    return f"{recipe.model}/{recipe.name.removesuffix(HIDDEN_SUFFIX)}"


def by_key_of(recipes: list[Recipe], key: str | None) -> Recipe | None:
    return next((r for r in recipes if r.key == key), None)


def gain_over_entropy(report: RecipeReport, plain: Calibrator, plain_key: str) -> dict[str, Any]:
    """The hidden-state calibrator against its entropy-only twin on exactly the rows it was judged on."""
    p_plain = plain.p_correct_rows(report.table.X, report.table.hidden)
    rows = {}
    for label, index in positions(report.table):
        ours = score_signal(report.table.y[index], report.p[index], is_probability=True)
        theirs = score_signal(report.table.y[index], p_plain[index], is_probability=True)
        rows[label] = {"n": len(index), "hidden": ours, "entropy": theirs,
                       "gain": ours["auroc"] - theirs["auroc"]}
    return {"entropy_calibrator": plain_key, "positions": rows}


def _identity(t: Any) -> tuple[Any, ...]:
    """One trace per question and sample: recipes share files, and a question collected again (with hidden
    states, another seed from a resumed batch) is the same greedy question, so the data table counts it once."""
    return (t.model_id, t.benchmark, t.item_id, t.question, t.generation.get("sample"), t.generation.get("temperature"))


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_report(
    recipes: list[Recipe] | None = None,
    shipped_dir: Path = SHIPPED_DIR,
    progress: Progress | None = None,
    given: dict[str, Calibrator] | None = None,
) -> dict[str, Any]:
    """Everything `evaluate` writes, as one JSON-able dict plus the RecipeReports the plots need. `given`:
    calibrators by recipe key, used instead of the shipped ones (`evaluate --calibrator FILE --data ...`)."""
    with threadpool_limits(limits=1):  # see fitting.ONE_THREAD
        return _build_report(recipes if recipes is not None else load_recipes(), shipped_dir, progress, given or {})


def external_recipe(calibrator: Calibrator, data: list[Path]) -> Recipe:
    """A calibrator judged on a user's own trajectory files, every row of them (evaluation 'external')."""
    missing = [str(p) for p in data if not Path(p).is_file()]
    if missing:
        raise SIAError(f"No such trajectory file: {', '.join(missing)}.")
    return Recipe(name=calibrator.info.name, model=calibrator.info.model_id, kinds=list(calibrator.info.answer_kinds),
                  data=[Path(p) for p in data], evaluation="external",
                  features="hidden" if calibrator.hidden_columns else "entropy")


def _build_report(recipes: list[Recipe], shipped_dir: Path, progress: Progress | None,
                  given: dict[str, Calibrator]) -> dict[str, Any]:
    say = progress or (lambda message: None)
    tables: dict[str, PrefixTable] = {}
    calibrators: dict[str, Calibrator] = {}
    reports: dict[str, RecipeReport] = {}
    for recipe in recipes:
        say(f"evaluating {recipe.key}")
        tables[recipe.key] = recipe_table(recipe)
        calibrators[recipe.key] = given[recipe.key] if recipe.key in given else _load(recipe, shipped_dir)
        reports[recipe.key] = report_recipe(recipe, calibrators[recipe.key], tables[recipe.key])
    by_key = {r.key: r for r in recipes}

    say("transfer and ablations")
    transfer = []
    entropy_only = [r for r in recipes if r.features == "entropy"]  # hidden-state ones are compared below
    for recipe in entropy_only:
        if recipe.name != "pooled" or recipe.evaluation != "heldout":
            continue
        for other in entropy_only:
            if other.model == recipe.model and other.name != "pooled" and other.evaluation == "heldout":
                test = reports[other.key].table
                transfer.append({"on": other.key, **transfer_rows(calibrators[recipe.key], test, recipe.key)})
                transfer.append({"on": other.key, **transfer_rows(calibrators[other.key], test, other.key)})
                for third in entropy_only:
                    if third.model == recipe.model and third.name not in ("pooled", other.name) \
                            and third.evaluation == "heldout":
                        transfer.append({"on": other.key, **transfer_rows(calibrators[third.key], test, third.key)})
    ablations = [ablation_without_question(r, calibrators[r.key], tables[r.key]) for r in recipes
                 if r.name != "pooled" and r.evaluation != "external"]
    cross_validated = {r.key: all_questions_cv(calibrators[r.key], tables[r.key]) for r in recipes
                       if r.evaluation == "heldout"}
    hidden_gain = {}
    for recipe in recipes:
        plain = by_key_of(recipes, entropy_twin(recipe))
        if plain is not None:
            hidden_gain[recipe.key] = gain_over_entropy(reports[recipe.key], calibrators[plain.key], plain.key)

    say("SIA signatures")
    unique = {_identity(t): t for table in tables.values() for t in table.trajectories}  # recipes share files
    all_traces = list(unique.values())
    signature_groups: dict[str, list[Any]] = {}
    for t in all_traces:
        signature_groups.setdefault(f"{t.model_id} / {source_of(t)}", []).append(t)
    signatures = {name: sia_signatures(ts) for name, ts in sorted(signature_groups.items())}

    comparisons = {}
    for recipe in recipes:
        if recipe.evaluation != "cv" or not recipe.config_from:
            continue
        source = next((r for r in recipes if r.key == recipe.config_from), None)
        if source is None:
            continue
        say(f"{source.model} vs {recipe.model} on the same questions")
        config = estimator_config(calibrators[recipe.key].info.config)
        both = same_questions(tables[source.key], tables[recipe.key], config)
        if both is not None:
            large = tables[recipe.key]
            transferred = calibrators[source.key].p_correct_rows(large.X, large.hidden)
            both["small_calibrator_on_large"] = {label: score_signal(large.y[index], transferred[index], True)
                                                 for label, index in positions(large)}
            comparisons[recipe.key] = {"small_model": source.model, "large_model": recipe.model, **both}

    result = {
        "date": date.today().isoformat(), "commit": _git_commit(), "machine": cpu_name(),
        "data": describe_data(sorted(all_traces, key=lambda t: (t.model_id, source_of(t)))),
        "recipes": {key: {**report.to_json(), "recipe": by_key[key].name, "model": by_key[key].model}
                    for key, report in reports.items()},
        "transfer": transfer,
        "ablations": {r.key: r.rows for r in ablations},
        "cross_validated": cross_validated,
        "sia": signatures,
        "model_comparison": comparisons,
        "hidden_gain": hidden_gain,
    }
    result["targets"] = check_targets(result, recipes)
    return {"json": result, "reports": reports, "signatures": signatures}


def check_targets(result: dict[str, Any], recipes: list[Recipe]) -> list[dict[str, Any]]:
    """The issue's targets for the default model's dedicated calibrators, per benchmark family."""
    rows = []
    for recipe in recipes:
        if recipe.evaluation != "heldout" or recipe.name == "pooled":
            continue
        entry = result["recipes"][recipe.key]
        positions = {row["position"]: row for row in entry["positions"]}
        worst_margin = min(
            positions[f"{f:.0%}"]["calibrated"]["auroc"] - max(positions[f"{f:.0%}"][b]["auroc"] for b in BASELINES)
            for f in FRACTIONS
        )
        measured = [
            ("auroc_last", "ROC-AUC at the last step", positions["100%"]["calibrated"]["auroc"], ">="),
            ("auroc_50", "ROC-AUC at 50% of steps", positions["50%"]["calibrated"]["auroc"], ">="),
            ("ece", "ECE, every held-out step", entry["all_prefixes"]["ece"], "<="),
            ("ece", "ECE at the last step", positions["100%"]["calibrated"]["ece"], "<="),
            ("margin", "worst AUROC margin over the best baseline (25-100%)", worst_margin, ">="),
        ]
        targets = TARGETS
        if recipe.features == "hidden":  # no baseline margin: it must beat the entropy-only calibrator instead
            kind = recipe.kinds[0] if len(recipe.kinds) == 1 else "numeric"
            targets = {"ece": TARGETS["ece"], **HIDDEN_AUROC_TARGETS[kind]}
        checks = [(name, value, op, targets[key]) for key, name, value, op in measured if key in targets]
        gain = result.get("hidden_gain", {}).get(recipe.key)
        if recipe.features == "hidden" and gain is not None:
            worst_gain = min(gain["positions"][f"{f:.0%}"]["gain"] for f in FRACTIONS)
            checks.append((f"worst AUROC gain over {gain['entropy_calibrator']} (25-100%, same traces)",
                           worst_gain, ">=", HIDDEN_GAIN_TARGET))
        for name, value, op, target in checks:
            met = value >= target if op == ">=" else value <= target
            rows.append({"calibrator": recipe.key, "target": name, "goal": f"{op} {target}", "measured": value,
                         "met": bool(met)})
    return rows


# -- markdown ---------------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def markdown(result: dict[str, Any], command: str, images: str = "") -> str:
    """The report's tables; `images` is the folder of the PNGs relative to where the text will live."""
    lines = [
        f"Command: `{command}` · commit {result['commit']} · {result['date']} · {result['machine']}.",
        ("Held-out = questions in the fixed 30% hash split (`calibrators/dataset.py`), never seen in fitting or "
        "model choice; `cv` = grouped 5-fold out-of-fold predictions (small sets). Traces sampled at a temperature "
        "T > 0 are training data: the tables judge greedy traces, what the monitor runs by default, and show the "
        "sampled held-out ones on their own line of the per-benchmark table. Every signal is scored on the "
        "same traces at each position. AUROC/PRR: higher is better; Brier/ECE (15 bins): lower is better. \"ours\" is "
        "the calibrated P(correct); the baselines are the raw answer entropy at that step, the mean token entropy so "
        "far, the DeepConf lowest 32-token-window confidence so far, and the top-1 answer probability. At a step "
        "fraction f the prefix is k = ceil(f x n) steps of an n-step trace, and n is something a live monitor does "
        "not know (features counting steps or tokens can partly read it back); the rows \"step 1..5\" have no "
        "such look-ahead."),
        "",
        "### Data (graded trajectories, bf16; greedy unless a temperature T is shown)",
        "",
        "| model | benchmark | traces | accuracy | mean steps | mean tokens | no step | last-step covered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["data"]:
        lines.append(f"| {row['model']} | {row['benchmark']} | {row['traces']} | {_f(row['accuracy'])} | "
                     f"{row['mean_steps']:.1f} | {row['mean_tokens']:.0f} | {row['no_step']} | "
                     f"{_f(row['last_step_covered'])} |")
    lines += ["", "### Targets (default model, held-out)", "", "| calibrator | target | goal | measured | met |",
              "|---|---|---|---|---|"]
    for row in result["targets"]:
        lines.append(f"| {row['calibrator']} | {row['target']} | {row['goal']} | {_f(row['measured'])} | "
                     f"{'yes' if row['met'] else '**no**'} |")
    for key, entry in result["recipes"].items():
        ci, floor = entry["auroc_95ci"], entry["ece_noise_floor"]
        lines += [
            "", f"### {key} ({entry['evaluation']}; {describe_config(entry['config'])})", "",
            (f"All prefixes: AUROC {_f(entry['all_prefixes']['auroc'])}, Brier {_f(entry['all_prefixes']['brier'])}, "
            f"ECE {_f(entry['all_prefixes']['ece'])}. AUROC 95% bootstrap interval at 50%: "
            f"{_f(ci['50%'][0])}–{_f(ci['50%'][1])}; at 100%: {_f(ci['100%'][0])}–{_f(ci['100%'][1])}. "
            f"Mean P(correct) {_f(entry['all_prefixes']['mean_p'])} against accuracy "
            f"{_f(entry['all_prefixes']['accuracy'])} over all prefixes. ECE that a perfectly calibrated P(correct) "
            f"would show on these traces from sampling noise alone (mean / 95th percentile): at 50% "
            f"{_f(floor['50%'][0])} / {_f(floor['50%'][1])}, at 100% {_f(floor['100%'][0])} / "
            f"{_f(floor['100%'][1])}."), "",
            ("| position | traces | accuracy | **ours** | entropy | token entropy | DeepConf | top-1 | "
            "Brier ours | ECE ours | ECE top-1 | PRR ours | best baseline PRR |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in entry["positions"]:
            best_prr = max((row[b]["prr"] for b in BASELINES if not math.isnan(row[b]["prr"])), default=math.nan)
            lines.append(
                f"| {row['position']} | {row['n']} | {_f(row['accuracy'])} | **{_f(row['calibrated']['auroc'])}** | "
                + " | ".join(_f(row[b]["auroc"]) for b in BASELINES)
                + f" | {_f(row['calibrated']['brier'])} | {_f(row['calibrated']['ece'])} | {_f(row['top1']['ece'])} | "
                f"{_f(row['calibrated']['prr'])} | {_f(best_prr)} |")
        if entry["per_benchmark"]:
            lines += ["", ("| benchmark | traces | accuracy | training accuracy | AUROC 25% | AUROC 50% | AUROC 75% | "
                      "AUROC 100% | ECE all steps |"), "|---|---|---|---|---|---|---|---|---|"]
            for bench in entry["per_benchmark"]:
                lines.append(f"| {bench['benchmark']} | {bench['traces']} | {_f(bench['accuracy'])} | "
                             f"{_f(bench.get('training_accuracy'))} | "
                             + " | ".join(_f(bench[f"{f:.0%}"]["auroc"]) for f in FRACTIONS)
                             + f" | {_f(bench['all_prefixes']['ece'])} |")
        if entry["selection"]:
            lines += ["", "Model choice (grouped 3-fold CV on the training questions; lowest Brier wins): "
                      + "; ".join(f"{describe_config(s)} Brier {s['brier']:.4f} / AUROC {s['auroc']:.3f}"
                                  for s in entry["selection"]) + "."]
    if result["cross_validated"]:
        lines += ["", "### Second estimate: grouped 5-fold CV over all questions (same configuration)", "",
                  ("| calibrator | traces | AUROC 50% | AUROC 100% | ECE 50% | ECE 100% | ECE all steps | "
                  "held-out ECE all steps |"), "|---|---|---|---|---|---|---|---|"]
        for key, cv in result["cross_validated"].items():
            rows = cv["positions"]
            lines.append(f"| {key} | {cv['traces']} | {_f(rows['50%']['auroc'])} | {_f(rows['100%']['auroc'])} | "
                         f"{_f(rows['50%']['ece'])} | {_f(rows['100%']['ece'])} | {_f(cv['all_prefixes']['ece'])} | "
                         f"{_f(result['recipes'][key]['all_prefixes']['ece'])} |")
    for key, gain in result.get("hidden_gain", {}).items():
        lines += ["", f"### {key} against {gain['entropy_calibrator']} on the same held-out traces", "",
                  "| position | traces | AUROC hidden | AUROC entropy-only | gain | ECE hidden | ECE entropy-only |",
                  "|---|---|---|---|---|---|---|"]
        for label, row in gain["positions"].items():
            lines.append(f"| {label} | {row['n']} | {_f(row['hidden']['auroc'])} | {_f(row['entropy']['auroc'])} | "
                         f"{row['gain']:+.3f} | {_f(row['hidden']['ece'])} | {_f(row['entropy']['ece'])} |")
    if result["ablations"]:
        lines += ["", "### Ablation: the entropy curve alone (question length and number count held constant)", "",
                  "| calibrator | AUROC 25% | 50% | 75% | 100% | step 1 | step 3 | step 5 |", "|---|---|---|---|---|---|---|---|"]
        for key, rows in result["ablations"].items():
            by = {r["position"]: r["calibrated"]["auroc"] for r in rows}
            lines.append(f"| {key} | " + " | ".join(_f(by.get(p)) for p in
                                                     ("25%", "50%", "75%", "100%", "step 1", "step 3", "step 5")) + " |")
    if result["transfer"]:
        lines += ["", "### Transfer: pooled vs dedicated calibrators on each held-out set", "",
                  "| held-out set | calibrator | AUROC 50% | AUROC 100% | ECE all steps | Brier all steps |",
                  "|---|---|---|---|---|---|"]
        for row in result["transfer"]:
            lines.append(f"| {row['on']} | {row['calibrator']} | {_f(row['50%']['auroc'])} | "
                         f"{_f(row['100%']['auroc'])} | {_f(row['all_prefixes']['ece'])} | "
                         f"{_f(row['all_prefixes']['brier'])} |")
    lines += ["", "### SIA signatures (all traces with ≥ 2 steps)", "",
              ("| model / benchmark | traces | monotone: correct vs wrong | accuracy monotone vs not | Fisher p | "
              "net decrease: correct vs wrong | Fisher p | mean slope correct vs wrong | Mann-Whitney p |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for name, sig in result["sia"].items():
        mono, net, slope = sig["monotone_decreasing"], sig["net_decrease"], sig["mean_slope"]
        lines.append(
            f"| {name} | {sig['traces']} | {_pct(mono['share_among_correct'])} vs {_pct(mono['share_among_wrong'])} | "
            f"{_pct(mono['accuracy_with'])} vs {_pct(mono['accuracy_without'])} | {_f(mono['fisher_p'], 3)} | "
            f"{_pct(net['share_among_correct'])} vs {_pct(net['share_among_wrong'])} | {_f(net['fisher_p'], 3)} | "
            f"{_f(slope['correct'])} vs {_f(slope['wrong'])} | {_f(slope['mannwhitney_p'], 3)} |")
    for key, comparison in result["model_comparison"].items():
        small, large = comparison["small_model"], comparison["large_model"]
        lines += ["", f"### {small} vs {large} on the same questions ({key}; grouped 5-fold CV for both)", "",
                  (f"Accuracy {_f(comparison['small']['accuracy'])} vs {_f(comparison['large']['accuracy'])} on "
                  f"{comparison['large']['traces']} questions."), "",
                  ("| position | entropy AUROC small | entropy AUROC large | top-1 AUROC small | top-1 AUROC large | "
                  "ours small (CV) | ours large (CV) | small model's calibrator on large |"),
                  "|---|---|---|---|---|---|---|---|"]
        small_rows = {r["position"]: r for r in comparison["small"]["positions"]}
        for row in comparison["large"]["positions"]:
            other = small_rows.get(row["position"])
            if other is None:
                continue
            moved = comparison.get("small_calibrator_on_large", {}).get(row["position"], {})
            lines.append(f"| {row['position']} | {_f(other['entropy']['auroc'])} | {_f(row['entropy']['auroc'])} | "
                         f"{_f(other['top1']['auroc'])} | {_f(row['top1']['auroc'])} | "
                         f"{_f(other['calibrated']['auroc'])} | {_f(row['calibrated']['auroc'])} | "
                         f"{_f(moved.get('auroc'))} |")
    lines += ["", f"![reliability]({images}reliability.png)",
              f"![AUROC by step fraction]({images}auroc_by_fraction.png)",
              f"![entropy curves]({images}entropy_curves.png)"]
    return "\n".join(lines) + "\n"


def write_report(built: dict[str, Any], out_dir: Path, command: str, benchmarks_md: Path | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = built["json"]
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(jsonable(result), indent=1) + "\n", encoding="utf-8")
    written[1].write_text(markdown(result, command), encoding="utf-8")
    shown = [r for r in built["reports"].values() if r.evaluation in ("heldout", "external")]
    everything = list(built["reports"].values())
    written.append(plots.reliability(shown, out_dir / "reliability.png"))
    written.append(plots.auroc_by_fraction(everything, out_dir / "auroc_by_fraction.png"))
    written.append(plots.entropy_curves(built["signatures"], out_dir / "entropy_curves.png"))
    if benchmarks_md is not None:
        images = os.path.relpath(out_dir.resolve(), benchmarks_md.resolve().parent).replace(os.sep, "/") + "/"
        splice(benchmarks_md, markdown(result, command, images))
        written.append(benchmarks_md)
    return written


def splice(path: Path, text: str) -> None:
    """Replace the text between the calibration markers of `path` (appending a section if they are absent)."""
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        current = head + block + tail
    else:
        current = current.rstrip("\n") + "\n\n## Calibrated P(correct)\n\n" + block + "\n"
    path.write_text(current, encoding="utf-8")

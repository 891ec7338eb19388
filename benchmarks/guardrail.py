"""What the guardrail policy does on saved, graded trajectories, without a model.

For every held-out trajectory of each benchmark file (the questions the shipped calibrators were NOT fitted
on, per `sia_monitor.tasks.benchmarks.is_heldout`), the steps are scored once with the shipped calibrator for the
trace's model and answer type, the one the live guardrail takes in process: the hidden-state calibrator where
the trace's steps carry hidden states (the files under calibrators/data/<model>/hidden/), else the entropy-only
one (`replay.score_steps`, i.e. `Calibrator.curve` rounded to 4 decimals as the
live monitor does), then replayed through the library's own `guarded.GuardedRun` + `replay.ReplayBackend`
at speed 0 for each policy of a grid:

  stop_below in {0.1, 0.2, 0.3} x patience in {2, 3} (min_steps 3) x accept_above in {None, 0.5, 0.6, 0.7},
  plus the entropy-only fallback (no calibrator; entropy_above 1 bit, patience 2 and 3).

A stop cuts the trace where it fired (tokens after that point are saved); an accept ends it with the last
step's top answer (what `ReplayBackend.force_answer` does without a model), compared with the answer the
full trace gave. Resampling is not measured (it needs a model). Each trace's first decision is also
re-derived by calling `GuardrailPolicy.decide` step by step as `GuardedRun` does, as a cross-check
(`decide_mismatches` in the output should be 0).

    python benchmarks/guardrail.py
    python benchmarks/guardrail.py calibrators/data/qwen2.5-coder-0.5b-instruct/svamp.jsonl.gz --limit 50
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibrators import calibrator_for
from calibrators.dataset import question_id
from sia_monitor.guardrail.guarded import GuardedRun
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.replay import ReplayBackend, score_steps
from sia_monitor.machine import cpu_name
from sia_monitor.tasks.benchmarks import HELDOUT_FRACTION, is_heldout
from sia_monitor.trajectory import Trajectory, read_trajectories

console = Console()
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "calibrators" / "data" / "qwen2.5-coder-0.5b-instruct"
DEFAULT_FILES = [DATA / f"{name}.jsonl.gz" for name in ("svamp", "gsm8k", "arc-easy")]
DEFAULT_POLICY = GuardrailPolicy()


@dataclass(frozen=True)
class Setting:
    label: str
    policy: GuardrailPolicy
    calibrated: bool  # False: the steps carry no P(correct), the policy falls back on the entropy trend

    @property
    def is_default(self) -> bool:
        return self.calibrated and self.policy == DEFAULT_POLICY


def grid() -> list[Setting]:
    settings = []
    for accept in (None, 0.5, 0.6, 0.7):
        for stop_below in (0.1, 0.2, 0.3):
            for patience in (2, 3):
                policy = GuardrailPolicy(min_steps=3, stop_below=stop_below, patience=patience, accept_above=accept)
                accept_text = "off" if accept is None else f"{accept:.1f}"
                settings.append(Setting(f"stop<{stop_below:.1f} p{patience} · accept {accept_text}", policy, True))
    for patience in (2, 3):
        policy = GuardrailPolicy(min_steps=3, patience=patience)
        settings.append(Setting(f"entropy≥{policy.entropy_above:.1f} bits p{patience} (no calibrator)", policy, False))
    return settings


def without_p(trajectory: Trajectory) -> Trajectory:
    """A copy whose steps carry no P(correct) (recorded values would otherwise be kept by `score_steps`)."""
    return replace(trajectory, steps=[replace(s, p_correct=None) for s in trajectory.steps])


def direct_decision(policy: GuardrailPolicy, trajectory: Trajectory) -> tuple[str, int] | None:
    """The first decision from calling `policy.decide` after each step, with the arguments GuardedRun uses
    on a first attempt (resamples_used = 0, the question)."""
    for k in range(1, len(trajectory.steps) + 1):
        decision = policy.decide(trajectory.steps[:k], 0, trajectory.question)
        if decision is not None:
            return decision.action, decision.step
    return None


def replay_one(policy: GuardrailPolicy, trajectory: Trajectory) -> dict[str, Any]:
    """One trace through GuardedRun at speed 0: the decision taken (if any) and the settled outcome."""
    run = GuardedRun(ReplayBackend([trajectory], speed=0), policy)
    for _ in run.events():
        pass
    result = run.result()
    settled = result.best
    decision = result.decisions[0] if result.decisions else None
    record = settled.decisions[-1] if settled.decisions else {}
    return {
        "action": decision.action if decision else None,
        "step": decision.step if decision else None,
        "tokens_at": decision.tokens if decision else None,
        "tokens_saved": int(record.get("tokens_saved", 0) or 0),
        "cut": settled.finish_reason not in ("eos", "length"),
        "finish_reason": settled.finish_reason,
        "answer": settled.parsed_answer,
        "correct": bool(settled.correct),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def summarise(setting: Setting, originals: list[Trajectory], outcomes: list[dict[str, Any]],
              mismatches: int) -> dict[str, Any]:
    full_correct = [bool(t.correct) for t in originals]
    total_tokens = sum(t.n_tokens for t in originals)
    stopped = [i for i, o in enumerate(outcomes) if o["action"] == "stop"]
    accepted = [i for i, o in enumerate(outcomes) if o["action"] == "accept"]
    kept = [i for i, o in enumerate(outcomes) if o["action"] != "stop"]
    stopped_correct = sum(full_correct[i] for i in stopped)
    saved_stop = sum(outcomes[i]["tokens_saved"] for i in stopped)
    saved_accept = sum(outcomes[i]["tokens_saved"] for i in accepted)
    forced_correct = sum(outcomes[i]["correct"] for i in accepted)
    accepted_full_correct = sum(full_correct[i] for i in accepted)
    kept_correct = sum(outcomes[i]["correct"] for i in kept)  # accepted ones by their forced answer
    kept_full_correct = sum(full_correct[i] for i in kept)
    guarded_correct = sum(o["correct"] and o["action"] != "stop" for o in outcomes)
    return {
        "setting": setting.label,
        "default": setting.is_default,
        "calibrated": setting.calibrated,
        "policy": asdict(setting.policy),
        "traces": len(originals),
        "stopped": len(stopped),
        "stopped_correct": stopped_correct,  # false stops: the full trace would have been right
        "false_stop_rate": ratio(stopped_correct, len(stopped)),
        "stop_precision": ratio(len(stopped) - stopped_correct, len(stopped)),  # share of stops that were wrong
        "correct_traces_stopped_share": ratio(stopped_correct, sum(full_correct)),
        "stopped_not_cut": sum(not outcomes[i]["cut"] for i in stopped),  # fired after the last token
        "tokens_saved_stop": saved_stop,
        "tokens_saved_stop_share": ratio(saved_stop, total_tokens),
        "accepted": len(accepted),
        "accepted_cut": sum(outcomes[i]["cut"] for i in accepted),
        "accepted_forced_correct": forced_correct,
        "accepted_full_correct": accepted_full_correct,
        "accepted_forced_accuracy": ratio(forced_correct, len(accepted)),
        "accepted_full_accuracy": ratio(accepted_full_correct, len(accepted)),
        "tokens_saved_accept": saved_accept,
        "tokens_saved_accept_share": ratio(saved_accept, total_tokens),
        "tokens_saved_total": saved_stop + saved_accept,
        "tokens_saved_total_share": ratio(saved_stop + saved_accept, total_tokens),
        "not_stopped": len(kept),
        "accuracy_not_stopped": ratio(kept_correct, len(kept)),
        "full_accuracy_not_stopped": ratio(kept_full_correct, len(kept)),
        "guarded_accuracy_all": ratio(guarded_correct, len(originals)),  # a stopped trace counts as no answer
        "decide_mismatches": mismatches,
    }


def run_benchmark(path: Path, settings: list[Setting], limit: int | None, progress: Progress) -> dict[str, Any]:
    records = list(read_trajectories(path, skip_truncated_tail=True))
    graded = [t for t in records if t.correct is not None]
    heldout = [t for t in graded if is_heldout(question_id(t))]
    if limit is not None:
        heldout = heldout[:limit]
    name = path.name.split(".")[0]
    calibrators: dict[tuple[str, str], Any] = {}
    scored: list[Trajectory] = []
    task = progress.add_task(f"{name}: scoring", total=len(heldout))
    # the calibrator the live guardrail takes in process: the hidden-state one where the steps carry them
    hidden = any(t.steps for t in heldout) and all(step.hidden is not None for t in heldout for step in t.steps)
    for t in heldout:
        key = (t.model_id, t.answer_space.kind)
        if key not in calibrators:
            calibrators[key] = calibrator_for(t.model_id, t.answer_space, hidden_states=hidden)
        calibrator = calibrators[key]
        if calibrator is None:
            raise SystemExit(f"No shipped calibrator for {t.model_id} / {t.answer_space.kind}.")
        # Drop any recorded P(correct) so every step is scored by the shipped calibrator.
        scored.append(score_steps(without_p(t), calibrator))
        progress.advance(task)
    progress.update(task, description=f"{name}: replaying")
    unscored = [without_p(t) for t in heldout]
    progress.update(task, completed=0, total=len(heldout) * len(settings))
    rows = []
    for setting in settings:
        inputs = scored if setting.calibrated else unscored
        outcomes, mismatches = [], 0
        for t in inputs:
            outcome = replay_one(setting.policy, t)
            direct = direct_decision(setting.policy, t)
            if direct != ((outcome["action"], outcome["step"]) if outcome["action"] else None):
                mismatches += 1
            outcomes.append(outcome)
            progress.advance(task)
        rows.append(summarise(setting, heldout, outcomes, mismatches))
    return {
        "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "records": len(records),
        "graded": len(graded),
        "traces": len(heldout),
        "base_accuracy": ratio(sum(bool(t.correct) for t in heldout), len(heldout)),
        "total_tokens": sum(t.n_tokens for t in heldout),
        "mean_steps": ratio(sum(len(t.steps) for t in heldout), len(heldout)),
        "calibrators": {f"{m}/{c.info.name}": {"name": c.info.name, "answer_kinds": c.info.answer_kinds}
                        for (m, _), c in calibrators.items() if c is not None},
        "settings": rows,
    }


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "# Guardrail policy on held-out saved trajectories (replay, no model)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']} · machine: {meta['cpu']} ({meta['cpu_count']} CPUs) · Python {meta['python']} · run time {meta['runtime_s']:.1f} s",
        "",
        (f"Held-out questions only (`sia_monitor.tasks.benchmarks.is_heldout`, fraction {meta['heldout_fraction']}): the shipped "
        "calibrators never saw them. Each trace replayed through `GuardedRun` + `ReplayBackend` (speed 0). "
        "**Stopped** = policy stopped the trace; **false stops** = stopped traces whose full trace was correct; "
        "**stop precision** = share of stops that were wrong; **saved** = tokens after the decision point "
        "(% of all tokens of the benchmark's held-out traces); **accepted: forced / full** = correct forced answers "
        "(last step's top answer) vs correct had the trace continued; **acc. not stopped** = accuracy of the "
        "traces not stopped, accepted ones scored by their forced answer (full-trace accuracy of the same traces "
        "in brackets). ★ = the library's default policy (`GuardrailPolicy()`: stop_below 0.2, patience 3, "
        "min_steps 3, accept off)."),
        "",
    ]
    for name, bench in result["benchmarks"].items():
        lines += [
            f"## {name}",
            "",
            (f"{bench['traces']} held-out traces, base accuracy {pct(bench['base_accuracy'])}, "
             f"{bench['total_tokens']:,} tokens, {bench['mean_steps']:.1f} steps per trace on average. "
             f"File: `{bench['file']}`. P(correct) from {', '.join(f'`{c}`' for c in bench['calibrators'])}."),
            "",
            "| setting | stopped | false stops | stop precision | saved by stopping | accepted | accepted: forced / full correct | saved by accepting | acc. not stopped (full) | base acc. |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in bench["settings"]:
            label = ("★ " if row["default"] else "") + row["setting"]
            accepted = (f"{row['accepted_forced_correct']} / {row['accepted_full_correct']}"
                        if row["accepted"] else "–")
            lines.append(
                f"| {label} | {row['stopped']} | {row['stopped_correct']} | {pct(row['stop_precision'])} "
                f"| {row['tokens_saved_stop']:,} ({pct(row['tokens_saved_stop_share'])}) | {row['accepted']} "
                f"| {accepted} | {row['tokens_saved_accept']:,} ({pct(row['tokens_saved_accept_share'])}) "
                f"| {pct(row['accuracy_not_stopped'])} ({pct(row['full_accuracy_not_stopped'])}) "
                f"| {pct(bench['base_accuracy'])} |"
            )
        mismatches = sum(row["decide_mismatches"] for row in bench["settings"])
        lines += ["", f"Cross-check against calling `GuardrailPolicy.decide` step by step: {mismatches} mismatches.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES,
                        help="graded trajectory files (default: the committed svamp, gsm8k and arc-easy files of "
                             "qwen2.5-coder-0.5b-instruct)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guardrail.json",
                        help="JSON output (default benchmarks/results/guardrail.json)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="markdown summary (default: --out with the .md suffix)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many held-out traces per file (for a quick try)")
    args = parser.parse_args()

    started = time.perf_counter()
    settings = grid()
    benchmarks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        for path in args.files:
            path = path.resolve()
            benchmarks[path.name.split(".")[0]] = run_benchmark(path, settings, args.limit, progress)
    runtime = time.perf_counter() - started

    argv = [Path(sys.argv[0]).as_posix()] + sys.argv[1:]
    result = {
        "meta": {
            "command": "python " + shlex.join(argv),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "runtime_s": round(runtime, 2),
            "heldout_fraction": HELDOUT_FRACTION,
            "default_policy": asdict(DEFAULT_POLICY),
        },
        "benchmarks": benchmarks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md_path = args.markdown or args.out.with_suffix(".md")
    md_path.write_text(markdown(result) + "\n", encoding="utf-8")
    console.print(f"Wrote {args.out} and {md_path} in {runtime:.1f} s.")


if __name__ == "__main__":
    main()

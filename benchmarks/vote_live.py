"""The live vote against the offline harness, and against a live plain majority, on the default model.

For each of the first `--questions` held-out SVAMP questions (the split the shipped calibrators never saw),
with a fixed seed per question:
1. `sia-monitor vote`'s engine (`guardrail.live_vote.run_vote`, default `VotePolicy`, the shipped numeric
   calibrator) runs live; its decisions (each ballot's status, answer, tokens and kill step; the answer; the
   stop) are compared with what `vote.simulate` computes from the samples it saved — they must all match;
2. a live majority@16 (16 samples in one batch, no kill, no weights, no adaptive stop) runs on the same
   question, in the same process, so the wall-time ratio is measured on one machine in one run.

    python benchmarks/vote_live.py                  # 10 questions, about 25 minutes on 2 cores
    python benchmarks/vote_live.py --questions 3

Writes benchmarks/results/vote_live.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibrators import calibrator_for
from sia_monitor.backends.in_process import Monitor
from sia_monitor.guardrail.live_vote import DEFAULT_VOTE_SETTINGS, LiveVote
from sia_monitor.guardrail.vote import VotePolicy, simulate
from sia_monitor.machine import cpu_name
from sia_monitor.models import DEFAULT_MODEL
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import grade, load_benchmark

console = Console()
ROOT = Path(__file__).resolve().parent.parent


def decisions(vote) -> list[tuple]:
    return [(b.sample, b.status, b.answer, b.tokens, b.killed_after_steps) for b in vote.ballots]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vote_live.json")
    args = parser.parse_args()

    items = load_benchmark("svamp", split="heldout", limit=args.questions)
    monitor = Monitor.load(DEFAULT_MODEL, scorer=calibrator_for(DEFAULT_MODEL, NUMERIC))
    ours = VotePolicy(samples=args.samples)
    majority = VotePolicy(samples=args.samples, width=args.samples, kill=None, weighted=False, adaptive_stop=False)
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("live votes", total=len(items))
        for seed, item in enumerate(items):
            settings = replace(DEFAULT_VOTE_SETTINGS, seed=seed)
            live = LiveVote(monitor, item.question, item.space, ours, settings)
            vote = live.run()
            offline = simulate(vote.samples, ours, item.space)
            plain = LiveVote(monitor, item.question, item.space, majority, settings)
            baseline = plain.run()
            rows.append({
                "item": item.item_id, "gold": item.gold,
                "ours": {"answer": vote.answer, "correct": grade(item, vote.answer), "tokens": vote.tokens,
                         "samples": len(vote.samples), "killed": sum(b.status == "killed" for b in vote.ballots),
                         "wall_s": round(live.wall_s, 2)},
                "majority": {"answer": baseline.answer, "correct": grade(item, baseline.answer),
                             "tokens": baseline.tokens, "wall_s": round(plain.wall_s, 2)},
                "offline_matches": decisions(vote) == decisions(offline) and (vote.answer, vote.stopped_early)
                == (offline.answer, offline.stopped_early),
            })
            progress.advance(task)
    wall = sum(r["ours"]["wall_s"] for r in rows) / sum(r["majority"]["wall_s"] for r in rows)
    tokens = sum(r["ours"]["tokens"] for r in rows) / sum(r["majority"]["tokens"] for r in rows)
    summary = {
        "questions": len(rows), "machine": cpu_name(), "policy": ours.to_json(),
        "settings": {"max_new_tokens": DEFAULT_VOTE_SETTINGS.max_new_tokens,
                     "temperature": DEFAULT_VOTE_SETTINGS.temperature},
        "offline_matches": sum(r["offline_matches"] for r in rows),
        "wall_ratio": round(wall, 3), "tokens_ratio": round(tokens, 3),
        "ours_accuracy": statistics.fmean(r["ours"]["correct"] for r in rows),
        "majority_accuracy": statistics.fmean(r["majority"]["correct"] for r in rows),
        "ours_wall_s": round(sum(r["ours"]["wall_s"] for r in rows), 1),
        "majority_wall_s": round(sum(r["majority"]["wall_s"] for r in rows), 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"{len(rows)} held-out SVAMP questions, default model, one seed each, on {cpu_name()}; "
        f"ours = `VotePolicy()` (n {ours.samples}, width {ours.width}), majority = 16 samples in one batch.", "",
        "| | live decisions = offline harness | accuracy | tokens | wall time |", "|---|---|---|---|---|",
        f"| ours | {summary['offline_matches']} / {len(rows)} questions | {summary['ours_accuracy']:.2f} | "
        f"{sum(r['ours']['tokens'] for r in rows)} ({tokens:.2f}x) | {summary['ours_wall_s']} s ({wall:.2f}x) |",
        f"| majority@{args.samples} | | {summary['majority_accuracy']:.2f} | "
        f"{sum(r['majority']['tokens'] for r in rows)} | {summary['majority_wall_s']} s |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How many labelled questions a calibrator of your own needs: `fit --data` on n questions, judged on held-out ones.

The "user" here is the default model on SVAMP (greedy, `calibrators/data`), so the answer is measured on real
trajectories: for n = 25 ... 700 training-split questions (drawn at random, `--draws` times each), a calibrator
is fitted exactly as `sia-monitor fit --data` fits one (`recipe_for_data`: configuration chosen by grouped CV on
those n, then fitted on them), and judged on every held-out SVAMP question, against the shipped numeric
calibrator (fitted on all SVAMP + GSM8K training questions) on the same rows. No model needed.

    python benchmarks/own_data.py            # about 3 minutes on 2 cores

Writes benchmarks/results/own_data.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibrators import calibrator_for
from calibrators.dataset import PrefixTable
from calibrators.evaluation import judge
from calibrators.fitting import fit_all, recipe_for_data
from sia_monitor.errors import SIAError
from sia_monitor.machine import cpu_name
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import is_heldout, item_group
from sia_monitor.trajectory import read_trajectories, write_trajectories

console = Console()
ROOT = Path(__file__).resolve().parent.parent
MODEL = "qwen2.5-coder-0.5b-instruct"
SVAMP = ROOT / "calibrators" / "data" / MODEL / "svamp.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400, 700])
    parser.add_argument("--draws", type=int, default=3, help="random draws of the n questions (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "own_data.json")
    args = parser.parse_args()

    records = [t for t in read_trajectories(SVAMP) if t.correct is not None]
    train = [t for t in records if not is_heldout(item_group(t.benchmark or "", t.item_id or ""))]
    test = PrefixTable.build([t for t in records if is_heldout(item_group(t.benchmark or "", t.item_id or ""))])
    shipped = judge(calibrator_for(MODEL, NUMERIC), test)
    rows: list[dict] = []
    failures: list[dict] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, tempfile.TemporaryDirectory() as scratch:
        sizes = [n for n in args.sizes if n <= len(train)]
        task = progress.add_task("fit --data on n questions", total=len(sizes) * args.draws)
        for n in sizes:
            scores = []
            for draw in range(args.draws):
                chosen = random.Random(draw).sample(train, n)
                path = Path(scratch) / f"n{n}-{draw}.jsonl.gz"
                write_trajectories(path, chosen, append=False)
                try:
                    ((calibrator, _, _),) = fit_all([recipe_for_data([path], f"n{n}")], save=False).values()
                except (SIAError, ValueError) as exc:  # too few right or wrong answers: what a user would see
                    failures.append({"n": n, "draw": draw, "error": str(exc).splitlines()[0]})
                else:
                    scores.append(judge(calibrator, test))
                progress.advance(task)
            if not scores:
                continue
            rows.append({"n": n, "draws": scores, "failed": sum(f["n"] == n for f in failures),
                         **{key: statistics.fmean(s[key] for s in scores) for key in ("auroc_50", "auroc_100", "ece")},
                         "auroc_100_min": min(s["auroc_100"] for s in scores)})
    summary = {"machine": cpu_name(), "model": MODEL, "train_pool": len(train),
               "test_traces": len(test.trajectories), "shipped": shipped, "rows": rows, "failures": failures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"Default model, greedy SVAMP: calibrators fitted by `fit --data` on n training questions "
             f"({args.draws} random draws each, mean), judged on all {len(test.trajectories)} held-out SVAMP traces.", "",
             "| questions labelled | AUROC at 50 % of steps | AUROC at the last step (worst draw) | ECE, every step | "
             "draws refused |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['n']} | {row['auroc_50']:.3f} | {row['auroc_100']:.3f} ({row['auroc_100_min']:.3f}) | "
                     f"{row['ece']:.3f} | {row['failed']} |")
    lines.append(f"| shipped numeric calibrator (all SVAMP + GSM8K training questions) | {shipped['auroc_50']:.3f} | "
                 f"{shipped['auroc_100']:.3f} | {shipped['ece']:.3f} | |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

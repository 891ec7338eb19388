"""How far a calibrator can be trusted off the benchmark it was fitted on, and what it costs to adapt it.

For SVAMP -> GSM8K, GSM8K -> SVAMP, ARC-Easy -> ARC-Challenge and back (the default model's greedy trajectories
in `calibrators/data`): a calibrator fitted as `sia-monitor fit --data` fits one, on the source benchmark's
training questions, is judged on the target's held-out questions, against one fitted on the target's own
training questions (in-domain). Then adaptation: refit on the source's training questions plus n = 25, 50,
100, 200 of the target's (random draws), judged on the same held-out questions, so a user knows how many of
their own questions to label. No model needed.

    python benchmarks/transfer.py            # about 10 minutes on 2 cores

Writes benchmarks/results/transfer.json and .md.
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

from calibrators.dataset import PrefixTable
from calibrators.evaluation import judge
from calibrators.fitting import fit_all, recipe_for_data
from sia_monitor.machine import cpu_name
from sia_monitor.tasks.benchmarks import is_heldout, item_group
from sia_monitor.trajectory import Trajectory, read_trajectories, write_trajectories

console = Console()
ROOT = Path(__file__).resolve().parent.parent
MODEL = "qwen2.5-coder-0.5b-instruct"
DATA = ROOT / "calibrators" / "data" / MODEL
DIRECTIONS = (("svamp", "gsm8k"), ("gsm8k", "svamp"), ("arc-easy", "arc-challenge"), ("arc-challenge", "arc-easy"))
KEYS = ("auroc_50", "auroc_100", "ece")


def split(name: str) -> tuple[list[Trajectory], list[Trajectory]]:
    """(training, held-out) graded trajectories of one benchmark file."""
    records = [t for t in read_trajectories(DATA / f"{name}.jsonl.gz") if t.correct is not None]
    held = [is_heldout(item_group(t.benchmark or "", t.item_id or "")) for t in records]
    return [t for t, h in zip(records, held, strict=True) if not h], [t for t, h in zip(records, held, strict=True) if h]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--draws", type=int, default=2, help="random draws of the n target questions (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "transfer.json")
    args = parser.parse_args()

    splits = {name: split(name) for name in {n for pair in DIRECTIONS for n in pair}}
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, tempfile.TemporaryDirectory() as scratch:
        task = progress.add_task("fits", total=len(DIRECTIONS) * (2 + len(args.sizes) * args.draws))

        def fitted_on(trajectories: list[Trajectory], label: str, test: PrefixTable) -> dict[str, float]:
            path = Path(scratch) / f"{label}.jsonl.gz"
            write_trajectories(path, trajectories, append=False)
            ((calibrator, _, _),) = fit_all([recipe_for_data([path], label)], save=False).values()
            progress.advance(task)
            return judge(calibrator, test)

        for source, target in DIRECTIONS:
            source_train = splits[source][0]
            target_train, target_test = splits[target]
            test = PrefixTable.build(target_test)
            entry = {"source": source, "target": target, "source_train": len(source_train),
                     "target_train": len(target_train), "target_test": len(test.trajectories),
                     "transfer": fitted_on(source_train, f"{source}-to-{target}", test),
                     "in_domain": fitted_on(target_train, f"{target}-in-domain", test), "adapted": []}
            for n in args.sizes:
                draws = [fitted_on(source_train + random.Random(draw).sample(target_train, n), f"{source}-{n}-{draw}",
                                   test) for draw in range(args.draws)]
                entry["adapted"].append({"n": n, **{k: statistics.fmean(d[k] for d in draws) for k in KEYS}})
            results.append(entry)
    summary = {"machine": cpu_name(), "model": MODEL, "directions": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["Default model, greedy traces; fitted as `fit --data` fits, judged on the target's held-out questions.",
             "", "| source → target | fitted on | AUROC 50 % | AUROC last step | ECE every step |", "|---|---|---|---|---|"]
    for entry in results:
        direction = f"{entry['source']} → {entry['target']}"
        rows = [(f"{entry['source']} ({entry['source_train']} traces)", entry["transfer"]),
                *((f"{entry['source']} + {a['n']} {entry['target']} questions", a) for a in entry["adapted"]),
                (f"{entry['target']} only ({entry['target_train']}, in-domain)", entry["in_domain"])]
        for label, scores in rows:
            lines.append(f"| {direction} | {label} | {scores['auroc_50']:.3f} | {scores['auroc_100']:.3f} | "
                         f"{scores['ece']:.3f} |")
            direction = ""
    lines += ["", "| source → target | AUROC drop at 50 % | at the last step | ECE rise |", "|---|---|---|---|"]
    for entry in results:
        t, d = entry["transfer"], entry["in_domain"]
        lines.append(f"| {entry['source']} → {entry['target']} | {d['auroc_50'] - t['auroc_50']:+.3f} | "
                     f"{d['auroc_100'] - t['auroc_100']:+.3f} | {t['ece'] - d['ece']:+.3f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

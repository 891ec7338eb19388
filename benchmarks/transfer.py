"""How far a calibrator can be trusted off the benchmark it was fitted on, and what it costs to adapt it.

For SVAMP -> GSM8K, GSM8K -> SVAMP, ARC-Easy -> ARC-Challenge and back (the default model's greedy trajectories
in `calibrators/data`): a calibrator fitted as `sia-monitor fit --data` fits one, on the source benchmark's
training questions, is judged on the target's held-out questions, against one fitted on the target's own
training questions (in-domain). Then adaptation: refit on the source's training questions plus n = 25, 50,
100, 200 of the target's (random draws), judged on the same held-out questions, so a user knows how many of
their own questions to label. No model needed.

    python benchmarks/transfer.py            # about 10 minutes on 2 cores
    python benchmarks/transfer.py --hidden-states    # hidden-state calibrators on the schema-2 files (math only
                                                     # until ARC's re-collection is complete)

Writes benchmarks/results/transfer.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibrators.transfer import SIZES, fits_needed, transfer_markdown, transfer_study
from sia_monitor.machine import cpu_name
from sia_monitor.trajectory import read_trajectories

console = Console()
ROOT = Path(__file__).resolve().parent.parent
MODEL = "qwen2.5-coder-0.5b-instruct"
DATA = ROOT / "calibrators" / "data" / MODEL
DIRECTIONS = (("svamp", "gsm8k"), ("gsm8k", "svamp"), ("arc-easy", "arc-challenge"), ("arc-challenge", "arc-easy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--draws", type=int, default=2, help="random draws of the n target questions (default 2)")
    parser.add_argument("--hidden-states", action="store_true",
                        help="feature version 2: hidden-state calibrators on calibrators/data/<model>/hidden/")
    parser.add_argument("--directions", nargs="+", default=None, metavar="SOURCE:TARGET",
                        help="only these directions (default: all four; with --hidden-states, those whose files exist)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/transfer.json (transfer-hidden.json with --hidden-states)")
    args = parser.parse_args()

    folder = DATA / "hidden" if args.hidden_states else DATA
    directions = [tuple(d.split(":", 1)) for d in args.directions] if args.directions else [
        pair for pair in DIRECTIONS if all((folder / f"{name}.jsonl.gz").is_file() for name in pair)]
    out = args.out or ROOT / "benchmarks" / "results" / ("transfer-hidden.json" if args.hidden_states else "transfer.json")
    features = "hidden" if args.hidden_states else "entropy"
    data = {name: list(read_trajectories(folder / f"{name}.jsonl.gz")) for name in {n for pair in directions for n in pair}}
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fits", total=len(directions) * fits_needed(args.sizes, args.draws))
        for source, target in directions:
            results.append(transfer_study(data[source], data[target], (source, target), args.sizes, args.draws,
                                          advance=lambda: progress.advance(task), features=features))
    summary = {"machine": cpu_name(), "model": MODEL, "features": features, "directions": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    what = "hidden-state calibrators (feature version 2)" if args.hidden_states else "entropy-curve calibrators"
    heading = (f"Default model, greedy traces, {what}; fitted as `fit --data` fits, judged on the target's held-out "
               "questions.")
    lines = [heading, "", *transfer_markdown(results)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Choose `VotePolicy`'s defaults on the dev questions only (SVAMP training split, 8 samples each), never on
the held-out ones `self_consistency.py` reports.

A grid over the three parts and the width: kill (off, or P(correct) below {0.1, 0.2, 0.3} for {1, 2, 3}
steps from step {2, 3}), weights (power {1, 2}), adaptive stop (confidence {0.7, 0.8, 0.9, 0.95}, min votes
{2, 3}), width {4, 8}. Each policy is replayed by `vote.simulate` on every dev question in `--orders` random
orders. The choice: the fewest tokens among the policies whose dev accuracy is at least majority@n's
(n = the dev samples), ties to the higher accuracy.

    python benchmarks/tune_vote.py --questions 68     # the run that chose the shipped defaults
    python benchmarks/tune_vote.py                    # on every dev question collected so far

Writes benchmarks/results/tune_vote.json (the whole grid, sorted, and the choice).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from self_consistency import DEV, ROOT, console, evaluate, load_questions, majority, ours  # noqa: E402

from sia_monitor.guardrail.policy import GuardrailPolicy  # noqa: E402
from sia_monitor.guardrail.vote import VotePolicy  # noqa: E402


def grid(samples: int) -> list[VotePolicy]:
    kills: list[GuardrailPolicy | None] = [None]
    kills += [GuardrailPolicy(min_steps=m, stop_below=b, patience=p)
              for m, b, p in itertools.product((2, 3), (0.1, 0.2, 0.3), (1, 2, 3))]
    return [VotePolicy(samples=samples, width=w, kill=k, weight_power=power, stop_confidence=c, min_votes=v)
            for w, k, power, c, v in itertools.product((4, 8), kills, (1.0, 2.0), (0.7, 0.8, 0.9, 0.95), (2, 3))]


def describe(policy: VotePolicy) -> str:
    kill = "no kill" if policy.kill is None else (
        f"kill < {policy.kill.stop_below:g} x{policy.kill.patience} from step {policy.kill.min_steps}")
    return (f"width {policy.width}, {kill}, power {policy.weight_power:g}, stop {policy.stop_confidence:g} "
            f"after {policy.min_votes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", nargs="+", type=Path, default=DEV)
    parser.add_argument("--samples", type=int, default=8, help="samples per dev question (default 8)")
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--questions", type=int, default=None,
                        help="use only the first N complete dev questions (the shipped defaults: --questions 68)")
    parser.add_argument("--entropy-only", action="store_true",
                        help="score with the entropy-only calibrator instead of the hidden-state one the live vote "
                        "takes in process")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tune_vote.json")
    args = parser.parse_args()
    dev = load_questions(args.dev, args.samples, args.entropy_only)
    if args.questions is not None:
        dev = dict(list(dev.items())[: args.questions])
    if not dev:
        raise SystemExit("no dev question has all its samples yet (see benchmarks/data/vote/README.md)")
    reference = evaluate(majority(args.samples), dev, args.orders)
    floor = statistics.fmean(reference["accuracy"])
    reference_tokens = statistics.fmean(reference["tokens"])
    rows = []
    with console.status(f"replaying {len(grid(args.samples))} policies on {len(dev)} dev questions"):
        for policy in grid(args.samples):
            result = evaluate(ours(policy), dev, args.orders)
            rows.append({"policy": policy.to_json(), "label": describe(policy),
                         "accuracy": round(statistics.fmean(result["accuracy"]), 4),
                         "tokens_ratio": round(statistics.fmean(result["tokens"]) / reference_tokens, 4)})
    eligible = [r for r in rows if r["accuracy"] >= floor - 1e-9]
    chosen = min(eligible, key=lambda r: (r["tokens_ratio"], -r["accuracy"])) if eligible else None
    rows.sort(key=lambda r: (r["tokens_ratio"], -r["accuracy"]))
    out = {"dev_questions": len(dev), "samples": args.samples, "orders": args.orders,
           "calibrator": "entropy-only" if args.entropy_only else "hidden-state (as the live vote in process)",
           f"majority@{args.samples}_accuracy": round(floor, 4), "chosen": chosen, "grid": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"majority@{args.samples} on {len(dev)} dev questions: accuracy {floor:.3f}")
    for row in [r for r in rows if r["accuracy"] >= floor - 1e-9][:8]:
        console.print(f"  {row['label']}: accuracy {row['accuracy']:.3f}, tokens {row['tokens_ratio']:.2f}x")
    if chosen:
        console.print(f"[bold]chosen:[/] {chosen['label']}")


if __name__ == "__main__":
    main()

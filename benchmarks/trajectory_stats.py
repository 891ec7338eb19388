"""Summary of collected trajectory files: accuracy, steps, tokens, answer-space coverage at the last step,
(for files with several samples per question) how many questions got both a right and a wrong trace, and the
collection time per 100 traces (each record's batch wall time over its batch size, as `collect` recorded it).

    python benchmarks/trajectory_stats.py calibrators/data/qwen2.5-coder-0.5b-instruct/*.jsonl.gz
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from sia_monitor.trajectory import read_trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    print("| file | traces | accuracy | mean steps | mean tokens | no parsed answer | last-step covered mass "
          "| questions with a right and a wrong trace | minutes per 100 traces |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.files:
        records = list(read_trajectories(path, skip_truncated_tail=True))
        if not records:
            continue
        last = [r.steps[-1].covered for r in records if r.steps]
        outcomes: dict[str, set[bool]] = defaultdict(set)
        for r in records:
            outcomes[r.item_id or r.question].add(bool(r.correct))
        mixed = f"{sum(len(o) == 2 for o in outcomes.values())} of {len(outcomes)}" \
            if len(outcomes) < len(records) else "– (one trace each)"
        timed = [r.generation["batch_seconds"] / r.generation["batch_size"] for r in records
                 if r.generation.get("batch_seconds") and r.generation.get("batch_size")]
        minutes = f"{100 * statistics.mean(timed) / 60:.1f}" if timed else "–"
        print(
            f"| {path} | {len(records)} | {statistics.mean(bool(r.correct) for r in records):.3f} "
            f"| {statistics.mean(len(r.steps) for r in records):.1f} | {statistics.mean(r.n_tokens for r in records):.0f} "
            f"| {sum(r.parsed_answer is None for r in records)} | {statistics.mean(last):.3f} | {mixed} | {minutes} |"
        )


if __name__ == "__main__":
    main()

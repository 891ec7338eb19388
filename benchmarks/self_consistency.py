"""Self-consistency methods compared on the same saved samples, without a model: accuracy against generated tokens.

Each question's samples (drawn at temperature 0.7 with the monitor on, `benchmarks/data/vote/`) are taken in
`--orders` random orders; a method sees them in that order, and a sample costs the tokens it generated up to its
kill or end (or, cancelled, up to where it was cut off). Methods:

- majority@k (k = 1, 4, 8, 16): the first k samples, the most frequent answer.
- ESC (Li et al. 2024): windows of `--esc-window` samples; stop after the first unanimous window.
- Adaptive-Consistency (Aggarwal et al. 2023): one sample at a time; stop when the leader's Beta posterior
  P(p > 1/2) >= 0.95 (re-implemented: the same criterion as `vote.leader_probability`, unweighted).
- CISC (Taubenfeld et al. 2025): weights softmax(mean token log-probability / T), T chosen on the dev questions.
- self-certainty Borda (Kang et al. 2025): samples ranked by mean self-certainty, Borda weights (n - r + 1) ** 0.5.
- DeepConf-online (Fu et al. 2025), adapted to short traces: `--deepconf-warmup` full traces set the bar
  (the 90th percentile of their lowest group confidence for DeepConf-low, the 10th for DeepConf-high; groups of
  `--deepconf-window` tokens); a later trace is stopped the moment its current group falls below it and does
  not vote; votes weigh by lowest group confidence; stop once the leader holds 95 % of the weight.
- ours (`sia_monitor.guardrail.vote`): P(correct)-weighted, failing samples killed mid-trace, adaptive stop;
  replayed `--width` samples at a time (freed rows take the next sample); and with each part switched off.

P(correct) comes from the calibrator `sia-monitor vote` takes in process (`--calibrator auto`): the shipped
hidden-state one where the samples carry hidden states, which they do; `--entropy-only` takes the entropy-only
one instead. Neither saw these questions (they are in the fixed held-out split). Paired bootstrap 95 % intervals over questions, for the accuracy
difference to majority@16.

    python benchmarks/self_consistency.py
    python benchmarks/self_consistency.py --data benchmarks/data/vote/qwen2.5-coder-0.5b-instruct/svamp-heldout-t0.7.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from calibrators import calibrator_for
from calibrators.features import lowest_window_mean
from sia_monitor.guardrail.replay import score_steps
from sia_monitor.guardrail.vote import VotePolicy, leader_probability, majority_answer, simulate
from sia_monitor.machine import cpu_name
from sia_monitor.tasks.answers import AnswerSpace, answer_key, same_answer
from sia_monitor.trajectory import Trajectory, read_trajectories

console = Console()
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "vote" / "qwen2.5-coder-0.5b-instruct"
HELDOUT = [DATA / "svamp-heldout-t0.7.jsonl.gz", DATA / "gsm8k-heldout-t0.7.jsonl.gz"]
DEV = [DATA / "svamp-train-t0.7.jsonl.gz"]

Method = Callable[[Sequence[Trajectory], AnswerSpace], tuple[str | None, int]]


def weighted_totals(samples: Sequence[Trajectory], weights: Sequence[float], space: AnswerSpace) -> dict[str, float]:
    """Weight per answer (grouped by `answer_key`), in the order the answers were first reached."""
    totals: dict[str, float] = defaultdict(float)
    for trajectory, weight in zip(samples, weights, strict=True):
        key = answer_key(trajectory.parsed_answer, space)
        if key is not None:
            totals[key] += weight
    return totals


def weighted_answer(samples: Sequence[Trajectory], weights: Sequence[float], space: AnswerSpace) -> str | None:
    totals = weighted_totals(samples, weights, space)
    return max(totals, key=lambda a: totals[a]) if totals else None


def majority(k: int) -> Method:
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        chosen = samples[:k]
        return majority_answer(chosen, space), sum(t.n_tokens for t in chosen)
    return method


def esc(window: int) -> Method:
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        drawn: list[Trajectory] = []
        for start in range(0, len(samples), window):
            block = samples[start:start + window]
            drawn += block
            keys = {answer_key(t.parsed_answer, space) for t in block}
            if len(keys) == 1 and None not in keys:
                break
        return majority_answer(drawn, space), sum(t.n_tokens for t in drawn)
    return method


def adaptive_consistency(threshold: float = 0.95) -> Method:
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        counts: dict[str, float] = defaultdict(float)
        tokens, votes = 0, 0
        for trajectory in samples:
            tokens += trajectory.n_tokens
            key = answer_key(trajectory.parsed_answer, space)
            if key is not None:
                counts[key] += 1
                votes += 1
            if votes and leader_probability(dict(counts), votes) >= threshold:
                break
        return (max(counts, key=lambda a: counts[a]) if counts else None), tokens
    return method


def mean_logprob(trajectory: Trajectory) -> float:
    return statistics.fmean(trajectory.token_logprob) if trajectory.token_logprob else -math.inf


def cisc(k: int, temperature: float) -> Method:
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        chosen = samples[:k]
        scores = [mean_logprob(t) / temperature for t in chosen]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        return weighted_answer(chosen, weights, space), sum(t.n_tokens for t in chosen)
    return method


def self_certainty_borda(k: int, power: float = 0.5) -> Method:
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        chosen = samples[:k]
        certainty = [statistics.fmean(t.token_self_certainty) if t.token_self_certainty else 0.0 for t in chosen]
        ranks = sorted(range(len(chosen)), key=lambda i: -certainty[i])
        weights = [0.0] * len(chosen)
        for rank, index in enumerate(ranks, start=1):
            weights[index] = (len(chosen) - rank + 1) ** power
        return weighted_answer(chosen, weights, space), sum(t.n_tokens for t in chosen)
    return method


def deepconf(keep_top: float, window: int, warmup: int, consensus: float = 0.95) -> Method:
    """`keep_top`: 0.1 (DeepConf-low: the bar is the warm-up's 90th percentile) or 0.9 (DeepConf-high)."""
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        first = samples[:warmup]
        lowest = [lowest_window_mean(t.token_confidence, window) for t in first]
        bar = float(np.percentile(lowest, 100 * (1 - keep_top)))
        voters, weights = list(first), list(lowest)
        tokens = sum(t.n_tokens for t in first)
        for trajectory in samples[warmup:]:
            if _share_of_leader(voters, weights, space) >= consensus:
                break
            confidence = np.asarray(trajectory.token_confidence[: trajectory.n_tokens], dtype=float)
            if len(confidence) > window:
                groups = np.convolve(confidence, np.ones(window), mode="valid") / window
                below = np.flatnonzero(groups < bar)
                if below.size:  # stopped at the token that closed the first group under the bar
                    tokens += int(below[0]) + window
                    continue
            tokens += trajectory.n_tokens
            voters.append(trajectory)
            weights.append(lowest_window_mean(trajectory.token_confidence, window))
        return weighted_answer(voters, weights, space), tokens
    return method


def _share_of_leader(samples: Sequence[Trajectory], weights: Sequence[float], space: AnswerSpace) -> float:
    totals = weighted_totals(samples, weights, space)
    total = sum(totals.values())
    return max(totals.values()) / total if total > 0 else 0.0


def parallel_probe(checkpoint: int = 32, stable: int = 2, warmup: int = 2, prune_after: int = 2) -> Method:
    """Parallel-Probe-style (arXiv 2602.03845) on our step probes: all samples run in parallel; every
    `checkpoint` tokens each running sample's current answer is its latest probe's top answer (a finished
    one's, its final answer). Consensus stop: the same leading answer, with a strict majority, at `stable`
    checkpoints in a row. Deviation pruning: after `warmup` checkpoints, a sample whose answer differs from
    the leader's at `prune_after` checkpoints in a row is stopped. The vote is over the current answers."""
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        ends = [t.n_tokens for t in samples]
        pruned: dict[int, int] = {}  # sample -> tokens when pruned
        deviating = [0] * len(samples)
        leaders: list[str | None] = []
        tick = 0
        while True:
            tick += checkpoint
            current: dict[int, str | None] = {}
            for i, t in enumerate(samples):
                if i in pruned:
                    continue
                if tick >= ends[i]:
                    current[i] = answer_key(t.parsed_answer, space)
                else:
                    seen = [s for s in t.steps if s.tokens_so_far <= tick and s.top]
                    current[i] = answer_key(seen[-1].top[0][0], space) if seen else None
            counts: dict[str, int] = defaultdict(int)
            for answer in current.values():
                if answer is not None:
                    counts[answer] += 1
            leader = max(counts, key=lambda a: counts[a]) if counts else None
            leaders.append(leader)
            all_done = all(tick >= ends[i] for i in current)
            agreed = (leader is not None and len(leaders) >= stable and len(set(leaders[-stable:])) == 1
                      and counts[leader] * 2 > len(current))
            if agreed or all_done:
                tokens = sum(min(tick, ends[i]) for i in current) + sum(pruned.values())
                return leader, tokens
            if len(leaders) > warmup and leader is not None:
                for i, answer in current.items():
                    if tick < ends[i]:
                        deviating[i] = deviating[i] + 1 if answer != leader else 0
                        if deviating[i] >= prune_after:
                            pruned[i] = tick
    return method


def ours(policy: VotePolicy) -> Method:
    def method(samples: Sequence[Trajectory], space: AnswerSpace) -> tuple[str | None, int]:
        result = simulate(samples, policy, space)
        return result.answer, result.tokens
    return method


def load_questions(paths: Sequence[Path], samples: int, entropy_only: bool = False) -> dict[str, list[Trajectory]]:
    """Questions with all `samples` samples collected, their steps scored by the shipped calibrator the live
    vote would take: the hidden-state one where every step of the question's samples has hidden states (unless
    `entropy_only`)."""
    grouped: dict[str, list[Trajectory]] = defaultdict(list)
    for path in paths:
        if not path.exists():
            console.print(f"[yellow]missing {path} (not collected yet): skipped[/]")
            continue
        for trajectory in read_trajectories(path, skip_truncated_tail=True):
            grouped[f"{trajectory.benchmark}:{trajectory.item_id}"].append(trajectory)
    complete = {q: sorted(ts, key=lambda t: t.generation.get("sample", 0)) for q, ts in grouped.items()
                if len(ts) >= samples}
    scorers: dict[tuple[str, str, bool], object] = {}
    for question, trajectories in complete.items():
        first = trajectories[0]
        hidden = not entropy_only and all(s.hidden is not None for t in trajectories for s in t.steps)
        key = (first.model_id, first.answer_space.kind, hidden)
        if key not in scorers:
            scorers[key] = calibrator_for(first.model_id, first.answer_space, hidden_states=hidden)
        complete[question] = [score_steps(t, scorers[key]) for t in trajectories[:samples]]  # type: ignore[arg-type]
    return complete


def evaluate(method: Method, questions: dict[str, list[Trajectory]], orders: int) -> dict[str, list[float]]:
    """Per question: accuracy and tokens, averaged over the random orders."""
    accuracy, tokens = [], []
    for question, samples in questions.items():
        hits, cost = 0.0, 0.0
        for order in range(orders):
            shuffled = list(samples)
            random.Random(f"{question}:{order}").shuffle(shuffled)
            answer, used = method(shuffled, samples[0].answer_space)
            hits += answer is not None and same_answer(answer, samples[0].gold or "", samples[0].answer_space)
            cost += used
        accuracy.append(hits / orders)
        tokens.append(cost / orders)
    return {"accuracy": accuracy, "tokens": tokens}


def bootstrap_difference(a: Sequence[float], b: Sequence[float], rounds: int = 2000) -> tuple[float, float]:
    """95 % interval of mean(a - b) over questions resampled with replacement (paired)."""
    generator = random.Random(0)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    means = sorted(statistics.fmean(generator.choices(diffs, k=len(diffs))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def choose_cisc_temperature(dev: dict[str, list[Trajectory]], k: int, orders: int) -> float:
    grid = [0.01, 0.03, 0.1, 0.3, 1.0]
    if not dev:
        return 0.1
    scores = {t: statistics.fmean(evaluate(cisc(k, t), dev, orders)["accuracy"]) for t in grid}
    return max(grid, key=lambda t: (scores[t], t))


def choose_parallel_probe(dev: dict[str, list[Trajectory]], orders: int) -> tuple[int, int]:
    """Checkpoint interval and consensus length, by dev accuracy (ties: the fewer tokens)."""
    grid = [(c, k) for c in (32, 64) for k in (2, 4, 8)]
    if not dev:
        return 32, 4
    scored = {}
    for c, k in grid:
        result = evaluate(parallel_probe(c, k), dev, orders)
        scored[(c, k)] = (statistics.fmean(result["accuracy"]), -statistics.fmean(result["tokens"]))
    return max(grid, key=lambda g: scored[g])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", type=Path, default=HELDOUT, help="held-out sample files")
    parser.add_argument("--dev", nargs="*", type=Path, default=DEV, help="training-question samples, for tuning")
    parser.add_argument("--samples", type=int, default=16, help="samples per question (default 16)")
    parser.add_argument("--dev-samples", type=int, default=8, help="samples per dev question (default 8)")
    parser.add_argument("--orders", type=int, default=20, help="random orders per question (default 20)")
    parser.add_argument("--width", type=int, default=VotePolicy.width,
                        help=f"samples generated at once by ours (default {VotePolicy.width}, the live vote's)")
    parser.add_argument("--esc-window", type=int, default=4)
    parser.add_argument("--deepconf-window", type=int, default=64, help="DeepConf group size in tokens (default 64)")
    parser.add_argument("--deepconf-warmup", type=int, default=4, help="DeepConf warm-up traces (default 4)")
    parser.add_argument("--entropy-only", action="store_true",
                        help="score with the entropy-only calibrator (what the vote takes on an engine)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "self_consistency.json")
    args = parser.parse_args()

    questions = load_questions(args.data, args.samples, args.entropy_only)
    dev = load_questions(args.dev, args.dev_samples, args.entropy_only) if args.dev else {}
    if not questions:
        raise SystemExit("no question has all its samples yet; collect them first (see BENCHMARKS.md)")
    temperature = choose_cisc_temperature(dev, args.dev_samples, args.orders)
    n = args.samples
    methods: dict[str, Method] = {f"majority@{k}": majority(k) for k in (1, 4, 8, n)}
    methods[f"ESC (window {args.esc_window})"] = esc(args.esc_window)
    methods["Adaptive-Consistency (0.95)"] = adaptive_consistency()
    methods[f"CISC@{n} (T={temperature:g})"] = cisc(n, temperature)
    methods[f"self-certainty Borda@{n}"] = self_certainty_borda(n)
    for label, keep in (("low", 0.1), ("high", 0.9)):
        methods[f"DeepConf-{label} online"] = deepconf(keep, args.deepconf_window, args.deepconf_warmup)
    checkpoint, stable = choose_parallel_probe(dev, args.orders)
    methods[f"Parallel-Probe-style (every {checkpoint} tokens, {stable} stable)"] = parallel_probe(checkpoint, stable)
    base = VotePolicy(samples=n, width=args.width)
    methods["ours"] = ours(base)
    methods["ours, no kill"] = ours(replace(base, kill=None))
    methods["ours, no weights"] = ours(replace(base, weighted=False))
    methods["ours, no adaptive stop"] = ours(replace(base, adaptive_stop=False))

    results = {name: evaluate(method, questions, args.orders) for name, method in methods.items()}
    reference = results[f"majority@{n}"]
    reference_tokens = statistics.fmean(reference["tokens"])
    table = Table(title=f"{len(questions)} held-out questions x {n} samples, {args.orders} orders")
    for column in ("method", "accuracy", "tokens / question", "tokens vs maj@16", "acc. - maj@16 (95% CI)",
                   "wins / losses"):
        table.add_column(column)
    rows = []
    for name, result in results.items():
        accuracy, tokens = statistics.fmean(result["accuracy"]), statistics.fmean(result["tokens"])
        low, high = bootstrap_difference(result["accuracy"], reference["accuracy"])
        pairs = list(zip(result["accuracy"], reference["accuracy"], strict=True))
        wins, losses = sum(a > b + 1e-9 for a, b in pairs), sum(a < b - 1e-9 for a, b in pairs)
        rows.append({"method": name, "accuracy": round(accuracy, 4), "tokens": round(tokens, 1),
                     "tokens_ratio": round(tokens / reference_tokens, 3),
                     "difference_ci": [round(low, 4), round(high, 4)], "wins": wins, "losses": losses})
        table.add_row(name, f"{accuracy:.3f}", f"{tokens:.0f}", f"{tokens / reference_tokens:.2f}",
                      f"{accuracy - statistics.fmean(reference['accuracy']):+.3f} ({low:+.3f}, {high:+.3f})",
                      f"{wins} / {losses}")
    console.print(table)
    benchmarks = sorted({q.split(":")[0] for q in questions})
    out = {"questions": len(questions), "benchmarks": benchmarks, "samples": n, "orders": args.orders,
           "width": args.width, "cisc_temperature": temperature, "dev_questions": len(dev),
           "calibrator": "entropy-only" if args.entropy_only else "hidden-state (as the live vote in process)",
           "machine": cpu_name(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    markdown = args.out.with_suffix(".md")
    lines = [f"{len(questions)} held-out questions ({', '.join(benchmarks)}) x {n} samples, {args.orders} orders; "
             f"ours replayed {args.width} samples at a time, P(correct) from the "
             f"{'entropy-only' if args.entropy_only else 'hidden-state'} calibrator; CISC T = {temperature:g} ("
             + (f"chosen on {len(dev)} dev questions)." if dev else "the default: no dev questions collected yet)."), "", "| method | accuracy | tokens / question | tokens vs majority@16 | accuracy - "
             "majority@16 (95% CI) | questions won / lost vs majority@16 |", "|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["difference_ci"]
        gap = row["accuracy"] - statistics.fmean(reference["accuracy"])
        lines.append(f"| {row['method']} | {row['accuracy']:.3f} | {row['tokens']:.0f} | {row['tokens_ratio']:.2f} | "
                     f"{gap:+.3f} ({low:+.3f}, {high:+.3f}) | {row['wins']} / {row['losses']} |")
    markdown.write_text("\n".join(lines) + "\n")
    figure = plot(rows, n, args.out.with_suffix(".png"), f"{len(questions)} held-out questions, {n} samples each")
    console.print(f"[dim]wrote {args.out}, {markdown} and {figure}[/]")


def plot(rows: list[dict], n: int, path: Path, title: str) -> Path:
    """Accuracy against generated tokens per question, one point per method; majority@k joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    majority_rows = [r for r in rows if r["method"].startswith("majority@")]
    ax.plot([r["tokens"] for r in majority_rows], [r["accuracy"] for r in majority_rows], "o-", color="grey",
            label="majority@k (k = 1, 4, 8, %d)" % n)
    for row in rows:
        if row in majority_rows:
            continue
        ours_row = row["method"].startswith("ours")
        ax.scatter(row["tokens"], row["accuracy"], marker="*" if ours_row else "o", s=140 if ours_row else 50,
                   zorder=3)
        ax.annotate(row["method"], (row["tokens"], row["accuracy"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    ax.set_xlabel("generated tokens per question (mean over random orders)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()

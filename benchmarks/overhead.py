"""Cost of monitoring, measured in one run: plain generate vs the KV-cache monitor vs a naive re-encoding monitor.

For each question (interleaved, so machine noise hits all three alike):
  (a) plain `model.generate`, greedy, batch 1;
  (b) `SIAMonitor` with a probe at every step on the live cache, recording hidden states as `collect` does;
  (b') the same without hidden states, to show what recording them costs;
  (c) a naive monitor that, at every step, re-encodes the whole prompt + text + suffix (+ candidates) from
      scratch without the cache — what a monitor without KV reuse costs.
Then: the answer-space coverage of the probes (numeric on SVAMP, labels on ARC-Easy) and collection
throughput at batch 1 vs batch 8 (both with hidden states, as `collect` runs).

    python benchmarks/overhead.py --n 20 --out benchmarks/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track
from transformers import DynamicCache, LogitsProcessorList

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.machine import cpu_name
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.probing.monitor import SIAMonitor
from sia_monitor.probing.probe import run_probe
from sia_monitor.tasks.benchmarks import grade, load_benchmark
from sia_monitor.trajectory import StepRecord

console = Console()


class NaiveMonitor(SIAMonitor):
    """Same steps, same estimator, same single forward per probe — but over the whole text, without a cache."""

    def __init__(self, *args, prompt_ids: torch.Tensor, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.prompt_ids = prompt_ids

    def _probe(self, closed, length):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        assert self.prompt_mask is not None
        for index, step in closed.items():
            row = self.rows[index]
            prompt = self.prompt_ids[index][self.prompt_mask[index].bool()].tolist()
            prefix = prompt + row.tokens + self._suffix(row.space, step.at_line_start)
            tree, plan = row.estimator.plan(prefix, row.context)
            fresh = DynamicCache()
            log_probs = run_probe(self.model, fresh, torch.zeros((1, 0), dtype=torch.long), {0: tree},
                                  self.tokenizer.pad_token_id).log_probs[0]
            dist = row.estimator.read(plan, log_probs)
            row.context.previous = dist
            row.steps.append(StepRecord.from_distribution(len(row.steps), step.token_start, step.token_end,
                                                          step.text, dist))
        self.probe_calls += 1
        self.probe_seconds += time.perf_counter() - started


def timed_generate(mon: Monitor, question: str, space, max_new: int, mode: str) -> tuple[float, list[int], object]:
    encoding, max_new = mon.encode([question], [space], max_new)
    settings = GenerationSettings(max_new_tokens=max_new)
    processors = LogitsProcessorList()
    cache = DynamicCache(config=mon.model.config)
    monitor = None
    if mode != "plain":
        common = (mon.model, mon.tokenizer, cache, space, [question])
        if mode == "monitored":
            monitor = SIAMonitor(*common, model_id=mon.loaded.model_id, hidden_states=HiddenStateSpec())
        elif mode == "monitored_no_hidden":
            monitor = SIAMonitor(*common, model_id=mon.loaded.model_id)
        else:
            monitor = NaiveMonitor(*common, model_id=mon.loaded.model_id, prompt_ids=encoding["input_ids"])
        monitor.begin(encoding["attention_mask"])
        processors.append(monitor)
    started = time.perf_counter()
    with torch.inference_mode():
        out = mon.model.generate(**encoding, cache=cache, max_new_tokens=max_new, logits_processor=processors,
                                 pad_token_id=mon.tokenizer.pad_token_id, **settings.generate_kwargs())
    elapsed = time.perf_counter() - started
    tokens = out[0, encoding["input_ids"].shape[1]:].tolist()
    trajectory = monitor.finish(out)[0] if monitor else None
    return elapsed, tokens, trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="questions per benchmark (default 20)")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--throughput-n", type=int, default=16, help="questions for the batch 1 vs 8 run")
    parser.add_argument("--out", default="benchmarks/results/overhead.json")
    args = parser.parse_args()

    mon = Monitor.load(args.model, hidden_states=HiddenStateSpec())
    svamp = load_benchmark("svamp", args.data_dir, limit=args.n)
    timed_generate(mon, svamp[0].question, svamp[0].space, 16, "plain")  # warm-up

    runs: dict[str, list[tuple[float, int]]] = {"plain": [], "monitored": [], "monitored_no_hidden": [], "naive": []}
    identical = 0
    monitored_trajectories = []
    for item in track(svamp, description="overhead (plain / monitored / without hidden / naive)"):
        results = {mode: timed_generate(mon, item.question, item.space, args.max_new_tokens, mode) for mode in runs}
        for mode, (elapsed, tokens, _) in results.items():
            runs[mode].append((elapsed, len(tokens)))
        identical += len({tuple(result[1]) for result in results.values()}) == 1
        trajectory = results["monitored"][2]
        trajectory.correct = grade(item, trajectory.parsed_answer)  # type: ignore[union-attr]
        monitored_trajectories.append(trajectory)

    def summary(mode: str) -> dict[str, float]:
        seconds = sum(e for e, _ in runs[mode])
        tokens = sum(n for _, n in runs[mode])
        return {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 2)}

    table = {mode: summary(mode) for mode in runs}
    steps = [len(t.steps) for t in monitored_trajectories]
    last_covered = [t.steps[-1].covered for t in monitored_trajectories if t.steps]
    hidden_chars = [len(s.hidden.data) for t in monitored_trajectories for s in t.steps if s.hidden]

    arc = load_benchmark("arc-easy", args.data_dir, limit=args.n)
    arc_last = []
    for item in track(arc, description="ARC-Easy label mass"):
        trajectory = mon.generate(item.question, item.space, GenerationSettings(max_new_tokens=args.max_new_tokens))[0]
        if trajectory.steps:
            arc_last.append(trajectory.steps[-1].covered)

    throughput = {}
    items = load_benchmark("svamp", args.data_dir, limit=args.n + args.throughput_n)[args.n:]
    for batch in (1, 8):
        started, tokens = time.perf_counter(), 0
        for i in track(range(0, len(items), batch), description=f"collection throughput, batch {batch}"):
            chunk = items[i : i + batch]
            out = mon.generate([it.question for it in chunk], [it.space for it in chunk],
                               GenerationSettings(max_new_tokens=args.max_new_tokens))
            tokens += sum(t.n_tokens for t in out)
        seconds = time.perf_counter() - started
        throughput[f"batch_{batch}"] = {"seconds": round(seconds, 1), "tokens": tokens,
                                        "tokens_per_s": round(tokens / seconds, 2)}

    result = {
        "model": args.model,
        "machine": f"{cpu_name()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "questions": args.n,
        "max_new_tokens": args.max_new_tokens,
        "table": table,
        "ratio_monitored_over_plain": round(table["monitored"]["seconds"] / table["plain"]["seconds"], 3),
        "ratio_monitored_no_hidden_over_plain": round(
            table["monitored_no_hidden"]["seconds"] / table["plain"]["seconds"], 3),
        "hidden_state_chars_per_step": round(statistics.mean(hidden_chars)) if hidden_chars else None,
        "ratio_naive_over_plain": round(table["naive"]["seconds"] / table["plain"]["seconds"], 3),
        "identical_tokens": f"{identical}/{len(svamp)}",
        "svamp_accuracy": f"{sum(bool(t.correct) for t in monitored_trajectories)}/{len(svamp)}",
        "svamp_steps_mean": round(statistics.mean(steps), 2),
        "svamp_last_step_covered_mean": round(statistics.mean(last_covered), 3) if last_covered else None,
        "arc_easy_last_step_label_mass_mean": round(statistics.mean(arc_last), 4) if arc_last else None,
        "throughput": throughput,
        "throughput_ratio_batch8_over_batch1": round(
            throughput["batch_8"]["tokens_per_s"] / throughput["batch_1"]["tokens_per_s"], 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    console.print_json(data=result)


if __name__ == "__main__":
    main()

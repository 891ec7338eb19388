"""The server's cost, on the default model: one streaming client against in-process `Monitor.stream`, and
8 concurrent clients against 1, measured in one run on one machine (ratios, not absolute speeds).

Each client is the real `openai` client streaming from a real uvicorn server on loopback (`create_app`, the
app `sia-monitor serve` runs, with the shipped numeric calibrator), on held-out SVAMP questions, greedy.

1. Single client: for each of `--rounds` questions, `Monitor.stream` in process and then one streaming
   request of the same question, alternately, so drift hits both. Tokens/s = completion tokens / wall time from
   the call to the last chunk; time to first token = to the first text.
2. Load: the same `--clients` questions sent one at a time, then all at once from `--clients` threads
   (the server batches them). Aggregate tokens/s = all completion tokens / wall time; per-token latency =
   the gaps between a stream's text chunks (p50 / p95), under each load.

    python benchmarks/serve.py                 # about 7 minutes on 2 cores
    python benchmarks/serve.py --max-tokens 64 --rounds 2

Writes benchmarks/results/serve.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibrators import calibrator_for
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.client import SiaSummary, sia_of
from sia_monitor.machine import cpu_name
from sia_monitor.models import DEFAULT_MODEL
from sia_monitor.serve.app import create_app
from sia_monitor.serve.background import running_server
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import load_benchmark

console = Console()
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Timed:
    """One generation seen from its caller: tokens, wall time, time to first text, gaps between text chunks."""

    tokens: int = 0
    wall_s: float = 0.0
    first_s: float = 0.0
    gaps_s: list[float] = field(default_factory=list)
    batch: int = 1

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def in_process(monitor: Monitor, question: str, settings: GenerationSettings) -> Timed:
    timed, started, last = Timed(), time.perf_counter(), None
    for event in monitor.stream(question, NUMERIC, settings):
        now = time.perf_counter()
        if event.kind == "token" and event.text:
            if last is None:
                timed.first_s = now - started
            else:
                timed.gaps_s.append(now - last)
            last = now
        elif event.kind == "final" and event.trajectory is not None:
            timed.tokens = event.trajectory.n_tokens
    timed.wall_s = time.perf_counter() - started
    return timed


def over_http(client: openai.OpenAI, model: str, question: str, max_tokens: int) -> Timed:
    timed, started, last = Timed(), time.perf_counter(), None
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                                max_tokens=max_tokens, temperature=0, stream=True):
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            if last is None:
                timed.first_s = now - started
            else:
                timed.gaps_s.append(now - last)
            last = now
        if isinstance(summary := sia_of(chunk), SiaSummary):
            timed.tokens, timed.batch = summary.tokens, summary.batch
    timed.wall_s = time.perf_counter() - started
    return timed


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="single-client comparisons (default 8)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per reply (default 128)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()

    questions = [item.question for item in load_benchmark("svamp", split="heldout",
                                                          limit=max(args.rounds, args.clients))]
    monitor = Monitor.load(DEFAULT_MODEL, scorer=calibrator_for(DEFAULT_MODEL, NUMERIC))
    settings = GenerationSettings(max_new_tokens=args.max_tokens)
    app = create_app(monitor, max_batch=args.clients)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with running_server(app) as base, Progress(*columns, console=console) as progress:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=600)
        over_http(client, monitor.model_id, questions[0], 8)  # warm both paths once
        in_process(monitor, questions[0], GenerationSettings(max_new_tokens=8))
        task = progress.add_task("one client vs in process", total=args.rounds)
        pairs = []
        for question in questions[: args.rounds]:
            pairs.append((in_process(monitor, question, settings),
                          over_http(client, monitor.model_id, question, args.max_tokens)))
            progress.advance(task)
        task = progress.add_task("one at a time", total=args.clients)
        alone = []
        for question in questions[: args.clients]:
            alone.append(over_http(client, monitor.model_id, question, args.max_tokens))
            progress.advance(task)
        task = progress.add_task(f"{args.clients} at once", total=args.clients)
        together: list[Timed | None] = [None] * args.clients

        def one(i: int) -> None:
            together[i] = over_http(client, monitor.model_id, questions[i], args.max_tokens)
            progress.advance(task)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        together_wall = time.perf_counter() - started
    loaded = [t for t in together if t is not None]
    local = sum(p[0].tokens for p in pairs) / sum(p[0].wall_s for p in pairs)
    http = sum(p[1].tokens for p in pairs) / sum(p[1].wall_s for p in pairs)
    alone_rate = sum(t.tokens for t in alone) / sum(t.wall_s for t in alone)
    together_rate = sum(t.tokens for t in loaded) / together_wall
    alone_gaps = [g for t in alone for g in t.gaps_s]
    loaded_gaps = [g for t in loaded for g in t.gaps_s]
    summary = {
        "machine": cpu_name(), "model": monitor.model_id, "max_tokens": args.max_tokens, "clients": args.clients,
        "single": {"in_process_tokens_per_s": round(local, 2), "http_tokens_per_s": round(http, 2),
                   "ratio": round(http / local, 3),
                   "in_process_first_token_s": round(statistics.median(p[0].first_s for p in pairs), 3),
                   "http_first_token_s": round(statistics.median(p[1].first_s for p in pairs), 3)},
        "load": {"one_at_a_time_tokens_per_s": round(alone_rate, 2), "together_tokens_per_s": round(together_rate, 2),
                 "speedup": round(together_rate / alone_rate, 3), "batch_sizes": sorted(t.batch for t in loaded),
                 "token_latency_ms": {
                     "alone_p50": round(1000 * percentile(alone_gaps, 50), 1),
                     "alone_p95": round(1000 * percentile(alone_gaps, 95), 1),
                     "loaded_p50": round(1000 * percentile(loaded_gaps, 50), 1),
                     "loaded_p95": round(1000 * percentile(loaded_gaps, 95), 1)},
                 "first_token_s_loaded_median": round(statistics.median(t.first_s for t in loaded), 3)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    single, load = summary["single"], summary["load"]
    latency = load["token_latency_ms"]
    lines = [
        f"Default model, greedy, {args.max_tokens} tokens per reply, held-out SVAMP questions, on {cpu_name()}; "
        "real `openai` client, real uvicorn on loopback.", "",
        "| | tokens/s | time to first token | per-token latency p50 / p95 |", "|---|---|---|---|",
        f"| in process (`Monitor.stream`), {args.rounds} questions | {single['in_process_tokens_per_s']} | "
        f"{single['in_process_first_token_s']} s | |",
        f"| 1 streaming client, same questions | {single['http_tokens_per_s']} ({single['ratio']:.2f}x) | "
        f"{single['http_first_token_s']} s | |",
        f"| 1 client at a time, {args.clients} questions | {load['one_at_a_time_tokens_per_s']} | | "
        f"{latency['alone_p50']} / {latency['alone_p95']} ms |",
        f"| {args.clients} concurrent clients (batches {load['batch_sizes']}) | {load['together_tokens_per_s']} "
        f"aggregate ({load['speedup']:.2f}x) | {load['first_token_s_loaded_median']} s (median) | "
        f"{latency['loaded_p50']} / {latency['loaded_p95']} ms |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

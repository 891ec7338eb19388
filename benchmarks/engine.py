"""The engine backend's cost on a real llama.cpp `llama-server`: monitored against plain generation through the
same engine, in one run (ratios, not absolute speeds), on the default model's GGUF (the verified registry
file, served under its registry name).

1. Overhead: for each of `--n` held-out SVAMP questions, a plain stream (no probes: the backend with
   `probe=False`) and a monitored one, alternately, greedy, `--max-new-tokens` each, on a one-slot server.
   Reported: monitored / plain wall time per token; each probe's cost in decode steps (the extra wall time
   per step over the plain run's time per token); prefix tokens reused per probe request and tokens evaluated
   per probe, from the engine's own counters (`StepRecord.engine`).
2. Concurrency: `--n` questions monitored with one trajectory in flight, then with `--concurrency` in flight
   on a server with as many slots (what `collect --engine URL --concurrency N` does); aggregate tokens/s.

    python benchmarks/engine.py                  # about 10 minutes on 2 cores
    python benchmarks/engine.py --n 4 --model smollm2-135m-instruct

Needs `make llama-server`. Writes benchmarks/results/engine.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.engine import EngineBackend
from sia_monitor.engines import connect
from sia_monitor.engines.llama_cpp import llama_server
from sia_monitor.machine import cpu_name
from sia_monitor.models import DEFAULT_MODEL, registry_gguf
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import load_benchmark
from sia_monitor.trajectory import Trajectory

console = Console()
ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def timed(backend: EngineBackend, questions: list[str], settings: GenerationSettings) -> tuple[list[Trajectory], float]:
    started = time.perf_counter()
    traces = backend.generate(questions, NUMERIC, settings)
    return traces, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registry model to serve (default {DEFAULT_MODEL})")
    parser.add_argument("--n", type=int, default=8, help="questions (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens per generation (default 256)")
    parser.add_argument("--concurrency", type=int, default=4, help="trajectories in flight, part 2 (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine.json")
    args = parser.parse_args()

    questions = [item.question for item in load_benchmark("svamp", split="heldout", limit=args.n)]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    gguf = registry_gguf(args.model)
    pairs: list[tuple[Trajectory, float, Trajectory, float]] = []
    with llama_server(gguf, slots=1, context=4096, threads=args.threads, alias=args.model) as url, \
            Progress(*COLUMNS, console=console) as progress:
        client = connect(url)
        monitored, plain = EngineBackend(client), EngineBackend(client, probe=False)
        timed(monitored, questions[:1], GenerationSettings(max_new_tokens=8))  # warm the engine once
        task = progress.add_task("plain vs monitored", total=len(questions))
        for i, question in enumerate(questions):
            order = [(plain, "plain"), (monitored, "monitored")][:: 1 if i % 2 == 0 else -1]
            runs = {name: timed(backend, [question], settings) for backend, name in order}
            (p_trace,), p_wall = runs["plain"]
            (m_trace,), m_wall = runs["monitored"]
            pairs.append((p_trace, p_wall, m_trace, m_wall))
            progress.advance(task)
    with llama_server(gguf, slots=args.concurrency, context=2048, threads=args.threads, alias=args.model) as url, \
            Progress(*COLUMNS, console=console) as progress:
        client = connect(url)
        rates = {}
        for width in (1, args.concurrency):
            task = progress.add_task(f"{width} in flight", total=1)
            traces, wall = timed(EngineBackend(client, concurrency=width), questions, settings)
            rates[width] = sum(t.n_tokens for t in traces) / wall
            progress.advance(task)

    plain_per_token = sum(p[1] for p in pairs) / sum(p[0].n_tokens for p in pairs)
    monitored_per_token = sum(p[3] for p in pairs) / sum(p[2].n_tokens for p in pairs)
    steps = [s for p in pairs for s in p[2].steps if s.engine]
    # what the monitored runs took beyond their tokens at the plain rate, per probed step
    extra_per_step = (sum(p[3] for p in pairs) - plain_per_token * sum(p[2].n_tokens for p in pairs)) / max(1, len(steps))
    requests = sum(s.engine["probe_requests"] for s in steps)  # type: ignore[index]
    summary = {
        "machine": cpu_name(), "model": args.model, "engine": "llama.cpp llama-server (llama-cpp-python 0.3.36)",
        "threads": args.threads, "questions": len(questions), "max_new_tokens": args.max_new_tokens,
        "overhead": {
            "plain_ms_per_token": round(1000 * plain_per_token, 2),
            "monitored_ms_per_token": round(1000 * monitored_per_token, 2),
            "ratio": round(monitored_per_token / plain_per_token, 3),
            "steps": len(steps), "tokens": sum(p[2].n_tokens for p in pairs),
            "probe_cost_decode_steps": round(extra_per_step / plain_per_token, 2),
            "probe_requests_per_step": round(requests / max(1, len(steps)), 2),
            "prefix_tokens_reused_per_request": round(sum(s.engine["probe_cached"] for s in steps) / max(1, requests), 1),  # type: ignore[index]
            "tokens_evaluated_per_probe": round(sum(s.engine["probe_evaluated"] for s in steps) / max(1, len(steps)), 2),  # type: ignore[index]
            "resume_tokens_evaluated_per_step": round(
                sum(s.engine["continue_evaluated"] for s in steps if s.index > 0)  # type: ignore[index]
                / max(1, sum(s.index > 0 for s in steps)), 2),
            "same_text": sum(p[0].final_text == p[2].final_text for p in pairs),
        },
        "concurrency": {"one_tokens_per_s": round(rates[1], 2),
                        f"{args.concurrency}_tokens_per_s": round(rates[args.concurrency], 2),
                        "speedup": round(rates[args.concurrency] / rates[1], 2)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    o, c = summary["overhead"], summary["concurrency"]
    lines = [
        f"{args.model} GGUF on llama-server ({args.threads} threads), greedy, {args.max_new_tokens} tokens, "
        f"{len(questions)} held-out SVAMP questions, on {cpu_name()}.", "",
        "| measure | result |", "|---|---|",
        f"| monitored / plain wall time per token | {o['ratio']:.2f}x ({o['monitored_ms_per_token']} / "
        f"{o['plain_ms_per_token']} ms) |",
        f"| probe cost | {o['probe_cost_decode_steps']} decode steps per step ({o['steps']} steps, "
        f"{o['probe_requests_per_step']} requests each) |",
        f"| prefix tokens reused per probe request | {o['prefix_tokens_reused_per_request']} |",
        f"| tokens evaluated per probe (all its requests) | {o['tokens_evaluated_per_probe']} |",
        f"| tokens evaluated when resuming after a probe | {o['resume_tokens_evaluated_per_step']} |",
        f"| same text monitored and plain | {o['same_text']} of {len(questions)} |",
        f"| aggregate tokens/s, 1 vs {args.concurrency} in flight | {c['one_tokens_per_s']} vs "
        f"{c[f'{args.concurrency}_tokens_per_s']} ({c['speedup']:.2f}x) |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Throughput on a busy machine: one monitor alone vs two at once, at 1 and 2 torch threads, with OpenMP's
default (spinning) wait policy and with OMP_WAIT_POLICY=PASSIVE.

Why: a 2-core machine that also runs a second monitor, a collection or a test run gives each process fewer
cores than it has threads. OpenMP threads that spin-wait at every barrier for a core they cannot get turn each
parallel region into a wait for the scheduler; a batch that takes 90 s alone was seen to take 642 s. This
measures it in one run, so the configurations are compared as ratios on the same machine.

Each configuration runs in fresh worker processes (the wait policy is read when OpenMP starts, so it cannot be
changed inside one process). A worker loads the default model, warms up, then times `Monitor.generate` (probes
on) over a fixed batch of SVAMP questions; "pair" runs two identical workers at the same moment and reports
both. The figure of merit is tokens per second (all workers together, and per worker).

    python benchmarks/contention.py --out benchmarks/results/contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process: print {"tokens", "seconds"} as a JSON line on stdout."""
    from sia_monitor.backends.base import GenerationSettings
    from sia_monitor.backends.in_process import Monitor
    from sia_monitor.tasks.benchmarks import load_benchmark

    monitor = Monitor.load(args.model)
    items = load_benchmark("svamp", args.data_dir, limit=args.batch)
    questions, spaces = [i.question for i in items], [i.space for i in items]
    monitor.generate(questions[:1], spaces[:1], GenerationSettings(max_new_tokens=8))  # warm-up, not timed
    # Every worker of a pair must be generating while the other is: wait for the agreed start time.
    time.sleep(max(0.0, args.start_at - time.time()))
    started = time.perf_counter()
    trajectories = monitor.generate(questions, spaces, GenerationSettings(max_new_tokens=args.tokens))
    seconds = time.perf_counter() - started
    print(json.dumps({"tokens": sum(t.n_tokens for t in trajectories), "seconds": round(seconds, 3)}), flush=True)


def wait_env(wait: str) -> dict[str, str]:
    """`default` (GNU OpenMP's own: spin 300,000 times, then sleep; set explicitly, because `import sia_monitor`
    would otherwise apply its own default), `PASSIVE` (sleep at once), or `spin:N` (GOMP_SPINCOUNT=N)."""
    if wait == "default":
        return {"GOMP_SPINCOUNT": "300000"}
    if wait == "PASSIVE":
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    if wait.startswith("spin:"):
        return {"GOMP_SPINCOUNT": wait.removeprefix("spin:")}
    raise SystemExit(f"unknown wait policy {wait!r}: use default, PASSIVE or spin:N")


def run_configuration(args: argparse.Namespace, threads: int, wait: str, copies: int) -> list[dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(wait_env(wait), SIA_MONITOR_THREADS=str(threads))
    start_at = time.time() + args.load_seconds  # time for every worker to load before the clock starts
    command = [sys.executable, __file__, "--worker", "--model", args.model, "--batch", str(args.batch),
               "--tokens", str(args.tokens), "--start-at", str(start_at)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(copies)]
    results = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            results.append({"tokens": 0, "seconds": float("inf"), "timed_out": True})
            continue
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise SystemExit(f"worker failed (threads={threads}, wait={wait}): exit {process.returncode}")
        results.append(json.loads(lines[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch", type=int, default=4, help="questions generated together (default 4)")
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per question (default 48)")
    parser.add_argument("--load-seconds", type=float, default=15.0,
                        help="head start for loading before the timed part begins (default 15)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a worker counts as collapsed")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--waits", nargs="+", default=["default", "PASSIVE"],
                        help="OpenMP wait policies: default, PASSIVE, spin:N (default: default PASSIVE)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from sia_monitor.machine import cpu_name

    rows = []
    for threads in args.threads:
        for wait in args.waits:
            for copies in (1, 2):
                console.print(f"threads={threads} wait={wait} copies={copies}")
                results = run_configuration(args, threads, wait, copies)
                tokens = sum(r["tokens"] for r in results)
                wall = max(r["seconds"] for r in results)
                rows.append({
                    "threads": threads, "wait": wait, "copies": copies,
                    "workers": results, "total_tokens_per_s": round(tokens / wall, 2) if wall else 0.0,
                    "per_worker_tokens_per_s": [round(r["tokens"] / r["seconds"], 2) for r in results],
                })
    best_alone = max(r["total_tokens_per_s"] for r in rows if r["copies"] == 1)
    for row in rows:
        row["vs_best_alone"] = round(row["total_tokens_per_s"] / best_alone, 3)
    table = Table("threads", "wait", "processes", "tok/s per process", "tok/s together", "vs best alone")
    for row in rows:
        table.add_row(str(row["threads"]), row["wait"], str(row["copies"]),
                      " / ".join(f"{x:.1f}" for x in row["per_worker_tokens_per_s"]),
                      f"{row['total_tokens_per_s']:.1f}", f"{row['vs_best_alone']:.2f}")
    Console().print(table)
    report = {"machine": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0))},
              "settings": {"model": args.model, "batch": args.batch, "max_new_tokens": args.tokens},
              "command": " ".join(["python", "benchmarks/contention.py", *sys.argv[1:]]), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        staging = args.out.with_name(args.out.name + ".partial")
        staging.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(staging, args.out)


if __name__ == "__main__":
    main()

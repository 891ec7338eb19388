"""How many threads torch uses, and how they wait: chosen so that a shared machine slows down, not collapses.

Measured (`benchmarks/contention.py`, BENCHMARKS.md "A busy machine"): on 2 cores, two monitors at 2 threads
each with OpenMP's default wait (each idle thread spins 300,000 times before it sleeps) ran at 4.6-4.8 tokens/s
each, against 22-24 alone: every parallel region waits for a spinning thread that has no core. With
GOMP_SPINCOUNT=2000 the same pair ran at 11.6-13.3 each, and one monitor alone lost nothing (22.7-23.9).
Sleeping at once (OMP_WAIT_POLICY=PASSIVE) avoids the collapse too but cost a monitor alone 15-40%.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "2000"
THREADS_ENV = "SIA_MONITOR_THREADS"


def set_openmp_wait_default() -> None:
    """Make OpenMP threads spin briefly (GOMP_SPINCOUNT=2000) before sleeping, unless the user chose a wait
    policy (GOMP_SPINCOUNT or OMP_WAIT_POLICY). OpenMP reads these when torch loads it, so this only has an
    effect before `import torch`: `import sia_monitor` first, or set GOMP_SPINCOUNT yourself."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def configure_threads() -> None:
    """Use `$SIA_MONITOR_THREADS` threads, else the cores this process may run on (containers often allow
    fewer than `os.cpu_count()`)."""
    import torch

    wanted = int(os.environ.get(THREADS_ENV, "0")) or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)

"""sia-monitor: step-wise conditional answer entropy inside `transformers.generate`.

The public names are imported lazily so that `sia-monitor --help` and the pure-Python parts (answers, data,
trajectories) do not pay for importing torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sia_monitor.threads import set_openmp_wait_default

__version__ = "0.1.0"
set_openmp_wait_default()  # before anything imports torch: see sia_monitor/threads.py for why and the figures

_SOURCES = {  # where each public name lives, by stage of the data flow
    "tasks.answers": ("AnswerSpace", "AnswerDistribution", "NUMERIC", "parse_answer", "parse_choices"),
    "tasks.benchmarks": ("load_benchmark",),
    "errors": ("SIAError",),
    "models": ("DEFAULT_MODEL", "load_model"),
    "trajectory": ("Trajectory", "StepRecord", "MonitorEvent", "read_trajectories", "write_trajectories"),
    "scoring": ("Prefix", "StepScorer"),
    "probing.monitor": ("SIAMonitor",),
    "probing.stopping": ("RowStopper", "CancelOnEvent"),
    "probing.hidden_states": ("HiddenStateSpec",),
    "backends.base": ("Backend", "GenerationSettings"),
    "backends.in_process": ("Monitor",),
    "guardrail.vote": ("VotePolicy", "VoteResult", "simulate"),
    "guardrail.live_vote": ("LiveVote", "VoteEvent", "run_vote"),
}
_EXPORTS = {name: module for module, names in _SOURCES.items() for name in names}
__all__ = [  # the same names as _EXPORTS (tests/test_api.py checks)
    "AnswerDistribution", "AnswerSpace", "Backend", "CancelOnEvent", "DEFAULT_MODEL", "GenerationSettings",
    "HiddenStateSpec", "LiveVote", "Monitor", "MonitorEvent", "NUMERIC", "Prefix", "RowStopper", "SIAError",
    "SIAMonitor", "StepRecord", "StepScorer", "Trajectory", "VoteEvent", "VotePolicy", "VoteResult",
    "load_benchmark", "load_model", "parse_answer", "parse_choices", "read_trajectories", "run_vote", "simulate",
    "write_trajectories",
]

if TYPE_CHECKING:
    from sia_monitor.backends.base import Backend, GenerationSettings
    from sia_monitor.backends.in_process import Monitor
    from sia_monitor.errors import SIAError
    from sia_monitor.guardrail.live_vote import LiveVote, VoteEvent, run_vote
    from sia_monitor.guardrail.vote import VotePolicy, VoteResult, simulate
    from sia_monitor.models import DEFAULT_MODEL, load_model
    from sia_monitor.probing.hidden_states import HiddenStateSpec
    from sia_monitor.probing.monitor import SIAMonitor
    from sia_monitor.probing.stopping import CancelOnEvent, RowStopper
    from sia_monitor.scoring import Prefix, StepScorer
    from sia_monitor.tasks.answers import NUMERIC, AnswerDistribution, AnswerSpace, parse_answer, parse_choices
    from sia_monitor.tasks.benchmarks import load_benchmark
    from sia_monitor.trajectory import MonitorEvent, StepRecord, Trajectory, read_trajectories, write_trajectories


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sia_monitor' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)

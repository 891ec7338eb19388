"""sia-monitor: step-wise conditional answer entropy inside `transformers.generate`.

The public names are imported lazily so that `sia-monitor --help` and the pure-Python parts (answers, data,
trajectories) do not pay for importing torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .threads import set_openmp_wait_default

__version__ = "0.1.0"
set_openmp_wait_default()  # before anything imports torch: see sia_monitor/threads.py for why and the figures

_EXPORTS = {
    "AnswerSpace": "answers", "AnswerDistribution": "answers", "NUMERIC": "answers", "parse_choices": "answers",
    "parse_answer": "answers", "SIAError": "errors", "load_model": "models", "DEFAULT_MODEL": "models",
    "SIAMonitor": "monitor", "Monitor": "runner", "GenerationSettings": "runner", "RowStopper": "stopping",
    "CancelOnEvent": "stopping", "Trajectory": "trajectory", "StepRecord": "trajectory",
    "MonitorEvent": "trajectory", "read_trajectories": "trajectory", "write_trajectories": "trajectory",
    "load_benchmark": "benchmarks", "Prefix": "scoring", "StepScorer": "scoring",
}
__all__ = [
    "DEFAULT_MODEL", "NUMERIC", "AnswerDistribution", "AnswerSpace", "CancelOnEvent", "GenerationSettings",
    "Monitor", "MonitorEvent", "Prefix", "RowStopper", "SIAError", "SIAMonitor", "StepRecord", "StepScorer", "Trajectory",
    "load_benchmark", "load_model", "parse_answer", "parse_choices", "read_trajectories", "write_trajectories",
]

if TYPE_CHECKING:
    from .answers import NUMERIC, AnswerDistribution, AnswerSpace, parse_answer, parse_choices
    from .benchmarks import load_benchmark
    from .errors import SIAError
    from .models import DEFAULT_MODEL, load_model
    from .monitor import SIAMonitor
    from .runner import GenerationSettings, Monitor
    from .scoring import Prefix, StepScorer
    from .stopping import CancelOnEvent, RowStopper
    from .trajectory import MonitorEvent, StepRecord, Trajectory, read_trajectories, write_trajectories


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sia_monitor' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)

"""The Textual app: watch a generation (live or replayed) step by step, with the guardrail at hand.

- `app`: `SIAMonitorApp` and `create_app(...)`, the factory the CLI (`sia-monitor tui`) and the tests share
- `sources`: `EventSource`, what the app reads events from: `LiveSource` (a model) or `ReplaySource` (a file)
- `widgets/`: one small module per widget (trace, curve, gauge, answers, decisions, status, legend)
- `command`: what `sia-monitor tui` does with its arguments

The app knows nothing about models or files: it gets `MonitorEvent`s from a source and sends it the user's
keys (stop, resample, pause, guardrail on/off). The guardrail itself is `sia_monitor.guardrail.policy`, usable without
any UI. Names are imported lazily, so `sia-monitor --help` does not pay for importing Textual.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {"SIAMonitorApp": "app", "create_app": "app", "EventSource": "sources", "LiveSource": "sources",
            "ReplaySource": "sources"}
__all__ = ["EventSource", "LiveSource", "ReplaySource", "SIAMonitorApp", "create_app"]

if TYPE_CHECKING:
    from .app import SIAMonitorApp, create_app
    from .sources import EventSource, LiveSource, ReplaySource


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tui' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)

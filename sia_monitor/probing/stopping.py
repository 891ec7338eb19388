"""Stopping criteria: cancel a whole generation from another thread, or stop chosen rows.

transformers has no built-in cancel; a StoppingCriteria that reads a `threading.Event` is the usual way, and
it takes effect within one token. A LogitsProcessor cannot end one row, so guardrails that stop a single
trace use `RowStopper`, which returns a per-row bool tensor as `generate` expects.
"""

from __future__ import annotations

import threading

import torch
from transformers import StoppingCriteria


class CancelOnEvent(StoppingCriteria):
    """Stops every row as soon as `event` is set (e.g. by a UI thread or a Ctrl-C handler)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class RowStopper(StoppingCriteria):
    """Stops the rows named with `stop(row)`; thread-safe, so a policy or a UI can call it mid-generation.

    `stopped_at[row]` is the sequence length at which `generate` was told to stop the row: its tokens from
    that position on are padding (an `SIAMonitor` given this stopper skips them).
    """

    def __init__(self) -> None:
        self._rows: set[int] = set()
        self._lock = threading.Lock()
        self.stopped_at: dict[int, int] = {}

    def stop(self, row: int) -> None:
        with self._lock:
            self._rows.add(row)

    @property
    def stopped(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        flags = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in self.stopped:
            if row < flags.shape[0]:
                flags[row] = True
                self.stopped_at.setdefault(row, input_ids.shape[1])
        return flags

"""The status line: model, tokens, tokens/s, step, elapsed, guardrail state."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static


@dataclass
class Status:
    """Everything the status line shows; the app fills it, the widget only formats it."""

    model: str
    tokens: int = 0
    rate: float | None = None  # tokens/s
    step: int = 0
    elapsed: float = 0.0
    guard: str = "guard off"  # the guardrail's state in a word or two
    guard_style: str = "dim"


class StatusLine(Static):
    """`model │ 140 tok, 5.1/s │ step 7 │ 27.5 s │ guard on`; wraps rather than hides when narrow."""

    DEFAULT_CSS = "StatusLine { height: auto; max-height: 2; }"

    def show(self, status: Status) -> None:
        rate = f", {status.rate:.1f}/s" if status.rate is not None else ""
        sep = (" │ ", "dim")
        self.update(Text.assemble(
            (status.model, "bold"), sep, f"{status.tokens} tok{rate}", sep, f"step {status.step}",
            sep, f"{status.elapsed:.1f} s", sep, (status.guard, status.guard_style),
        ))

"""One line explaining the step tints and the step marks of the trace view."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .trace import STEP_MARK, TINTS


def legend_text() -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("tint = Δ entropy (bits): ", style="dim")
    for tint in TINTS:
        text.append(" " + tint.label + " ", style=tint.background or "reverse dim")
        text.append(" ")
    text.append(f" {STEP_MARK}n", style="cyan")
    text.append(" = step n ends", style="dim")
    return text


class Legend(Static):
    """The colour legend (docked at the bottom, above the key footer)."""

    DEFAULT_CSS = "Legend { height: 1; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(legend_text(), id=id, classes=classes)

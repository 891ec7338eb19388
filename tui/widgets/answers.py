"""The top answers of the latest step with their probabilities, as many rows as the panel has."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget


class TopAnswers(Widget):
    """`15  ██████████ 0.98` rows for the latest step's answer distribution, most likely first."""

    DEFAULT_CSS = "TopAnswers { height: 3; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.top: list[tuple[str, float]] = []

    def set_top(self, top: Sequence[tuple[str, float]]) -> None:
        self.top = list(top)
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size.width, max(1, self.content_size.height)
        if not self.top:
            return Text("waiting for step 1", style="dim")
        rows = self.top[:height]
        label_width = min(max(len(a) for a, _ in rows), max(4, width // 3))
        bar_width = max(1, width - label_width - 7)
        text = Text(no_wrap=True, overflow="crop")
        for number, (answer, p) in enumerate(rows):
            label = answer if len(answer) <= label_width else answer[: label_width - 1] + "…"
            filled = round(p * bar_width)
            text.append(f"{label:>{label_width}} ", style="bold" if number == 0 else "")
            text.append("█" * filled, style="#5fa8d3" if number == 0 else "#4a6a80")
            text.append("░" * (bar_width - filled), style="dim")
            text.append(f" {p:4.2f}")
            if number < len(rows) - 1:
                text.append("\n")
        return text

"""The current P(correct) as a number and a bar, with the guardrail's thresholds marked on the bar.

Without a calibrator there is no probability to show, and saying so beats showing an empty bar that
reads like "0%".
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

NO_CALIBRATOR = "P(correct): no calibrator (entropy only)"


class PCorrectGauge(Widget):
    """`P(correct) 0.72` over a bar; `│` marks at `stop_below` (red) and `accept_above` (green)."""

    DEFAULT_CSS = "PCorrectGauge { height: auto; }"

    def __init__(self, calibrated: bool, stop_below: float, accept_above: float | None, *,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.calibrated = calibrated
        self.stop_below = stop_below
        self.accept_above = accept_above
        self.value: float | None = None

    def set_value(self, value: float | None) -> None:
        self.value = value
        self.refresh()

    def colour(self, value: float) -> str:
        if value < self.stop_below:
            return "#e06070"
        if self.accept_above is not None and value >= self.accept_above:
            return "#3fbf6f"
        return "#e0b050" if value < 0.6 else "#8fcf9f"

    def render(self) -> Text:
        if not self.calibrated:
            return Text(NO_CALIBRATOR, style="dim")
        width = max(1, self.content_size.width)
        text = Text(no_wrap=True, overflow="crop")
        text.append("P(correct) ", style="bold")
        if self.value is None:
            text.append("–  waiting for step 1", style="dim")
            value = 0.0
        else:
            value = self.value
            text.append(f"{value:.2f}", style=f"bold {self.colour(value)}")
        text.append("\n")
        filled = round(value * width)
        marks = {min(width - 1, int(self.stop_below * width)): "#e06070"}
        if self.accept_above is not None:
            marks[min(width - 1, int(self.accept_above * width))] = "#3fbf6f"
        for cell in range(width):
            if cell in marks:
                text.append("│", style=f"bold {marks[cell]}")
            elif cell < filled:
                text.append("█", style=self.colour(value))
            else:
                text.append("░", style="dim")
        accept = f" · accept ≥ {self.accept_above:.2f}" if self.accept_above is not None else ""
        text.append(f"\nstop < {self.stop_below:.2f}{accept}", style="dim")
        return text

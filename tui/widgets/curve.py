"""A small bar plot, one bar per step, drawn with eighth blocks: the entropy curve over steps.

Our own rather than `textual.widgets.Sparkline` because a sparkline rescales to its data's min..max, so a
curve that only moves between 0.00 and 0.03 bits would look as dramatic as one falling from 2 bits to 0; this
one keeps 0 at the bottom and a stable top (at least `floor`, rounded up to half a bit), and each bar can
carry the colour of its step's tint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

_BLOCKS = " ▁▂▃▄▅▆▇█"


class CurvePlot(Widget):
    """Bars for `values` (left to right), scaled to 0..top; the newest bars are kept when space runs out."""

    DEFAULT_CSS = "CurvePlot { height: 1fr; min-height: 2; }"

    def __init__(self, floor: float = 1.0, empty: str = "no steps yet", *, ceiling: float | None = None,
                 axis: bool = True, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.floor = floor
        self.ceiling = ceiling  # a fixed top (P(correct): 1), else it follows the data
        self.axis = axis  # a last line naming the first and last step shown
        self.empty = empty
        self.values: list[float] = []
        self.colours: list[str] = []

    def set_values(self, values: Sequence[float], colours: Sequence[str] = ()) -> None:
        self.values = list(values)
        self.colours = list(colours)
        self.refresh()

    @property
    def top(self) -> float:
        """The value at the top of the plot."""
        if self.ceiling is not None:
            return self.ceiling
        highest = max(self.values, default=0.0)
        return max(self.floor, math.ceil(highest * 2) / 2)

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        if not self.values or width < 1 or height < 1:
            return Text(self.empty, style="dim")
        axis = self.axis and height >= 3
        if axis:
            height -= 1
        count = len(self.values)
        bar, gap = (2, 1) if count * 3 <= width else (1, 1) if count * 2 <= width else (1, 0)
        shown = max(1, width // (bar + gap)) if gap else width
        values = self.values[-shown:]
        first = count - len(values) + 1  # the step number of the first bar shown
        colours = (self.colours[-shown:] if len(self.colours) >= len(values) else [""] * len(values))
        top = self.top
        levels = [round(min(v, top) / top * height * 8) for v in values]
        text = Text(no_wrap=True, overflow="crop")
        for row in range(height):
            base = (height - 1 - row) * 8
            for level, colour in zip(levels, colours, strict=True):
                cell = min(8, max(0, level - base))
                if cell == 0 and row == height - 1:
                    text.append("▁" * bar, style="dim")  # a zero bar still shows where its step is
                else:
                    text.append(_BLOCKS[cell] * bar, style=colour or None)
                if gap:
                    text.append(" " * gap)
            if row < height - 1:
                text.append("\n")
        if axis:
            left, right = f"step {first}", str(count)
            used = len(values) * (bar + gap) - gap
            span = max(used, len(left) + len(right) + 1)
            text.append("\n" + left + right.rjust(span - len(left)) if count > first else "\n" + left,
                        style="dim")
        return text

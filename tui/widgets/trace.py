"""The generation as it streams in, each finished step tinted by how much it changed the answer entropy.

Why tint by the change and not the level: the SIA signal is that a useful step adds information, i.e. lowers
H(A | question, steps so far). A step that raises it is where a trace starts to wander, which is what a
reader wants to spot. The first step has nothing to compare with and stays untinted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from sia_monitor.trajectory import StepRecord

_SPLIT = re.compile(r"(\s*)(.*?)(\s*)$", re.DOTALL)
STEP_MARK = "¶"


@dataclass(frozen=True)
class Tint:
    """One colour of the step tint: the entropy change range it covers, its label, and its styles."""

    name: str
    label: str
    background: str  # the step's text background ("" = none)
    colour: str  # for the entropy bar of such a step
    low: float  # covers changes in [low, high) bits
    high: float


# Backgrounds are exact xterm-256 colours, so a 256-colour terminal shows four different tints (the earlier
# #1d5c36 and #2b4433 both became colour 23 there, and the legend could not be read).
TINTS: tuple[Tint, ...] = (
    Tint("big-drop", "≤−0.5", "on #008700", "#3fbf6f", float("-inf"), -0.5),
    Tint("drop", "−0.5…−0.1", "on #005f00", "#8fcf9f", -0.5, -0.1),
    Tint("flat", "±0.1", "", "#9aa5b1", -0.1, 0.1),
    Tint("rise", "≥+0.1", "on #870000", "#e06070", 0.1, float("inf")),
)
FLAT = TINTS[2]


def tint_for(change: float | None) -> Tint:
    """The tint of a step whose entropy changed by `change` bits since the previous step (None: first step)."""
    if change is None:
        return FLAT
    for tint in TINTS:
        if tint.low <= change < tint.high:
            return tint
    return FLAT


class TraceView(VerticalScroll):
    """The streamed text: closed steps tinted and marked `¶n`, the step being written plain.

    Tokens and steps are added as they arrive; `render_text()` is called once per UI flush, so a fast
    stream costs one re-render per flush, not one per token. It follows the end until the user scrolls up.
    """

    DEFAULT_CSS = """
    TraceView { height: 1fr; }
    TraceView > #trace-text { width: 1fr; height: auto; min-height: 100%; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._done_text = Text()
        self._pending: list[str] = []
        self._dirty = True

    def compose(self) -> ComposeResult:
        yield Static(id="trace-text")

    def reset(self, header: Text | str = "") -> None:
        """Start over (a new attempt) with an optional header line."""
        self._done_text = Text()
        if header:
            self._done_text.append_text(header if isinstance(header, Text) else Text(header, style="dim italic"))
            self._done_text.append("\n\n")
        self._pending.clear()
        self._dirty = True

    def add_token(self, text: str) -> None:
        self._pending.append(text)
        self._dirty = True

    def add_forced(self, text: str) -> None:
        """The answer line a guardrail forced, set apart from the model's own reasoning."""
        self.flush_pending()
        self._done_text.rstrip()
        self._done_text.append(text, style="bold #e0b050")
        self._done_text.append("  ← forced by the guardrail", style="dim")
        self._dirty = True

    def close_step(self, step: StepRecord, change: float | None) -> None:
        """The text since the last step is step `step.index`: tint it, mark its end."""
        chunk = "".join(self._pending)
        self._pending.clear()
        match = _SPLIT.match(chunk)
        lead, body, trail = match.groups() if match else ("", chunk, "")
        self._done_text.append(lead)
        self._done_text.append(body, style=tint_for(change).background or None)
        self._done_text.append(f" {STEP_MARK}{step.index + 1}", style="dim cyan")
        self._done_text.append(trail)
        self._dirty = True

    def flush_pending(self) -> None:
        if self._pending:
            self._done_text.append("".join(self._pending))
            self._pending.clear()
            self._dirty = True

    @property
    def text(self) -> Text:
        """What the view shows: the closed steps with their tints and marks, then the step being written."""
        text = self._done_text.copy()
        text.append("".join(self._pending))
        return text

    @property
    def plain(self) -> str:
        return self._done_text.plain + "".join(self._pending)

    def render_text(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.query_one("#trace-text", Static).update(self.text)

    def on_mount(self) -> None:
        self.anchor()  # stay at the end as text arrives, until the user scrolls away

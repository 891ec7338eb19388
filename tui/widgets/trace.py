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
from textual.containers import Vertical, VerticalScroll
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


class _TraceBody(VerticalScroll):
    """The scrolling part of `TraceView`; tells it when the user scrolls (for its title). While anchored, the
    compositor moves the scroll position during layout without running watchers, so `TraceView.render_text`
    refreshes the title after each refresh instead."""

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:  # the user scrolled
        super().watch_scroll_y(old_value, new_value)
        if isinstance(self.parent, TraceView):
            self.parent.show_title()


class TraceView(Vertical):
    """The question, pinned, over the streamed text: closed steps tinted and marked `¶n`, the step being written
    plain.

    Tokens and steps are added as they arrive; `render_text()` is called once per UI flush, so a fast
    stream costs one re-render per flush, not one per token. The text follows the end until the user scrolls up.

    Why the question is pinned and the scrollbar hidden: scrolled to the end, the view used to begin mid-question
    (a stray "monday?" at the top) and the 1-column scrollbar drew a lone "▁" inside the text. Now the question
    always reads whole (up to `QUESTION_LINES` lines), and the title says how many lines are above the view.
    """

    QUESTION_LINES = 3
    DEFAULT_CSS = """
    TraceView { height: 1fr; }
    TraceView > #trace-question { height: auto; border-bottom: dashed $secondary 40%; }
    TraceView > #trace-body { height: 1fr; scrollbar-size-vertical: 0; }
    TraceView #trace-text { width: 1fr; height: auto; min-height: 100%; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._done_text = Text()
        self._pending: list[str] = []
        self._dirty = True
        self._question = ""
        self._title = ""

    def compose(self) -> ComposeResult:
        yield Static(id="trace-question")
        with _TraceBody(id="trace-body"):
            yield Static(id="trace-text")

    def on_mount(self) -> None:
        self.query_one(_TraceBody).anchor()  # stay at the end as text arrives, until the user scrolls away

    def on_resize(self) -> None:
        self._show_question()

    def set_question(self, question: str) -> None:
        """The question shown above the text for the whole session (attempts share it)."""
        self._question = " ".join(question.split())
        self._show_question()

    def set_title(self, title: str) -> None:
        """The border title; a count of the lines scrolled out of view is added to it while there are any."""
        self._title = title
        self.show_title()

    @property
    def lines_above(self) -> int:
        """Lines of text above the visible part (0 at the top)."""
        return max(0, round(self.query_one(_TraceBody).scroll_y))

    def show_title(self) -> None:
        above = self.lines_above
        lines = "line" if above == 1 else "lines"
        self.border_title = f"{self._title} · ↑{above} {lines} above" if above else self._title

    def _show_question(self) -> None:
        """The question, wrapped to the view's width and cut to `QUESTION_LINES` lines with an ellipsis."""
        widget = self.query_one("#trace-question", Static)
        width = widget.content_region.width or max(self.content_region.width, 20)
        text = Text.assemble(("Q: ", "bold"), (self._question, "italic"))
        lines = text.wrap(self.app.console, width)
        if len(lines) > self.QUESTION_LINES:
            kept = lines[: self.QUESTION_LINES]
            last = kept[-1]
            last.rstrip()
            last.truncate(width - 1)
            last.append("…")
            text = Text("\n").join(kept)
        widget.update(text)

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
        self.call_after_refresh(self.show_title)  # the anchored scroll position is known after layout

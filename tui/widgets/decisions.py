"""What happened, newest last: guardrail and user decisions with their reasons, attempts, saves, exports."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

_STYLES = {"stop": "bold #e06070", "resample": "bold #e0b050", "accept": "bold #3fbf6f", "kept": "bold #5fa8d3",
           "info": "dim"}


class DecisionLog(VerticalScroll):
    """A scrolling log; `add(kind, text)` with kind stop / resample / accept (decisions), kept (the attempt a
    run keeps) or info (anything else, dimmed)."""

    DEFAULT_CSS = """
    DecisionLog { height: 1fr; }
    DecisionLog > #log-text { width: 1fr; height: auto; min-height: 100%; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.entries: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield Static(Text("no decisions yet", style="dim"), id="log-text")

    def add(self, kind: str, message: str) -> None:
        self.entries.append((kind, message))
        text = Text()
        for number, (entry_kind, entry) in enumerate(self.entries):
            if number:
                text.append("\n")
            if entry_kind in ("stop", "resample", "accept", "kept"):
                text.append(f"{entry_kind} ", style=_STYLES[entry_kind])
                text.append(entry)
            else:
                text.append(entry, style=_STYLES["info"])
        self.query_one("#log-text", Static).update(text)

    def on_mount(self) -> None:
        self.anchor()  # newest entry in view, until the user scrolls away

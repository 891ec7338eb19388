"""How every command talks to the user when something is wrong: one line, never a traceback or a usage block."""

from __future__ import annotations

import argparse
import contextlib
import warnings
from collections.abc import Iterator
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from sia_monitor.errors import SIAWarning


def error_console() -> Console:
    """stderr, wrapped softly so a long path stays on its one line."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is), exit 2.

    Why: argparse prints the whole usage block first, and the line that matters comes last.
    """

    def error(self, message: str) -> NoReturn:
        error_console().print(
            f"[bold red]error:[/] {escape(message)} (see `{escape(self.prog)} --help`)")
        self.exit(2)


@contextlib.contextmanager
def one_line_warnings(err: Console) -> Iterator[None]:
    """Print every `SIAWarning` as one `warning: ...` line on `err` (as errors are printed), not in Python's
    two-line form with a file name and source line that mean nothing to a user. Other warnings are untouched."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, SIAWarning):
            err.print(f"[bold yellow]warning:[/] {escape(str(message))}")
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous

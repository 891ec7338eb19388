"""The one exception type that reaches users.

Every failure a user can cause (bad input, missing data, a model that cannot be loaded) is raised as
`SIAError` with a message that says what is wrong and what to do; the CLI prints it as one line and exits
non-zero. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class SIAError(Exception):
    """A user-facing error: `str(err)` is a complete sentence, including the fix where one exists."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}" if hint else message)


class SIAWarning(UserWarning):
    """A user-facing warning (something the user should know, that does not stop the work): the CLI prints it
    as one line, `warning: ...`, the way it prints an `SIAError`."""

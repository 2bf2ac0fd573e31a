"""User-facing errors: one line that says what is wrong and what to do."""
from __future__ import annotations


class LoopscapeError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    ``hint`` says what to do about it; the CLI prints ``message`` and ``hint`` on one line.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class Cancelled(Exception):
    """The run was cancelled by a signal; nothing that looks complete is left behind."""

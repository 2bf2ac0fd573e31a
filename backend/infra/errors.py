"""User-facing errors: one line that says what is wrong and what to do."""
from __future__ import annotations

from contract import LoopscapeError  # one error class for both processes: message + hint

__all__ = ["Cancelled", "LoopscapeError"]


class Cancelled(Exception):
    """The run was cancelled by a signal; nothing that looks complete is left behind."""

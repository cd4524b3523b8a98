"""The clean, reportable failure of one item."""

from __future__ import annotations


class WorkerError(Exception):
    """A clean, reportable failure of one item (the parent shows `cause` verbatim)."""

    def __init__(self, cause: str, limit: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.limit = limit

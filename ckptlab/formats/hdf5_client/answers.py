"""The worker's answers as the parent reads them: a line as a dict, or the error it stands for."""

from __future__ import annotations

import json
from typing import Any

from ...errors import FormatError, LimitError
from ..limits import Limits
from .child import Child, WorkerTimeout, oom_cause, timeout_cause


def parse_answer(line: bytes) -> dict[str, Any]:
    """One answer line as a dict; anything else is a FormatError (without a path)."""
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise FormatError(None, f"HDF5 worker sent a malformed answer ({line[:80]!r})")
    return answer


def answer_error(answer: dict[str, Any], limits: Limits) -> str:
    """The cause a failed answer gives, with the worker's `oom` spelled out."""
    cause = str(answer.get("error", "unknown error"))
    return oom_cause(limits) if cause == "oom" else cause


class ChildGone(FormatError):
    """The child died, hung or answered garbage while on this item: it cannot serve another."""

    def __init__(self, path: str, cause: str, exited: bool = False) -> None:
        super().__init__(path, cause)
        self.exited = exited  # it ended (rather than hung or sent garbage)


def next_answer(
    child: Child, path: str, deadline: float, max_bytes: int, limits: Limits, linger: float = 0.0
) -> dict[str, Any]:
    """The child's next answer (ok or not). A child that died, hung or answered garbage raises the error
    that stands for it, with `path` set: the caller then needs a new child."""
    try:
        line = child.read_line(deadline, max_bytes, linger)
    except WorkerTimeout:
        raise ChildGone(path, timeout_cause(limits)) from None
    except LimitError as exc:
        raise LimitError(path, exc.cause) from None
    if line is None:
        raise ChildGone(path, child.failure(limits), exited=True)
    try:
        return parse_answer(line)
    except FormatError as exc:
        raise ChildGone(path, exc.cause) from None


def answer_exception(answer: dict[str, Any], path: str, limits: Limits) -> FormatError:
    """The error a failed answer stands for: a LimitError when the worker says a limit was hit."""
    err = LimitError if answer.get("limit") else FormatError
    return err(path, answer_error(answer, limits))


def plain(exc: FormatError) -> FormatError:
    """The error as callers see it (a LimitError stays one)."""
    return exc if type(exc) is not ChildGone else FormatError(exc.path, exc.cause)

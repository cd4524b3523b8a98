"""Requests to one worker at a time: a dataset read (`run_dataset`), and metadata items (`Runner`), which go
on in a new worker after a crash, a timeout or a `bye`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ...errors import FormatError, LimitError
from ..limits import Limits
from .answers import ChildGone, answer_exception, next_answer, plain
from .child import Child, WorkerTimeout, timeout_cause
from .pool import POOL, release, reusable

_IDLE_EXIT_S = 120.0  # a worker with no request for this long exits by itself
_LINGER_S = 0.005  # wait before reading the next answers of a batch (see Child._fill)...
_LINGER_MIN_LEFT = 8  # ...while more than this many are still to come


def _request(op: str, limits: Limits, **fields: Any) -> dict[str, Any]:
    """A request of either op, with the fields every request carries: the memory cap a fresh worker sets
    from its first request, and the idle time after which the worker exits if no request follows."""
    return {
        "op": op,
        **fields,
        "memory_bytes": limits.hdf5_memory_bytes,
        "idle_exit_s": _IDLE_EXIT_S,
    }


def _meta_request(items: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    return _request(
        "meta",
        limits,
        items=items,
        max_objects=limits.max_hdf5_objects,
        max_attr_bytes=limits.max_keras_member_bytes,
    )


def run_dataset(path: str, member: str | None, dataset: str, limits: Limits) -> tuple[dict[str, Any], bytes]:
    """(header, raw bytes) of one dataset, read by a pooled worker."""
    child = POOL.take(limits.hdf5_memory_bytes)
    healthy = False
    try:
        child.send(_request("dataset", limits, path=path, member=member, dataset=dataset))
        deadline = time.monotonic() + limits.hdf5_timeout_s
        try:
            header = next_answer(child, path, deadline, limits.max_keras_member_bytes, limits)
        except ChildGone as exc:
            raise plain(exc) from None
        if not header.get("ok"):
            healthy = not header.get("bye")
            raise answer_exception(header, path, limits)
        nbytes = int(header["nbytes"])
        if nbytes > limits.hdf5_memory_bytes:  # the unread bytes leave this child out of step: it ends
            cap = limits.hdf5_memory_bytes
            raise LimitError(path, f"dataset {dataset} has {nbytes} bytes (limit {cap})")
        try:
            data = child.read_exact(nbytes, deadline)
        except WorkerTimeout:
            raise FormatError(path, timeout_cause(limits)) from None
        if data is None:
            raise FormatError(path, child.failure(limits))
        healthy = True
        child.served += 1
    finally:
        release(child, healthy)
    return header, data


class Runner:
    """Sends items to one worker at a time, replacing it after a crash, a timeout or a `bye`."""

    def __init__(self, limits: Limits, child: Child | None = None) -> None:
        self.limits = limits
        self.child = child

    def run(self, items: list[dict[str, Any]], first: int = 0) -> Iterator[tuple[int, Any]]:
        """(first + k, facts or FormatError) for each item k, in order, as the worker answers."""
        limits = self.limits
        pos = 0
        retried = False
        while pos < len(items):
            child = self.child if self.child is not None else POOL.take(limits.hdf5_memory_bytes, retried)
            self.child = None
            reused = child.served > 0
            start = pos
            pending = items[pos:]
            child.send(_meta_request(pending, limits))
            healthy = False
            try:
                for k, item in enumerate(pending):
                    deadline = time.monotonic() + limits.hdf5_timeout_s
                    # never delay the last answers: a batch's tail would wait for answers that are there
                    linger = _LINGER_S if len(pending) - k > _LINGER_MIN_LEFT else 0.0
                    try:
                        answer = next_answer(
                            child, item["path"], deadline, limits.hdf5_memory_bytes, limits, linger
                        )
                    except ChildGone as exc:
                        # a pooled worker that ended before its first answer (killed while idle, or the
                        # rare idle exit) says nothing about this file: one retry in a fresh worker
                        if exc.exited and reused and pos == start and not retried:
                            retried = True
                        else:
                            yield first + pos, plain(exc)
                            pos += 1
                        break
                    except LimitError as exc:  # an oversized answer: the stream is out of step
                        yield first + pos, exc
                        pos += 1
                        break
                    facts = answer.get("facts")
                    if answer.get("ok") and not isinstance(facts, dict):
                        yield first + pos, FormatError(item["path"], "HDF5 worker answered without facts")
                        pos += 1
                        break
                    result = facts if answer.get("ok") else answer_exception(answer, item["path"], limits)
                    child.items += 1
                    yield first + pos, result
                    pos += 1
                    if answer.get("bye"):
                        break
                else:
                    healthy = True
            finally:
                if healthy and reusable(child):
                    child.served += 1
                    self.child = child
                else:
                    child.close()

    def finish(self) -> None:
        """Give the worker back to the pool."""
        if self.child is not None:
            child, self.child = self.child, None
            release(child, True)

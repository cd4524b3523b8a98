"""The worker's protocol: the request loop on stdin, one JSON answer per item on a private stdout, failures
as answers, and the memory cap (see the package docstring)."""

from __future__ import annotations

import json
import os
import select
import sys
from typing import Any

# these import numpy and h5py when the worker starts, before any request: the parent starts it ahead of
# need, so the slow import overlaps the parent's own work; and the memory cap, set later, is for what a
# hostile file makes libhdf5 allocate, while numpy and h5py reserve address space at import in amounts
# that vary by machine
from .dataset import read_dataset
from .errors import WorkerError
from .walk import read_meta


def _limit_resources(memory_bytes: int | None) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: only the parent's timeout applies
        return

    # a crafted file that crashes libhdf5 must not leave core files behind
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))


def _answer(out: Any, doc: dict[str, Any]) -> None:
    try:
        line = json.dumps(doc)
    except (TypeError, ValueError) as exc:
        # a value no conversion in `values` foresaw: fail this item, not the batch
        line = json.dumps({"ok": False, "error": f"cannot encode HDF5 metadata ({exc})"})
    out.write(line.encode() + b"\n")
    out.flush()


def _failure(exc: Exception) -> dict[str, Any]:
    """The answer for an item that raised. libhdf5's own checks (a corrupt superblock, heap or B-tree) fail
    cleanly and leave the library usable, so the worker goes on; anything this code did not foresee makes
    it answer `bye` and exit, rather than parse more files in a state nobody checked."""
    if isinstance(exc, WorkerError):
        return {"ok": False, "error": exc.cause, "limit": exc.limit}
    # still one clean answer, not a traceback
    return {"ok": False, "error": f"cannot read HDF5 ({type(exc).__name__}: {exc})", "bye": True}


def _serve(req: dict[str, Any], out: Any) -> bool:
    """Answer one request; False when the worker must exit after it."""
    if req.get("op") == "dataset":
        try:
            read_dataset(req, out)
        except MemoryError:
            raise
        except Exception as exc:
            doc = _failure(exc)
            _answer(out, doc)
            return "bye" not in doc
        out.flush()
        return True
    for item in req.get("items", []):
        try:
            doc = read_meta(item, req)
        except MemoryError:
            raise
        except Exception as exc:  # one odd file must not end the whole batch
            doc = _failure(exc)
        _answer(out, doc)
        if "bye" in doc:
            return False
    return True


class _Lines:
    """Request lines from a file descriptor, with an idle timeout (no buffering behind select's back)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, idle_s: float | None) -> bytes | None:
        """The next line, or None at end of input or after `idle_s` seconds without one."""
        while b"\n" not in self.buf:
            if idle_s is not None and not select.select([self.fd], [], [], idle_s)[0]:
                return None
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                line, self.buf = self.buf, b""
                return line or None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def main(argv: list[str] | None = None) -> int:
    """Serve requests from stdin until it closes or stays idle, or answer the one given in `argv`; the
    exit status."""
    argv = sys.argv[1:] if argv is None else argv
    # answers go to a private copy of stdout; fd 1 itself now points at stderr, so anything libhdf5 or a
    # filter plugin prints cannot corrupt the protocol
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    if not argv:
        _answer(out, {"ready": True})  # the hello: imports done, requests are answered at once from now on
    lines = _Lines(0)
    limited = False
    idle_s: float | None = None
    while True:
        raw = argv[0].encode() if argv else lines.next(idle_s)
        if raw is None:
            return 0
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            _answer(out, {"ok": False, "error": f"bad request ({exc})", "bye": True})
            return 2
        if not limited:
            _limit_resources(req.get("memory_bytes"))
            limited = True
        idle_s = req.get("idle_exit_s")
        try:
            go_on = _serve(req, out)
        except MemoryError:
            # state after a failed allocation is suspect: answer, then exit; the parent restarts for the rest
            _answer(out, {"ok": False, "error": "oom", "bye": True})
            return 3
        if argv or not go_on:
            return 0

"""One worker process: requests written without blocking, answers read with deadlines, and why it stopped
answering (a signal, an out-of-memory, an error exit or a timeout)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import tempfile
import time
from typing import Any

from ...errors import LimitError
from ..limits import Limits
from .launch import worker_env

_MiB = 1024 * 1024
_PIPE_BYTES = 1 << 20


class WorkerTimeout(Exception):
    """The child sent nothing before the deadline."""


class Child:
    """One worker process: requests written without blocking, answers read with deadlines.

    The worker caps its address space with the first request's `memory_bytes`, so a child only ever serves
    requests made under one memory limit (`key`).
    """

    def __init__(self, argv: list[str], memory_bytes: int) -> None:
        self.key = (tuple(argv), memory_bytes)
        self.served = 0  # requests answered in full
        self.items = 0  # files it has answered for
        self.last_used = time.monotonic()
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; close() closes it
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=worker_env(),
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in_fd = self.proc.stdin.fileno()
        self._out_fd = self.proc.stdout.fileno()
        # non-blocking writes: a child that stops reading must not block us past the timeout
        os.set_blocking(self._in_fd, False)
        # room for a few hundred answers, so a worker never waits for us while we linger (see _fill);
        # Linux only, and the default 64 KiB still works
        with contextlib.suppress(ImportError, OSError, AttributeError):
            import fcntl

            fcntl.fcntl(self._out_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._pending = bytearray()  # request bytes not yet written
        self._buf = bytearray()
        self._pos = 0  # start of the unread part of _buf
        self._eof = False
        self._ready = False  # the worker's hello line (sent once its imports are done) was read
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._out_fd, selectors.EVENT_READ)

    def send(self, request: dict[str, Any]) -> None:
        self._pending += json.dumps(request).encode() + b"\n"
        self._write()

    def _write(self) -> None:
        try:
            n = os.write(self._in_fd, self._pending)
        except BlockingIOError:
            n = 0
        except OSError:  # the child died early; its exit status tells why
            n = len(self._pending)
        del self._pending[:n]
        registered = self._in_fd in self._sel.get_map()
        if self._pending and not registered:
            self._sel.register(self._in_fd, selectors.EVENT_WRITE)
        elif not self._pending and registered:
            self._sel.unregister(self._in_fd)

    def _fill(self, deadline: float, linger: float = 0.0) -> None:
        """Read what the child wrote. `linger` first lets more answers pile up in the pipe: waking up for
        every ~2 KB answer of a batch cost the parent ~0.1 ms of CPU each, more than parsing the answer."""
        if linger > 0:
            time.sleep(min(linger, max(0.0, deadline - time.monotonic())))
        remaining = deadline - time.monotonic()
        events = self._sel.select(max(remaining, 0.0)) if remaining > 0 or linger > 0 else []
        if not events:
            raise WorkerTimeout
        for key, _ in events:
            if key.fd == self._in_fd:
                self._write()
                continue
            chunk = os.read(self._out_fd, 1 << 20)
            if chunk:
                if self._pos > 1 << 16:  # drop consumed bytes now and then, not on every line
                    del self._buf[: self._pos]
                    self._pos = 0
                self._buf += chunk
            else:
                self._eof = True

    def _line(self, deadline: float, max_bytes: int, linger: float = 0.0) -> bytes | None:
        while True:
            nl = self._buf.find(b"\n", self._pos)
            if nl >= 0:
                line = bytes(self._buf[self._pos : nl])
                self._pos = nl + 1
                return line
            if self._eof:
                return None
            if len(self._buf) - self._pos > max_bytes:
                raise LimitError(None, f"HDF5 worker answer over {max_bytes} bytes")
            self._fill(deadline, linger)

    def wait_ready(self, deadline: float) -> bool:
        """Wait for the worker's hello (its imports done); False when it exited first."""
        if not self._ready:
            line = self._line(deadline, 1 << 16)
            if line is None:
                return False
            self._ready = True
        return True

    def read_line(self, deadline: float, max_bytes: int, linger: float = 0.0) -> bytes | None:
        """One answer line, or None when the child exited first. `linger`: see `_fill`."""
        if not self.wait_ready(deadline):
            return None
        return self._line(deadline, max_bytes, linger)

    def read_exact(self, n: int, deadline: float) -> bytes | None:
        while len(self._buf) - self._pos < n:
            if self._eof:
                return None
            self._fill(deadline)
        with memoryview(self._buf) as view:  # one copy of a dataset's bytes, not two
            data = view[self._pos : self._pos + n].tobytes()
        del self._buf[: self._pos + n]
        self._pos = 0
        return data

    def failure(self, limits: Limits) -> str:
        """Why the child stopped answering: a signal, an out-of-memory, or an error exit."""
        rc = self.proc.wait()
        self._err.seek(0, 2)
        self._err.seek(max(0, self._err.tell() - 4096))
        tail = self._err.read().decode("utf-8", "replace").strip()
        if rc < 0:
            return f"HDF5 parser crashed (signal {-rc})"
        if "MemoryError" in tail:
            return oom_cause(limits)
        last = tail.splitlines()[-1] if tail else "no output"
        return f"HDF5 parser failed (exit {rc}: {last})"

    def alive(self) -> bool:
        return self.proc.poll() is None and not self._eof

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._sel.close()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):  # a broken pipe to a dead child
                pipe.close()
        self._err.close()


def timeout_cause(limits: Limits) -> str:
    """The cause shown for a child that did not answer in time."""
    return f"HDF5 parser timed out after {limits.hdf5_timeout_s:g}s"


def oom_cause(limits: Limits) -> str:
    """The cause shown for a child that ran out of memory."""
    return f"HDF5 parser ran out of memory (limit {limits.hdf5_memory_bytes // _MiB} MiB)"

"""The client side of the isolated h5py worker: start it, send a JSON request, read answers with a
deadline, and turn a crash, timeout or out-of-memory of the child into one clear cause.

The parent never imports h5py: HDF5 is parsed by a C library with known heap-overflow CVEs, so a crash
there must end a child process, never the app.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import FormatError, LimitError
from .limits import Limits

_WORKER = Path(__file__).with_name("hdf5_worker.py")
_MiB = 1024 * 1024


class WorkerTimeout(Exception):
    pass


# Runs the worker file by path, not `-m ckptlab...`, so the child imports neither the ckptlab package nor
# its readers. Dropping sys.path[0] (the current directory under -c) before any further import means no
# stray json.py or numpy/ in the directory being scanned can shadow a real module. (-P does this too,
# but only from Python 3.11.)
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "import runpy\n"
    "runpy.run_path(sys.argv.pop(1), run_name='__main__')\n"
)


def _worker_argv() -> list[str]:
    return [sys.executable, "-c", _BOOTSTRAP, str(_WORKER)]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # one BLAS thread keeps the child's address-space reservation small and predictable under RLIMIT_AS;
    # file locking fails on read-only or network mounts and a reader never needs it
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    return env


class Child:
    """One worker process: request written by a thread, answers read with deadlines."""

    def __init__(self, request: dict[str, Any], limits: Limits) -> None:
        self.limits = limits
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; close() closes it
        self.proc = subprocess.Popen(
            _worker_argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=_worker_env(),
            close_fds=True,
        )
        payload = json.dumps(request).encode()
        # a thread, so a child that never reads stdin cannot block us past the timeout
        threading.Thread(target=self._feed, args=(payload,), daemon=True).start()
        self._buf = bytearray()
        self._eof = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]

    def _feed(self, payload: bytes) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(payload)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child died early; its exit status tells why

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._sel.select(remaining):
            raise WorkerTimeout
        chunk = os.read(self.proc.stdout.fileno(), 1 << 20)  # type: ignore[union-attr]
        if chunk:
            self._buf += chunk
        else:
            self._eof = True

    def read_line(self, deadline: float, max_bytes: int) -> bytes | None:
        """One answer line, or None when the child exited first."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if self._eof:
                return None
            if len(self._buf) > max_bytes:
                raise LimitError(None, f"HDF5 worker answer over {max_bytes} bytes")
            self._fill(deadline)

    def read_exact(self, n: int, deadline: float) -> bytes | None:
        while len(self._buf) < n:
            if self._eof:
                return None
            self._fill(deadline)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def failure(self) -> str:
        """Why the child stopped answering: a signal, an out-of-memory, or an error exit."""
        rc = self.proc.wait()
        self._err.seek(0, 2)
        self._err.seek(max(0, self._err.tell() - 4096))
        tail = self._err.read().decode("utf-8", "replace").strip()
        if rc < 0:
            return f"HDF5 parser crashed (signal {-rc})"
        if "MemoryError" in tail:
            return _oom_cause(self.limits)
        last = tail.splitlines()[-1] if tail else "no output"
        return f"HDF5 parser failed (exit {rc}: {last})"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._sel.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._err.close()


def timeout_cause(limits: Limits) -> str:
    return f"HDF5 parser timed out after {limits.hdf5_timeout_s:g}s"


def _oom_cause(limits: Limits) -> str:
    return f"HDF5 parser ran out of memory (limit {limits.hdf5_memory_bytes // _MiB} MiB)"


def parse_answer(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise FormatError(None, f"HDF5 worker sent a malformed answer ({line[:80]!r})")
    return answer


def answer_error(answer: dict[str, Any], limits: Limits) -> str:
    cause = str(answer.get("error", "unknown error"))
    return _oom_cause(limits) if cause == "oom" else cause


def _next_answer(child: Child, path: str, deadline: float, max_bytes: int, limits: Limits) -> dict[str, Any]:
    """The child's next answer (ok or not). A child that died, hung or answered garbage raises the error
    that stands for it, with `path` set: the caller then needs a new child."""
    try:
        line = child.read_line(deadline, max_bytes)
    except WorkerTimeout:
        raise FormatError(path, timeout_cause(limits)) from None
    except LimitError as exc:
        raise LimitError(path, exc.cause) from None
    if line is None:
        raise FormatError(path, child.failure())
    try:
        return parse_answer(line)
    except FormatError as exc:
        raise FormatError(path, exc.cause) from None


def _answer_exception(answer: dict[str, Any], path: str, limits: Limits) -> FormatError:
    err = LimitError if answer.get("limit") else FormatError
    return err(path, answer_error(answer, limits))


def run_dataset(request: dict[str, Any], limits: Limits) -> tuple[dict[str, Any], bytes]:
    """(header, raw bytes) of one dataset read by a fresh child."""
    path = request["path"]
    child = Child(request, limits)
    try:
        deadline = time.monotonic() + limits.hdf5_timeout_s
        header = _next_answer(child, path, deadline, limits.max_keras_member_bytes, limits)
        if not header.get("ok"):
            raise _answer_exception(header, path, limits)
        nbytes = int(header["nbytes"])
        if nbytes > limits.hdf5_memory_bytes:
            cap = limits.hdf5_memory_bytes
            raise LimitError(path, f"dataset {request['dataset']} has {nbytes} bytes (limit {cap})")
        data = child.read_exact(nbytes, deadline)
        if data is None:
            raise FormatError(path, child.failure())
    except WorkerTimeout:
        raise FormatError(path, timeout_cause(limits)) from None
    finally:
        child.close()
    return header, data


def run_meta(items: list[dict[str, Any]], limits: Limits) -> list[dict[str, Any] | FormatError]:
    """Facts for each item; a crash or timeout fails only the item in progress, then a new child goes on."""
    out: list[dict[str, Any] | FormatError] = []
    while len(out) < len(items):
        pending = items[len(out) :]
        request = {
            "op": "meta",
            "items": pending,
            "max_objects": limits.max_hdf5_objects,
            "max_attr_bytes": limits.max_keras_member_bytes,
            "memory_bytes": limits.hdf5_memory_bytes,
        }
        child = Child(request, limits)
        try:
            for item in pending:
                deadline = time.monotonic() + limits.hdf5_timeout_s
                try:
                    answer = _next_answer(child, item["path"], deadline, limits.hdf5_memory_bytes, limits)
                except FormatError as exc:  # the child is gone: this item fails, a new child goes on
                    out.append(exc)
                    break
                ok = answer.get("ok")
                out.append(answer["facts"] if ok else _answer_exception(answer, item["path"], limits))
        finally:
            child.close()
    return out


# ------------------------------------------------------------------------------------- meta building

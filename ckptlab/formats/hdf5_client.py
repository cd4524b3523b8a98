"""The client side of the isolated h5py worker: start it, send JSON requests, read answers with a deadline,
and turn a crash, timeout or out-of-memory of the child into one clear cause.

The parent never imports h5py: HDF5 is parsed by a C library with known heap-overflow CVEs, so a crash
there must end a child process, never the app.

Starting a worker costs ~0.15 s of CPU (Python, numpy and h5py imports), more than reading a hundred small
files, so a worker that answered cleanly goes back to a small per-process pool and serves the next request.
A worker is dropped instead when it crashed, hung, ran out of memory, answered garbage or said `bye` (an
error its code did not foresee), and after `_MAX_ITEMS_PER_WORKER` files, so whatever a long life in libhdf5
leaks stays bounded; idle workers exit on their own after `_IDLE_EXIT_S`. A big batch is shared by two
workers when the machine has a core to spare.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FormatError, LimitError
from .limits import Limits

_WORKER = Path(__file__).with_name("hdf5_worker")  # the worker's package directory
_MiB = 1024 * 1024
_IDLE_EXIT_S = 120.0  # a worker with no request for this long exits by itself
# the pool hands out no worker idle for longer than this, well before it can exit between our check and
# its reading of the request
_REUSE_S = 60.0
_MAX_IDLE = 2  # idle workers kept per process (one per core of a small machine)
_MAX_ITEMS_PER_WORKER = 20_000  # files a worker reads before it is replaced (a new one costs ~0.15 s)
# a batch this big is shared by two workers even when only one is warm: starting the second takes ~0.15 s
# of CPU (more wall time on a busy machine), and then saves half of ~1 ms per file of wall time
_PARALLEL_MIN_ITEMS = 512
# items per request when workers share a batch: small enough to balance, big enough that the round trips
# (~0.1 ms each) do not count
_CHUNK_ITEMS = 16
_PIPE_BYTES = 1 << 20
_LINGER_S = 0.005  # wait before reading the next answers of a batch (see Child._fill)...
_LINGER_MIN_LEFT = 8  # ...while more than this many are still to come


class WorkerTimeout(Exception):
    pass


# Loads the worker package by path, as a top-level package named `hdf5_worker`, not `-m ckptlab...`, so the
# child imports neither the ckptlab package nor its readers (the worker's modules import only each other).
# Dropping sys.path[0] (the current directory under -c) before any further import means no stray json.py or
# numpy/ in the directory being scanned can shadow a real module. (-P does this too, but only from Python
# 3.11.)
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('hdf5_worker', sys.argv.pop(1))\n"
    "sys.modules['hdf5_worker'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(sys.modules['hdf5_worker'])\n"
    "from hdf5_worker.serve import main\n"
    "sys.exit(main())\n"
)


def _worker_argv() -> list[str]:
    return [sys.executable, "-c", _BOOTSTRAP, str(_WORKER / "__init__.py")]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # one BLAS thread keeps the child's address-space reservation small and predictable under RLIMIT_AS;
    # file locking fails on read-only or network mounts and a reader never needs it
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    return env


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
            env=_worker_env(),
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
            return _oom_cause(limits)
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


# ---------------------------------------------------------------------------------------------- pool


class _Pool:
    """Idle workers of this process, most recently used last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[Child] = []
        self.pid = os.getpid()

    def take(self, memory_bytes: int, fresh: bool = False) -> Child:
        """An idle worker started with the same argv and memory limit, else a new one."""
        argv = _worker_argv()
        key = (tuple(argv), memory_bytes)
        found: Child | None = None
        stale: list[Child] = []
        with self.lock:
            self._forget_inherited()
            now = time.monotonic()
            keep = []
            for child in reversed(self.idle):
                if now - child.last_used > _REUSE_S or not child.alive():
                    stale.append(child)
                elif found is None and not fresh and child.key == key:
                    found = child
                else:
                    keep.append(child)
            self.idle = keep[::-1]
        for child in stale:
            child.close()
        return found if found is not None else Child(argv, memory_bytes)

    def count_idle(self, memory_bytes: int) -> int:
        key = (tuple(_worker_argv()), memory_bytes)
        with self.lock:
            return sum(1 for c in self.idle if c.key == key)

    def give(self, child: Child) -> None:
        """Back to the pool after a clean answer; beyond `_MAX_IDLE`, the oldest worker ends."""
        child.last_used = time.monotonic()
        with self.lock:
            self._forget_inherited()
            self.idle.append(child)
            extra, self.idle = self.idle[:-_MAX_IDLE], self.idle[-_MAX_IDLE:]
        for old in extra:
            old.close()

    def shutdown(self) -> None:
        """End every idle worker (at exit, and for tests that swap the worker program)."""
        with self.lock:
            self._forget_inherited()
            children, self.idle = self.idle, []
        for child in children:
            child.close()

    def _forget_inherited(self) -> None:
        # after a fork the copied list names the parent's workers: never use or kill them here
        if self.pid != os.getpid():
            self.idle, self.pid = [], os.getpid()


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def shutdown() -> None:
    """End the idle h5py workers of this process now (they also exit by themselves when idle)."""
    _POOL.shutdown()


# -------------------------------------------------------------------------------------------- answers


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


class _ChildGone(FormatError):
    """The child died, hung or answered garbage while on this item: it cannot serve another."""

    def __init__(self, path: str, cause: str, exited: bool = False) -> None:
        super().__init__(path, cause)
        self.exited = exited  # it ended (rather than hung or sent garbage)


def _next_answer(
    child: Child, path: str, deadline: float, max_bytes: int, limits: Limits, linger: float = 0.0
) -> dict[str, Any]:
    """The child's next answer (ok or not). A child that died, hung or answered garbage raises the error
    that stands for it, with `path` set: the caller then needs a new child."""
    try:
        line = child.read_line(deadline, max_bytes, linger)
    except WorkerTimeout:
        raise _ChildGone(path, timeout_cause(limits)) from None
    except LimitError as exc:
        raise LimitError(path, exc.cause) from None
    if line is None:
        raise _ChildGone(path, child.failure(limits), exited=True)
    try:
        return parse_answer(line)
    except FormatError as exc:
        raise _ChildGone(path, exc.cause) from None


def _answer_exception(answer: dict[str, Any], path: str, limits: Limits) -> FormatError:
    err = LimitError if answer.get("limit") else FormatError
    return err(path, answer_error(answer, limits))


def _plain(exc: FormatError) -> FormatError:
    """The error as callers see it (a LimitError stays one)."""
    return exc if type(exc) is not _ChildGone else FormatError(exc.path, exc.cause)


# -------------------------------------------------------------------------------------------- requests


def run_dataset(request: dict[str, Any], limits: Limits) -> tuple[dict[str, Any], bytes]:
    """(header, raw bytes) of one dataset, read by a pooled worker."""
    path = request["path"]
    child = _POOL.take(limits.hdf5_memory_bytes)
    healthy = False
    try:
        child.send(request)
        deadline = time.monotonic() + limits.hdf5_timeout_s
        try:
            header = _next_answer(child, path, deadline, limits.max_keras_member_bytes, limits)
        except _ChildGone as exc:
            raise _plain(exc) from None
        if not header.get("ok"):
            healthy = not header.get("bye")
            raise _answer_exception(header, path, limits)
        nbytes = int(header["nbytes"])
        if nbytes > limits.hdf5_memory_bytes:  # the unread bytes leave this child out of step: it ends
            cap = limits.hdf5_memory_bytes
            raise LimitError(path, f"dataset {request['dataset']} has {nbytes} bytes (limit {cap})")
        try:
            data = child.read_exact(nbytes, deadline)
        except WorkerTimeout:
            raise FormatError(path, timeout_cause(limits)) from None
        if data is None:
            raise FormatError(path, child.failure(limits))
        healthy = True
        child.served += 1
    finally:
        _release(child, healthy)
    return header, data


def _reusable(child: Child) -> bool:
    return child.alive() and child.items < _MAX_ITEMS_PER_WORKER


def _release(child: Child, healthy: bool) -> None:
    if healthy and _reusable(child):
        _POOL.give(child)
    else:
        child.close()


def _meta_request(items: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    return {
        "op": "meta",
        "items": items,
        "max_objects": limits.max_hdf5_objects,
        "max_attr_bytes": limits.max_keras_member_bytes,
        "memory_bytes": limits.hdf5_memory_bytes,
        "idle_exit_s": _IDLE_EXIT_S,
    }


class _Runner:
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
            child = self.child if self.child is not None else _POOL.take(limits.hdf5_memory_bytes, retried)
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
                        answer = _next_answer(
                            child, item["path"], deadline, limits.hdf5_memory_bytes, limits, linger
                        )
                    except _ChildGone as exc:
                        # a pooled worker that ended before its first answer (killed while idle, or the
                        # rare idle exit) says nothing about this file: one retry in a fresh worker
                        if exc.exited and reused and pos == start and not retried:
                            retried = True
                        else:
                            yield first + pos, _plain(exc)
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
                    result = facts if answer.get("ok") else _answer_exception(answer, item["path"], limits)
                    child.items += 1
                    yield first + pos, result
                    pos += 1
                    if answer.get("bye"):
                        break
                else:
                    healthy = True
            finally:
                if healthy and _reusable(child):
                    child.served += 1
                    self.child = child
                else:
                    child.close()

    def finish(self) -> None:
        """Give the worker back to the pool."""
        if self.child is not None:
            child, self.child = self.child, None
            _release(child, True)


def _want_workers(n_items: int, limits: Limits, workers: int | None) -> int:
    if workers is not None:
        return max(1, min(workers, n_items, _MAX_IDLE))
    if n_items < 2 * _CHUNK_ITEMS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # a second worker only pays on a core nobody else uses: on a busy machine (a scan's own reader threads
    # count) two workers take as long as one and cost the second one's start
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available here: assume an idle machine
        load = 0.0
    if cores - load < 1.5:
        return 1
    warm = _POOL.count_idle(limits.hdf5_memory_bytes)
    return 2 if warm >= 2 or n_items >= _PARALLEL_MIN_ITEMS else 1


def run_meta(
    items: list[dict[str, Any]], limits: Limits, workers: int | None = None
) -> Iterator[tuple[int, Any]]:
    """(index, facts or FormatError) for every item, as the workers answer: in order with one worker, in
    any order with two. A crash or timeout fails only the item in progress; a new worker goes on.

    `workers` caps how many worker processes share the batch (None: two for a big batch, or any batch of 32
    or more when two are warm, provided a core is idle; else one).
    """
    n = _want_workers(len(items), limits, workers)
    if n == 1:
        runner = _Runner(limits)
        yield from runner.run(items)
        runner.finish()
        return
    yield from _run_parallel(items, limits, n)


def _run_parallel(items: list[dict[str, Any]], limits: Limits, n: int) -> Iterator[tuple[int, Any]]:
    """Chunks of the batch go to whichever worker is free, so a worker still starting takes no chunk until
    its imports are done, and a slow file delays only its own chunk."""
    chunks = deque(range(0, len(items), _CHUNK_ITEMS))
    lock = threading.Lock()
    results: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
    stop = threading.Event()

    def work(runner: _Runner) -> None:
        try:
            child = runner.child
            try:
                ready = child is not None and child.wait_ready(time.monotonic() + limits.hdf5_timeout_s)
            except WorkerTimeout:
                ready = False
            if not ready:  # a worker that cannot start takes no chunk; the others (or the caller) do
                runner.child = None
                if child is not None:
                    child.close()
                return
            while not stop.is_set():
                with lock:
                    if not chunks:
                        break
                    start = chunks.popleft()
                for result in runner.run(items[start : start + _CHUNK_ITEMS], start):
                    results.put(result)
            runner.finish()
        except BaseException as exc:  # surfaced in the caller's thread
            results.put((-1, exc))
        finally:
            results.put(None)

    runners = [_Runner(limits, _POOL.take(limits.hdf5_memory_bytes)) for _ in range(n)]
    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in runners]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            got = results.get()
            if got is None:
                running -= 1
            elif got[0] < 0:
                raise got[1]
            else:
                yield got
    finally:
        stop.set()
        for t in threads:
            t.join()
    # chunks no worker took (none could start): read here, one worker at a time, so every item is answered
    runner = _Runner(limits)
    while chunks:
        start = chunks.popleft()
        yield from runner.run(items[start : start + _CHUNK_ITEMS], start)
    runner.finish()

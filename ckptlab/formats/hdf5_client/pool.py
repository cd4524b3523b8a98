"""Idle workers of this process, kept for reuse, and when a worker is retired instead."""

from __future__ import annotations

import atexit
import os
import threading
import time

from .child import Child
from .launch import worker_argv

# the pool hands out no worker idle for longer than this, well before it can exit (`runner._IDLE_EXIT_S`)
# between our check and its reading of the request
_REUSE_S = 60.0
MAX_IDLE = 2  # idle workers kept per process (one per core of a small machine)
_MAX_ITEMS_PER_WORKER = 20_000  # files a worker reads before it is replaced (a new one costs ~0.15 s)


class _Pool:
    """Idle workers of this process, most recently used last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[Child] = []
        self.pid = os.getpid()

    def take(self, memory_bytes: int, fresh: bool = False) -> Child:
        """An idle worker started with the same argv and memory limit, else a new one."""
        argv = worker_argv()
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
        key = (tuple(worker_argv()), memory_bytes)
        with self.lock:
            return sum(1 for c in self.idle if c.key == key)

    def give(self, child: Child) -> None:
        """Back to the pool after a clean answer; beyond `MAX_IDLE`, the oldest worker ends."""
        child.last_used = time.monotonic()
        with self.lock:
            self._forget_inherited()
            self.idle.append(child)
            extra, self.idle = self.idle[:-MAX_IDLE], self.idle[-MAX_IDLE:]
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


POOL = _Pool()
atexit.register(POOL.shutdown)


def shutdown() -> None:
    """End the idle h5py workers of this process now (they also exit by themselves when idle)."""
    POOL.shutdown()


def reusable(child: Child) -> bool:
    """Whether `child` may serve again: still running, and short of `_MAX_ITEMS_PER_WORKER` files."""
    return child.alive() and child.items < _MAX_ITEMS_PER_WORKER


def release(child: Child, healthy: bool) -> None:
    """Back to the pool after a `healthy` exchange when it may serve again; else the worker ends."""
    if healthy and reusable(child):
        POOL.give(child)
    else:
        child.close()

"""`run_meta`: a batch of metadata items read by one worker, or shared by two when it pays."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..limits import Limits
from .child import WorkerTimeout
from .pool import MAX_IDLE, POOL
from .runner import Runner

# a batch this big is shared by two workers even when only one is warm: starting the second takes ~0.15 s
# of CPU (more wall time on a busy machine), and then saves half of ~1 ms per file of wall time
_PARALLEL_MIN_ITEMS = 512
# items per request when workers share a batch: small enough to balance, big enough that the round trips
# (~0.1 ms each) do not count
_CHUNK_ITEMS = 16


def _want_workers(n_items: int, limits: Limits, workers: int | None) -> int:
    if workers is not None:
        return max(1, min(workers, n_items, MAX_IDLE))
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
    warm = POOL.count_idle(limits.hdf5_memory_bytes)
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
        runner = Runner(limits)
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

    def work(runner: Runner) -> None:
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

    runners = [Runner(limits, POOL.take(limits.hdf5_memory_bytes)) for _ in range(n)]
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
    runner = Runner(limits)
    while chunks:
        start = chunks.popleft()
        yield from runner.run(items[start : start + _CHUNK_ITEMS], start)
    runner.finish()

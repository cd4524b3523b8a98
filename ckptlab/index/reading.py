"""The scan's reading pool: the candidates to read go through a thread pool that grows only while reads
wait on storage, plain HDF5 files in batches through the isolated h5py worker."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import CkptlabError, FormatError
from ..formats import detect_file, read_meta
from ..formats.limits import Limits
from ..layouts import CHECKPOINT_SUFFIXES
from ..model import CheckpointMeta
from .plan import Found

Progress = Callable[[str, int, int], None]  # (phase, done, total)

# Names whose content is probed to send HDF5 files to the batch path. Content still decides: a `.h5` that
# holds something else goes to read_meta, and an HDF5 file under another name is read by read_meta, which
# sends it through the same h5py worker on its own; the probe is only skipped where a hit is unlikely.
_NOT_HDF5_SUFFIXES = tuple(s for s in CHECKPOINT_SUFFIXES if s not in (".h5", ".hdf5"))

ReadResult = CheckpointMeta | CkptlabError


def _read_one(path: str, limits: Limits, within: str | None) -> ReadResult:
    try:
        return read_meta(path, limits, within=within)
    except CkptlabError as e:
        return e


def _read_chunk(
    chunk: Sequence[Found], limits: Limits, within: str | None = None
) -> tuple[list[ReadResult], float]:
    """The chunk's results, and the share of its wall time the reading thread spent waiting (on I/O)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    out = [_read_one(f.c.path, limits, within) for f in chunk]
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return out, (1.0 - cpu / wall) if wall > 0 else 0.0


class _Concurrency:
    """How many chunks to read at once. The readers are Python, so on a local disk extra threads only fight
    over the GIL (8 of them cost ~2x the CPU of 1 for the same files); they pay off when reads wait on
    storage (a network mount). Start with one and follow the measured share of time spent waiting."""

    def __init__(self, most: int) -> None:
        self.most, self.now, self.waiting = most, 1, 0.0

    def update(self, waited: float) -> None:
        self.waiting = 0.7 * self.waiting + 0.3 * waited
        if self.waiting > 0.5:  # mostly waiting: more reads in flight hide the latency
            self.now = min(self.most, self.now * 2)
        elif self.waiting < 0.2:
            self.now = 1


def read_all(
    todo: list[Found], limits: Limits, workers: int, progress: Progress | None, within: str | None = None
) -> Iterator[tuple[Found, ReadResult]]:
    """Read candidates in a thread pool, yielding each with its meta or the error reading it raised; plain
    HDF5 files go through the h5py worker in batches. `within`: the scan's real root, which no part of a
    multi-file checkpoint may leave through a link."""
    total, done = len(todo), 0
    hdf5, other = [], []
    for f in todo:
        c = f.c
        probe = c.layout == "file" and not c.path.lower().endswith(_NOT_HDF5_SUFFIXES)
        # discovery has looked at a file with no checkpoint suffix already: its kind is known
        is_hdf5 = probe and (c.kind == "hdf5" if c.kind is not None else _is_hdf5(c.path))
        (hdf5 if is_hdf5 else other).append(f)

    def report() -> None:
        if progress:
            progress("read", done, total)

    report()
    n_threads = max(1, workers)
    # tasks of a few files each: one future per file costs more than a small file's read, and enough tasks
    # remain to keep every thread busy on slow storage
    size = max(1, min(16, len(other) // (n_threads * 4)))
    chunks = deque(other[i : i + size] for i in range(0, len(other), size))
    flow = _Concurrency(n_threads)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        # one batch: the pooled h5py worker streams it while the threads read the other files (a second
        # worker would compete with them for the cores; the client splits a big HDF5-only batch itself)
        hdf5_futures = (
            [(hdf5, pool.submit(_read_hdf5_batch, hdf5, limits, 1 if other else None))] if hdf5 else []
        )
        pending: deque[tuple[list[Found], Future[tuple[list[ReadResult], float]]]] = deque()
        while chunks or pending:
            while chunks and len(pending) < flow.now:
                chunk = chunks.popleft()
                pending.append((chunk, pool.submit(_read_chunk, chunk, limits, within)))
            chunk, fut = pending.popleft()  # in order, as they were submitted
            results, waited = fut.result()
            flow.update(waited)
            for f, res in zip(chunk, results, strict=True):
                done += 1
                report()
                yield f, res
        for part, fut in hdf5_futures:
            for f, res in zip(part, fut.result(), strict=True):
                done += 1
                yield f, res
            report()


def _is_hdf5(p: str) -> bool:
    try:
        return detect_file(Path(p)) == "hdf5"
    except (FormatError, OSError):
        return False


def _read_hdf5_batch(
    batch: list[Found], limits: Limits, workers: int | None = None
) -> list[CheckpointMeta | FormatError]:
    from ..formats.hdf5_reader import read_hdf5_many

    return read_hdf5_many([Path(f.c.path) for f in batch], limits, workers)

"""Walk roots, group files into logical checkpoints, read what changed, write the index.

Tolerant (a bad file or unreadable directory becomes a row or an error, never an exception that stops the
scan), incremental (parts whose (path, size, mtime) are unchanged are not read again), parallel (a thread
pool for network storage; HDF5 files go in batches through the isolated h5py worker). No torch import.

Everything outside the readers is per-file Python work on thousands of files, so it stays on plain strings
(`os.scandir`, `os.path`; no `pathlib` per file), a candidate's fingerprint is checked before anything else is
built for it, runs are resolved once per directory, and the store writes each table in one statement.

One job per module: `discover` walks a root into candidates, `plan` fingerprints them (reuse, derive again
or read), `reading` is the reading pool, `entries` builds the index rows and their inspect documents; this
module runs them root by root and hands the result to the store, the only place that writes SQL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IncompleteError
from ..formats import gc_paused
from ..formats.limits import DEFAULT_LIMITS, Limits
from ..layouts import in_run_order
from ..model import CheckpointMeta, IndexEntry, TensorMeta
from .discover import discover
from .entries import entry_of
from .plan import make_plan
from .reading import Progress, read_all
from .store import Store


@dataclass
class ScanResult:
    roots: list[str]
    entries: list[IndexEntry] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    files_seen: int = 0
    parsed: int = 0
    reused: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "roots": self.roots,
            "checkpoints": [e.to_json() for e in self.entries],
            "errors": [{"path": p, "error": e} for p, e in self.errors],
            "stats": {
                "files_seen": self.files_seen,
                "checkpoints": len(self.entries),
                "parsed": self.parsed,
                "reused": self.reused,
                "seconds": round(self.seconds, 3),
            },
        }


def scan(
    roots: Iterable[str | os.PathLike[str]],
    store: Store,
    *,
    now: float | None = None,
    settle_seconds: float = 5.0,
    workers: int = 8,
    progress: Progress | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ScanResult:
    """Scan `roots` into `store`; returns every checkpoint under them (read now or reused).

    >>> result = scan(["runs/"], Store("index.sqlite"))  # doctest: +SKIP
    >>> result.parsed, result.reused  # doctest: +SKIP
    (28, 0)
    """
    t0 = time.perf_counter()
    now = time.time() if now is None else now
    result = ScanResult(roots=[str(Path(r).resolve()) for r in roots])
    for root in result.roots:
        errors: list[tuple[str, str]] = []
        if not os.path.exists(root):
            result.errors.append((root, "no such file or directory"))
            continue
        with gc_paused.keeping():  # the bookkeeping allocates tens of thousands of objects that stay alive
            candidates, seen = discover(root, errors, limits)
            stored = store.stored(root)
            plan = make_plan(candidates, stored, root, now, settle_seconds, errors)
        result.files_seen += seen
        tensors: dict[str, tuple[TensorMeta, ...]] = {}
        for f, res in read_all(plan.to_read, limits, workers, progress, os.path.realpath(root)):
            if isinstance(res, CheckpointMeta):
                read = entry_of(f, root, meta=res)
                tensors[f.c.path] = res.tensors
            else:
                status = "incomplete" if isinstance(res, IncompleteError) else "unreadable"
                read = entry_of(f, root, status, res.cause)
            plan.fresh.append(read)
            plan.changed.append(read)
        with gc_paused.keeping():  # the bookkeeping allocates tens of thousands of objects that stay alive
            entries = plan.reused + plan.fresh  # the reused ones first, as ever: ties keep this order below
            # every unreadable checkpoint is an error of this scan, whether read now or reused unchanged
            errors.extend((e.path, e.reason or "unreadable") for e in entries if e.status == "unreadable")
            store.save_scan(root, plan.changed, tensors, [e.path for e in entries], errors, now, stored)
            result.entries.extend(in_run_order(entries))
        result.errors.extend(errors)
        result.parsed += len(plan.to_read)
        result.reused += len(plan.reused)
    result.seconds = time.perf_counter() - t0
    return result

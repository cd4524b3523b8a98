"""Walk roots, group files into logical checkpoints, read what changed, write the index.

Tolerant (a bad file or unreadable directory becomes a row or an error, never an exception that stops the
scan), incremental (parts whose (path, size, mtime) are unchanged are not read again), parallel (a thread
pool for network storage; HDF5 files go in batches through the isolated h5py worker). No torch import.

Everything outside the readers is per-file Python work on thousands of files, so it stays on plain strings
(`os.scandir`, `os.path`; no `pathlib` per file), a candidate's fingerprint is checked before anything else is
built for it, runs are resolved once per directory, and the store writes each table in one statement.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CkptlabError, FormatError, IncompleteError
from ..formats import detect_file, gc_paused, read_meta
from ..formats.limits import DEFAULT_LIMITS, Limits
from ..formats.multifile import dir_layout, shard_names
from ..layouts import (
    CHECKPOINT_SUFFIXES,
    debris_reason,
    looks_like_checkpoint_name,
    natural_key,
    parse_name,
    run_dir_of_parent,
    unfinished_save,
)
from ..model import CheckpointMeta, IndexEntry, TensorMeta, jsonable, new_entry
from .store import Store, StoredRows

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class Candidate(NamedTuple):
    """A logical checkpoint found on disk, before reading it. Paths are strings: a scan makes thousands."""

    path: str
    layout: str  # file | sharded | hf-checkpoint | dcp
    parts: tuple[str, ...]
    missing: tuple[str, ...] = ()
    debris: str | None = None
    # the parts' stat results when discovery had them at hand (DirEntry.stat() is cheaper than os.stat of
    # the path), or the error that stat raised, reported when the candidate is fingerprinted; None: not yet
    stats: tuple[os.stat_result, ...] | OSError | None = None


def _stat_all(entries: Sequence[os.DirEntry[str]]) -> tuple[os.stat_result, ...] | OSError:
    try:
        return tuple([e.stat() for e in entries])  # follows a symlink, as os.stat does
    except OSError as err:
        return err


def _stat_one(entry: os.DirEntry[str]) -> tuple[os.stat_result] | OSError:
    try:
        return (entry.stat(),)
    except OSError as err:
        return err


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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_by_name = attrgetter("name")


def discover(
    root: str | os.PathLike[str], errors: list[tuple[str, str]], limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Candidate], int]:
    """Every logical checkpoint under `root` and the number of files seen. Each directory is listed once.
    Symlinked directories are not followed; symlinked files only when the target stays inside the root."""
    root = os.fspath(root)
    real_root = os.path.realpath(root)
    out: list[Candidate] = []
    files_seen = 0
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=_by_name)
        except OSError as e:
            errors.append((d, f"cannot read directory: {e.strerror or e}"))
            continue
        files = [e for e in entries if e.is_file(follow_symlinks=False)]
        layout = dir_layout({e.name for e in files})
        if layout is not None:  # a DCP or HF checkpoint-N directory: one checkpoint, its files are parts
            out.append(Candidate(d, layout, tuple(e.path for e in files), stats=_stat_all(files)))
            files_seen += len(files)
            continue
        consumed: set[str] = set()
        for e in files:
            if e.name.endswith(".index.json"):
                shards = shard_names(Path(e.path), limits)
                if shards is None:
                    continue
                # Path() joins as before: a shard name like "./x" must give the same part path every scan
                present = tuple(str(Path(d, s)) for s in shards if os.path.isfile(os.path.join(d, s)))
                missing = tuple(s for s in shards if not os.path.isfile(os.path.join(d, s)))
                consumed.add(e.name)
                consumed.update(shards)
                out.append(Candidate(e.path, "sharded", (e.path, *present), missing))
        for e in entries:
            name = e.name
            if name in consumed:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    why = debris_reason(name, size=None, mtime=None, now=0.0, settle_seconds=0)
                    if why is not None:  # tmp-checkpoint-*/, *.orbax-checkpoint-tmp-*/
                        out.append(Candidate(e.path, "file", (), debris=why))
                    else:
                        stack.append(e.path)
                    continue
                files_seen += 1
                if e.is_symlink():
                    target = os.path.realpath(e.path)
                    if not os.path.exists(target):
                        if looks_like_checkpoint_name(name):
                            why = debris_reason(
                                name,
                                size=None,
                                mtime=None,
                                now=0.0,
                                is_symlink=True,
                                target_exists=False,
                                link_target=os.readlink(e.path),
                            )
                            out.append(Candidate(e.path, "file", (), debris=why))
                        continue
                    if not _inside(target, real_root) or not os.path.isfile(target):
                        continue  # never follow a link out of the root
                elif not e.is_file(follow_symlinks=False):
                    continue
                if why := unfinished_save(name):
                    out.append(Candidate(e.path, "file", (e.path,), (), why, _stat_one(e)))
                # a checkpoint suffix is enough (a broken .pt is an error row); others need checkpoint magic
                elif name.lower().endswith(CHECKPOINT_SUFFIXES) or (
                    looks_like_checkpoint_name(name) and not name.startswith(".") and _sniff(e.path)
                ):
                    out.append(Candidate(e.path, "file", (e.path,), (), None, _stat_one(e)))
            except OSError as err:
                errors.append((e.path, f"cannot stat: {err.strerror or err}"))
    return out, files_seen


def _sniff(p: str) -> bool:
    """Content check for files whose names say nothing (e.g. `model` with no suffix). A text file can look
    like a protocol-0 pickle, so only binary pickles (PROTO opcode) count."""
    try:
        kind = detect_file(Path(p))
        if kind == "pickle":
            with open(p, "rb") as f:
                return f.read(1) == b"\x80"
        return kind in ("safetensors", "zip", "hdf5")
    except (FormatError, OSError):
        return False


Files = tuple[tuple[str, int, int], ...]  # (path, size, mtime_ns) of every part


def _fingerprint(c: Candidate, base: int) -> tuple[str, Files, float | None]:
    """(digest, parts, newest mtime). `base` is the root's length + 1: parts lie under the root, so slicing
    gives what relpath would, for much less. The digest's bytes are the same as ever: an index written by
    an earlier version is reused, not read again. Raises the OSError of a part that cannot be stat'ed."""
    stats = c.stats
    if stats is None:
        stats = tuple(os.stat(p) for p in c.parts)
    elif isinstance(stats, OSError):
        raise stats
    if len(stats) == 1 and not c.missing:  # nearly every checkpoint is one file: the same bytes, less work
        p, st = c.parts[0], stats[0]
        size, mtime_ns = st.st_size, st.st_mtime_ns
        text = f"{c.layout}{p[base:]}\0{size}\0{mtime_ns}\nmissing:"
        digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        return digest, ((p, size, mtime_ns),), max(0.0, st.st_mtime)
    files = tuple((p, st.st_size, st.st_mtime_ns) for p, st in zip(c.parts, stats, strict=True))
    text = [c.layout, *(f"{p[base:]}\0{size}\0{mtime_ns}\n" for p, size, mtime_ns in files)]
    text.append("missing:" + ",".join(c.missing))
    digest = hashlib.sha1("".join(text).encode(), usedforsecurity=False).hexdigest()
    newest = max(0.0, *(st.st_mtime for st in stats)) if stats else None
    return digest, files, newest


class _Found(NamedTuple):
    """A candidate that is not reused, with what was learnt from its stat calls."""

    c: Candidate
    fingerprint: str
    files: Files
    mtime: float | None


def _entry(
    f: _Found, root: str, status: str = "ok", reason: str | None = None, meta: CheckpointMeta | None = None
) -> IndexEntry:
    """The index row of `f`: from its name alone, or from `meta` (content first, then the name: a step
    saved in the file beats one parsed from its name)."""
    c = f.c
    name = parse_name(os.path.basename(c.path))
    run = run_dir_of_parent(os.path.dirname(c.path))
    size = sum(p[1] for p in f.files)
    if meta is None:
        return new_entry(
            {
                "path": c.path,
                "run": run,
                "root": root,
                "layout": c.layout,
                "status": status,
                "fingerprint": f.fingerprint,
                "files": f.files,
                "format": None,
                "framework": None,
                "step": name.step,
                "epoch": name.epoch,
                "size_bytes": size,
                "n_tensors": None,
                "n_params": None,
                "metrics": dict(name.metrics),
                "has_optimizer": None,
                "has_scheduler": None,
                "has_rng_state": None,
                "safe": None,
                "unsafe_globals": (),
                "reason": reason,
                "mtime": f.mtime,
                "meta": None,
            }
        )
    doc, n_params = meta_document(meta)
    return new_entry(
        {
            "path": c.path,
            "run": run,
            "root": root,
            "layout": meta.layout if c.layout == "file" else c.layout,
            "status": "ok",
            "fingerprint": f.fingerprint,
            "files": f.files,
            "format": meta.format,
            "framework": meta.framework,
            "step": meta.step if meta.step is not None else name.step,
            "epoch": meta.epoch if meta.epoch is not None else name.epoch,
            "size_bytes": size,
            "n_tensors": len(meta.tensors),
            "n_params": n_params,
            "metrics": {**name.metrics, **meta.metrics},
            "has_optimizer": meta.has_optimizer,
            "has_scheduler": meta.has_scheduler,
            "has_rng_state": meta.has_rng_state,
            "safe": meta.safety.safe,
            "unsafe_globals": meta.safety.unsafe_globals,
            "reason": "; ".join(meta.warnings) or None,
            "mtime": f.mtime,
            "meta": doc,
        }
    )


def meta_document(meta: CheckpointMeta) -> tuple[dict[str, Any], int]:
    """(`meta.to_json()` without its `tensors` list, the parameter count): what the index stores as the
    inspect document. `to_json` walks the tensors four times (params, dtypes, tied, the list the index
    drops, a dict per tensor) and makes metadata JSON-safe through ABC checks; a scan builds thousands of
    these documents, so this is the same document built in one pass (tests compare it with `to_json`).

    >>> from ckptlab.model import TensorMeta
    >>> m = CheckpointMeta("m.pt", "torch-zip", 10, (TensorMeta("w", (2, 3), "float32", 24),))
    >>> doc, n = meta_document(m)
    >>> n, doc["dtypes"], doc == {k: v for k, v in m.to_json().items() if k != "tensors"}
    (6, {'float32': 6}, True)
    """
    n_params = 0
    dtypes: dict[str, int] = {}
    storages: dict[str, list[str]] = {}
    for t in meta.tensors:
        n = math.prod(t.shape)
        n_params += n
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + n
        if t.storage is not None:
            storages.setdefault(t.storage, []).append(t.name)
    safety = meta.safety
    doc = {
        "path": meta.path,
        "format": meta.format,
        "layout": meta.layout,
        "framework": meta.framework,
        "size_bytes": meta.size_bytes,
        "files": list(meta.files),
        "n_tensors": len(meta.tensors),
        "n_params": n_params,
        # CheckpointMeta.dtypes' order: largest first, then by name
        "dtypes": dict(sorted(dtypes.items(), key=lambda kv: (-kv[1], kv[0]))) if len(dtypes) > 1 else dtypes,
        "step": meta.step,
        "epoch": _plain(meta.epoch),
        "metrics": _plain(dict(meta.metrics)),
        "has_optimizer": meta.has_optimizer,
        "has_scheduler": meta.has_scheduler,
        "has_rng_state": meta.has_rng_state,
        "metadata": _plain(meta.metadata),
        "entries": [{"name": e.name, "kind": e.kind, "summary": e.summary} for e in meta.entries],
        "tied": {k: v for k, v in storages.items() if len(v) > 1},
        "n_other_tensors": len(meta.other_tensors),
        "safety": {
            "safe": safety.safe,
            "unsafe_globals": list(safety.unsafe_globals),
            "findings": list(safety.findings),
            "unverified": list(safety.unverified),
        },
        "warnings": list(meta.warnings),
    }
    return doc, n_params


def _plain(obj: Any) -> Any:
    """`model.jsonable` (metadata made JSON-safe), with the types metadata is made of tested by exact type
    first: ABC isinstance checks cost more than the rest of building a document."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    if t is float:
        return obj if math.isfinite(obj) else str(obj)
    if t is dict:
        return {k if type(k) is str else str(k): _plain(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [_plain(v) for v in obj]
    return jsonable(obj)  # anything else (a Mapping proxy, a subclass, an odd value): the model's rules


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
        with gc_paused:  # the bookkeeping allocates tens of thousands of objects that all stay alive
            candidates, seen = discover(root, errors, limits)
            stored = store.stored(root)
            plan = _plan(candidates, stored, root, now, settle_seconds, errors)
        result.files_seen += seen
        tensors: dict[str, tuple[TensorMeta, ...]] = {}
        for f, res in _read_all(plan.to_read, limits, workers, progress):
            if isinstance(res, CheckpointMeta):
                read = _entry(f, root, meta=res)
                tensors[f.c.path] = res.tensors
            else:
                status = "incomplete" if isinstance(res, IncompleteError) else "unreadable"
                read = _entry(f, root, status, res.cause)
            plan.fresh.append(read)
            plan.changed.append(read)
        with gc_paused:  # the bookkeeping allocates tens of thousands of objects that all stay alive
            entries = plan.reused + plan.fresh  # the reused ones first, as ever: ties keep this order below
            # every unreadable checkpoint is an error of this scan, whether read now or reused unchanged
            errors.extend((e.path, e.reason or "unreadable") for e in entries if e.status == "unreadable")
            store.save_scan(root, plan.changed, tensors, [e.path for e in entries], errors, now, stored)
            result.entries.extend(_in_order(entries))
        result.errors.extend(errors)
        result.parsed += len(plan.to_read)
        result.reused += len(plan.reused)
    result.seconds = time.perf_counter() - t0
    return result


@dataclass
class _Plan:
    """What to do with a root's candidates: which are reused, derived again (debris, incomplete) or read."""

    reused: list[IndexEntry] = field(default_factory=list)
    fresh: list[IndexEntry] = field(default_factory=list)  # not reused: derived again, then read
    changed: list[IndexEntry] = field(default_factory=list)  # the rows to write
    to_read: list[_Found] = field(default_factory=list)


def _plan(
    candidates: list[Candidate],
    stored: StoredRows,
    root: str,
    now: float,
    settle_seconds: float,
    errors: list[tuple[str, str]],
) -> _Plan:
    plan = _Plan()
    base = len(root) + 1
    for c in candidates:
        try:
            fp, files, mtime = _fingerprint(c, base)
        except OSError as err:
            errors.append((c.path, f"cannot stat: {err.strerror or err}"))
            continue
        prev = stored.get(c.path)  # (fingerprint, status)
        if prev is not None and prev[0] == fp and prev[1] != "debris" and not c.debris:
            # unchanged since the last scan (same parts, sizes, mtimes): not read again; its entry comes
            # from the stored row. Debris is never reused, since a save that has settled must be read.
            plan.reused.append(stored.entry(c.path, files))
            continue
        f = _Found(c, fp, files, mtime)
        why = c.debris or _late_debris(files, now, settle_seconds)
        if why:
            derived = _entry(f, root, "debris", why)
        elif c.missing:
            listed = ", ".join(c.missing[:3]) + (", …" if len(c.missing) > 3 else "")
            derived = _entry(f, root, "incomplete", f"missing shard(s): {listed}")
        else:
            plan.to_read.append(f)
            continue
        plan.fresh.append(derived)
        # a row derived again exactly as stored (debris that is still debris) is not written again
        if prev is None or prev[0] != fp or stored.entry(c.path, files) != derived:
            plan.changed.append(derived)
    return plan


def _in_order(entries: list[IndexEntry]) -> list[IndexEntry]:
    """`entries` by run, then `layouts.order_key(step, epoch, basename)`. The name's `natural_key` (the
    costly part) is computed only inside groups that tie on (run, step, epoch): rarely more than a few."""

    def head(e: IndexEntry) -> tuple[Any, ...]:
        epoch = int(e.epoch) if e.epoch is not None else None
        return (e.run, e.step is None, e.step or 0, epoch is None, epoch or 0)

    keyed = sorted(((head(e), e) for e in entries), key=itemgetter(0))
    out: list[IndexEntry] = []
    i, n = 0, len(keyed)
    while i < n:
        j = i + 1
        while j < n and keyed[j][0] == keyed[i][0]:
            j += 1
        if j - i == 1:
            out.append(keyed[i][1])
        else:  # a stable sort of the tie, as one sort over the whole key would give
            out.extend(
                sorted((e for _, e in keyed[i:j]), key=lambda e: natural_key(os.path.basename(e.path)))
            )
        i = j
    return out


def _late_debris(files: Files, now: float, settle: float) -> str | None:
    """Zero-byte parts and parts still being written (modified within `settle` seconds)."""
    for path, size, mtime_ns in files:
        why = debris_reason(
            os.path.basename(path), size=size, mtime=mtime_ns / 1e9, now=now, settle_seconds=settle
        )
        if why:
            return why if len(files) == 1 else f"{os.path.basename(path)}: {why}"
    return None


# Names whose content is probed to send HDF5 files to the batch path. Content still decides: a `.h5` that
# holds something else goes to read_meta, and an HDF5 file under another name is read by read_meta, which
# sends it through the same h5py worker on its own; the probe is only skipped where a hit is unlikely.
_NOT_HDF5_SUFFIXES = tuple(s for s in CHECKPOINT_SUFFIXES if s not in (".h5", ".hdf5"))

ReadResult = CheckpointMeta | CkptlabError


def _read_one(path: str, limits: Limits) -> ReadResult:
    try:
        return read_meta(path, limits)
    except CkptlabError as e:
        return e


def _read_chunk(chunk: Sequence[_Found], limits: Limits) -> tuple[list[ReadResult], float]:
    """The chunk's results, and the share of its wall time the reading thread spent waiting (on I/O)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    out = [_read_one(f.c.path, limits) for f in chunk]
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


def _read_all(
    todo: list[_Found], limits: Limits, workers: int, progress: Progress | None
) -> Iterator[tuple[_Found, ReadResult]]:
    """Read candidates in a thread pool, yielding each with its meta or the error reading it raised; plain
    HDF5 files go through the h5py worker in batches."""
    total, done = len(todo), 0
    hdf5, other = [], []
    for f in todo:
        c = f.c
        probe = c.layout == "file" and not c.path.lower().endswith(_NOT_HDF5_SUFFIXES)
        (hdf5 if probe and _is_hdf5(c.path) else other).append(f)

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
        pending: deque[tuple[list[_Found], Future[tuple[list[ReadResult], float]]]] = deque()
        while chunks or pending:
            while chunks and len(pending) < flow.now:
                chunk = chunks.popleft()
                pending.append((chunk, pool.submit(_read_chunk, chunk, limits)))
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
    batch: list[_Found], limits: Limits, workers: int | None = None
) -> list[CheckpointMeta | FormatError]:
    from ..formats.hdf5_reader import read_hdf5_many

    return read_hdf5_many([Path(f.c.path) for f in batch], limits, workers)

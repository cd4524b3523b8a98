"""Walk roots, group files into logical checkpoints, read what changed, write the index.

Tolerant (a bad file or unreadable directory becomes a row or an error, never an exception that stops the
scan), incremental (parts whose (path, size, mtime) are unchanged are not read again), parallel (a thread
pool for network storage; HDF5 files go in batches through the isolated h5py worker). No torch import.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import CkptlabError, FormatError, IncompleteError
from ..formats import detect_file, read_meta
from ..formats.limits import DEFAULT_LIMITS, Limits
from ..formats.multifile import dir_layout, shard_names
from ..layouts import (
    CHECKPOINT_SUFFIXES,
    debris_reason,
    looks_like_checkpoint_name,
    order_key,
    parse_name,
    run_dir,
    unfinished_save,
)
from ..model import CheckpointMeta, IndexEntry, TensorMeta
from .store import Store

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class Candidate:
    """A logical checkpoint found on disk, before reading it."""

    path: Path
    layout: str  # file | sharded | hf-checkpoint | dcp
    parts: tuple[Path, ...]
    missing: tuple[str, ...] = ()
    debris: str | None = None


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


def discover(
    root: Path, errors: list[tuple[str, str]], limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Candidate], int]:
    """Every logical checkpoint under `root` and the number of files seen. Each directory is listed once.
    Symlinked directories are not followed; symlinked files only when the target stays inside the root."""
    real_root = os.path.realpath(root)
    out: list[Candidate] = []
    files_seen = 0
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            errors.append((str(d), f"cannot read directory: {e.strerror or e}"))
            continue
        files = [e for e in entries if e.is_file(follow_symlinks=False)]
        layout = dir_layout({e.name for e in files})
        if layout is not None:  # a DCP or HF checkpoint-N directory: one checkpoint, its files are parts
            out.append(Candidate(Path(d), layout, tuple(Path(e.path) for e in files)))
            files_seen += len(files)
            continue
        consumed: set[str] = set()
        for e in files:
            if e.name.endswith(".index.json"):
                shards = shard_names(Path(e.path), limits)
                if shards is None:
                    continue
                present = tuple(Path(d, s) for s in shards if os.path.isfile(os.path.join(d, s)))
                missing = tuple(s for s in shards if not os.path.isfile(os.path.join(d, s)))
                consumed.add(e.name)
                consumed.update(shards)
                out.append(Candidate(Path(e.path), "sharded", (Path(e.path), *present), missing))
        for e in entries:
            if e.name in consumed:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    why = debris_reason(e.name, size=None, mtime=None, now=0.0, settle_seconds=0)
                    if why is not None:  # tmp-checkpoint-*/, *.orbax-checkpoint-tmp-*/
                        out.append(Candidate(Path(e.path), "file", (), debris=why))
                    else:
                        stack.append(Path(e.path))
                    continue
                files_seen += 1
                if e.is_symlink():
                    target = os.path.realpath(e.path)
                    if not os.path.exists(target):
                        if looks_like_checkpoint_name(e.name):
                            why = debris_reason(
                                e.name,
                                size=None,
                                mtime=None,
                                now=0.0,
                                is_symlink=True,
                                target_exists=False,
                                link_target=os.readlink(e.path),
                            )
                            out.append(Candidate(Path(e.path), "file", (), debris=why))
                        continue
                    if not _inside(target, real_root) or not os.path.isfile(target):
                        continue  # never follow a link out of the root
                elif not e.is_file(follow_symlinks=False):
                    continue
                if why := unfinished_save(e.name):
                    out.append(Candidate(Path(e.path), "file", (Path(e.path),), debris=why))
                # a checkpoint suffix is enough (a broken .pt is an error row); others need checkpoint magic
                elif e.name.lower().endswith(CHECKPOINT_SUFFIXES) or (
                    looks_like_checkpoint_name(e.name) and not e.name.startswith(".") and _sniff(Path(e.path))
                ):
                    out.append(Candidate(Path(e.path), "file", (Path(e.path),)))
            except OSError as err:
                errors.append((e.path, f"cannot stat: {err.strerror or err}"))
    return out, files_seen


def _sniff(p: Path) -> bool:
    """Content check for files whose names say nothing (e.g. `model` with no suffix). A text file can look
    like a protocol-0 pickle, so only binary pickles (PROTO opcode) count."""
    try:
        kind = detect_file(p)
        if kind == "pickle":
            with open(p, "rb") as f:
                return f.read(1) == b"\x80"
        return kind in ("safetensors", "zip", "hdf5")
    except (FormatError, OSError):
        return False


def _fingerprint(c: Candidate, root: Path) -> tuple[str, tuple[tuple[str, int, int], ...], float | None]:
    parts = []
    newest = None
    for p in c.parts:
        st = p.stat()
        parts.append((str(p), st.st_size, st.st_mtime_ns))
        newest = max(newest or 0.0, st.st_mtime)
    h = hashlib.sha1(usedforsecurity=False)
    h.update(c.layout.encode())
    base = len(str(root)) + 1  # parts are under the root: slicing is what relpath would give, much cheaper
    for path, size, mtime in parts:
        h.update(f"{path[base:]}\0{size}\0{mtime}\n".encode())
    h.update(("missing:" + ",".join(c.missing)).encode())
    return h.hexdigest(), tuple(parts), newest


def _base_entry(
    c: Candidate, root: Path, fp: str, files: tuple[tuple[str, int, int], ...], mtime: float | None
) -> IndexEntry:
    name = parse_name(c.path.name)
    return IndexEntry(
        path=str(c.path),
        run=str(run_dir(c.path)),
        root=str(root),
        layout=c.layout,
        status="ok",
        fingerprint=fp,
        files=files,
        step=name.step,
        epoch=name.epoch,
        size_bytes=sum(f[1] for f in files),
        metrics=dict(name.metrics),
        mtime=mtime,
    )


def entry_from_meta(base: IndexEntry, meta: CheckpointMeta) -> IndexEntry:
    """Content first, then the name: a step saved in the file beats one parsed from its name."""
    doc = meta.to_json()
    doc.pop("tensors", None)
    return replace(
        base,
        format=meta.format,
        framework=meta.framework,
        layout=meta.layout if base.layout == "file" else base.layout,
        step=meta.step if meta.step is not None else base.step,
        epoch=meta.epoch if meta.epoch is not None else base.epoch,
        n_tensors=meta.n_tensors,
        n_params=meta.n_params,
        metrics={**base.metrics, **meta.metrics},
        has_optimizer=meta.has_optimizer,
        has_scheduler=meta.has_scheduler,
        has_rng_state=meta.has_rng_state,
        safe=meta.safety.safe,
        unsafe_globals=meta.safety.unsafe_globals,
        reason="; ".join(meta.warnings) or None,
        meta=doc,
    )


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
    """Scan `roots` into `store`; returns every checkpoint under them (read now or reused)."""
    t0 = time.perf_counter()
    now = time.time() if now is None else now
    result = ScanResult(roots=[str(Path(r).resolve()) for r in roots])
    for root_s in result.roots:
        root = Path(root_s)
        errors: list[tuple[str, str]] = []
        if not root.exists():
            result.errors.append((root_s, "no such file or directory"))
            continue
        candidates, seen = discover(root, errors, limits)
        result.files_seen += seen
        previous = {e.path: e for e in store.entries(root=root_s, with_meta=False)}
        entries: list[IndexEntry] = []  # every checkpoint under the root
        fresh: list[IndexEntry] = []  # the ones to (re)write: not reused
        to_read: list[tuple[Candidate, IndexEntry]] = []
        for c in candidates:
            try:
                fp, files, mtime = _fingerprint(c, root)
            except OSError as err:
                errors.append((str(c.path), f"cannot stat: {err.strerror or err}"))
                continue
            prev = previous.get(str(c.path))
            if prev is not None and prev.fingerprint == fp and prev.status != "debris" and not c.debris:
                # unchanged since the last scan (same parts, sizes, mtimes): not read again. Debris is never
                # reused, since a save that has settled must be read.
                entries.append(prev)
                result.reused += 1
                continue
            base = _base_entry(c, root, fp, files, mtime)
            why = c.debris or _late_debris(c, files, now, settle_seconds)
            if why:
                fresh.append(replace(base, status="debris", reason=why))
            elif c.missing:
                listed = ", ".join(c.missing[:3]) + (", …" if len(c.missing) > 3 else "")
                fresh.append(replace(base, status="incomplete", reason=f"missing shard(s): {listed}"))
            else:
                to_read.append((c, base))
        read, tensors = _read_all(to_read, limits, workers, progress)
        result.parsed += len(to_read)
        fresh.extend(read)
        entries.extend(fresh)
        # every unreadable checkpoint is an error of this scan, whether read now or reused unchanged
        errors.extend((e.path, e.reason or "unreadable") for e in entries if e.status == "unreadable")
        store.save_scan(root_s, fresh, tensors, [e.path for e in entries], errors, now)
        result.entries.extend(sorted(entries, key=_order))
        result.errors.extend(errors)
    result.seconds = time.perf_counter() - t0
    return result


def _order(e: IndexEntry) -> tuple[object, ...]:
    epoch = int(e.epoch) if e.epoch is not None else None
    return (e.run, *order_key(e.step, epoch, os.path.basename(e.path)))


def _late_debris(
    c: Candidate, files: tuple[tuple[str, int, int], ...], now: float, settle: float
) -> str | None:
    """Zero-byte parts and parts still being written (modified within `settle` seconds)."""
    for path, size, mtime_ns in files:
        why = debris_reason(
            os.path.basename(path), size=size, mtime=mtime_ns / 1e9, now=now, settle_seconds=settle
        )
        if why:
            return why if len(files) == 1 else f"{os.path.basename(path)}: {why}"
    return None


def _read_one(c: Candidate, base: IndexEntry, limits: Limits) -> tuple[IndexEntry, tuple[TensorMeta, ...]]:
    try:
        meta = read_meta(c.path, limits)
    except IncompleteError as e:
        return replace(base, status="incomplete", reason=e.cause), ()
    except CkptlabError as e:
        return replace(base, status="unreadable", reason=e.cause), ()
    return entry_from_meta(base, meta), meta.tensors


def _read_all(
    todo: list[tuple[Candidate, IndexEntry]], limits: Limits, workers: int, progress: Progress | None
) -> tuple[list[IndexEntry], dict[str, tuple[TensorMeta, ...]]]:
    """Read candidates in a thread pool; plain HDF5 files go through the h5py worker in batches."""
    out: list[IndexEntry] = []
    tensors: dict[str, tuple[TensorMeta, ...]] = {}
    total, done = len(todo), 0
    hdf5, other = [], []
    for c, base in todo:
        (hdf5 if c.layout == "file" and _is_hdf5(c.path) else other).append((c, base))

    def report() -> None:
        if progress:
            progress("read", done, total)

    report()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        n_workers = min(2, len(hdf5))  # h5py workers: one per core here, each a process with its own import
        hdf5_futures = [pool.submit(_read_hdf5_batch, hdf5[i::n_workers], limits) for i in range(n_workers)]
        for entry, ts in pool.map(lambda cb: _read_one(cb[0], cb[1], limits), other):
            out.append(entry)
            tensors[entry.path] = ts
            done += 1
            report()
        for fut in hdf5_futures:
            for entry, ts in fut.result():
                out.append(entry)
                tensors[entry.path] = ts
                done += 1
            report()
    return out, tensors


def _is_hdf5(p: Path) -> bool:
    try:
        return detect_file(p) == "hdf5"
    except (FormatError, OSError):
        return False


def _read_hdf5_batch(
    batch: list[tuple[Candidate, IndexEntry]], limits: Limits
) -> list[tuple[IndexEntry, tuple[TensorMeta, ...]]]:
    from ..formats.hdf5_reader import read_hdf5_many

    results = read_hdf5_many([c.path for c, _ in batch], limits)
    out = []
    for (_, base), res in zip(batch, results, strict=True):
        if isinstance(res, CkptlabError):
            out.append((replace(base, status="unreadable", reason=res.cause), ()))
        else:
            out.append((entry_from_meta(base, res), res.tensors))
    return out

"""What a scan does with each candidate: fingerprint its parts, reuse the stored row when they are
unchanged, derive debris and incomplete rows again, and leave the rest to be read."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from ..layouts import debris_reason
from ..model import IndexEntry
from .discover import Candidate
from .entries import entry_of
from .rows import StoredRows

Files = tuple[tuple[str, int, int], ...]  # (path, size, mtime_ns) of every part


def _fingerprint(c: Candidate, base: int) -> tuple[str, Files, float | None]:
    """(digest, parts, newest mtime). `base` is the root's length + 1: parts lie under the root, so slicing
    gives what relpath would, for much less. The digest's bytes are the same as ever (a link's now include
    its target): an index written by an earlier version is reused, not read again. Raises the OSError of a
    part that cannot be stat'ed."""
    stats = c.stats
    if stats is None:
        stats = tuple(os.stat(p) for p in c.parts)
    elif isinstance(stats, OSError):
        raise stats
    if len(stats) == 1 and not c.missing:  # nearly every checkpoint is one file: the same bytes, less work
        p, st = c.parts[0], stats[0]
        size, mtime_ns = st.st_size, st.st_mtime_ns
        text = f"{c.layout}{p[base:]}\0{size}\0{mtime_ns}\nmissing:"
        if c.link_to:  # a link re-pointed at another checkpoint of the same size and mtime is a change
            text += f"\nlink:{c.link_to[base:]}"
        digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        return digest, ((p, size, mtime_ns),), max(0.0, st.st_mtime)
    files = tuple((p, st.st_size, st.st_mtime_ns) for p, st in zip(c.parts, stats, strict=True))
    text = [c.layout, *(f"{p[base:]}\0{size}\0{mtime_ns}\n" for p, size, mtime_ns in files)]
    text.append("missing:" + ",".join(c.missing))
    digest = hashlib.sha1("".join(text).encode(), usedforsecurity=False).hexdigest()
    newest = max(0.0, *(st.st_mtime for st in stats)) if stats else None
    return digest, files, newest


class Found(NamedTuple):
    """A candidate that is not reused, with what was learnt from its stat calls."""

    c: Candidate
    fingerprint: str
    files: Files
    mtime: float | None


@dataclass
class Plan:
    """What to do with a root's candidates: which are reused, derived again (debris, incomplete) or read."""

    reused: list[IndexEntry] = field(default_factory=list)
    fresh: list[IndexEntry] = field(default_factory=list)  # not reused: derived again, then read
    changed: list[IndexEntry] = field(default_factory=list)  # the rows to write
    to_read: list[Found] = field(default_factory=list)


def make_plan(
    candidates: list[Candidate],
    stored: StoredRows,
    root: str,
    now: float,
    settle_seconds: float,
    errors: list[tuple[str, str]],
) -> Plan:
    """The plan for one root's `candidates`, compared with its `stored` rows; a part that cannot be stat'ed
    becomes an entry of `errors`."""
    plan = Plan()
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
        f = Found(c, fp, files, mtime)
        why = c.debris or _late_debris(files, now, settle_seconds)
        if why:
            derived = entry_of(f, root, "debris", why)
        elif c.missing:
            listed = ", ".join(c.missing[:3]) + (", …" if len(c.missing) > 3 else "")
            derived = entry_of(f, root, "incomplete", f"missing shard(s): {listed}")
        else:
            plan.to_read.append(f)
            continue
        plan.fresh.append(derived)
        # a row derived again exactly as stored (debris that is still debris) is not written again
        if prev is None or prev[0] != fp or stored.entry(c.path, files) != derived:
            plan.changed.append(derived)
    return plan


def _late_debris(files: Files, now: float, settle: float) -> str | None:
    """Zero-byte parts and parts still being written (modified within `settle` seconds)."""
    for path, size, mtime_ns in files:
        why = debris_reason(
            os.path.basename(path), size=size, mtime=mtime_ns / 1e9, now=now, settle_seconds=settle
        )
        if why:
            return why if len(files) == 1 else f"{os.path.basename(path)}: {why}"
    return None

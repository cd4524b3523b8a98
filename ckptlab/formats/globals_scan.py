"""Naming the unsafe globals of a file ckptlab refuses to read, so a refusal never hides a payload.

A damaged or odd file (a deflated or CRC-broken `data.pkl`, a plain pickle, a zip that is not a
checkpoint, a truncated part of an HF directory) is an error for ckptlab, but `torch.load` may still
unpickle it and run what it references. This module walks every pickle it can find in such a file — zip
members found by their local headers, stored or deflated, CRC ignored, as a lenient loader would read them —
with the restricted interpreter, bounded by the limits, and returns the unsafe globals.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from .limits import Limits
from .pickle_vm import scan_globals

_LOCAL = b"PK\x03\x04"
_MAX_MEMBERS = 10_000


def unsafe_globals_in_file(path: Path, limits: Limits) -> list[str]:
    """Unsafe globals referenced by any pickle in `path` (a pickle stream or a zip of them); never raises."""
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_pickle_bytes + 1)
    except OSError:
        return []
    if data[:4] == _LOCAL:
        return _zip_globals(path, limits)
    return scan_globals(data[: limits.max_pickle_bytes], limits)


def _zip_globals(path: Path, limits: Limits) -> list[str]:
    found: list[str] = []
    try:
        with open(path, "rb") as f:
            offsets = _member_offsets(f)
            if offsets is None:  # no usable central directory: look for local headers near the start
                blob = f.read(2 * limits.max_pickle_bytes)
                offsets, pos = [], 0
                while len(offsets) < _MAX_MEMBERS and (pos := blob.find(_LOCAL, pos)) >= 0:
                    offsets.append(pos)
                    pos += 4
            for off in offsets[:_MAX_MEMBERS]:
                raw = _member_bytes(f, off, limits)
                if raw is not None:
                    found.extend(g for g in scan_globals(raw, limits) if g not in found)
    except (OSError, MemoryError):
        pass
    return found


def _member_offsets(f: BinaryIO) -> list[int] | None:
    """Local-header offsets of every member, from the central directory (names and offsets only)."""
    try:
        with zipfile.ZipFile(f) as zf:
            return [i.header_offset for i in zf.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError, NotImplementedError):
        return None


def _member_bytes(f: BinaryIO, off: int, limits: Limits) -> bytes | None:
    """A member's pickle bytes read at its local header: stored or deflated, CRC and flags ignored. Any name
    counts (a payload may hide as `data.txt`), so a stored member is peeked at first: only one that starts
    like a binary pickle, or is named like one, is read in full."""
    f.seek(off)
    h = f.read(30)
    if len(h) < 30 or h[:4] != _LOCAL:
        return None
    method, _, _, _, csize, _, nlen, elen = struct.unpack("<HHHIIIHH", h[8:30])
    name = f.read(nlen).decode("utf-8", "replace").lower()
    named = name.endswith((".pkl", ".pickle"))
    f.seek(off + 30 + nlen + elen)
    if method == 0:
        if not named and f.read(1) != b"\x80":
            return None
        f.seek(off + 30 + nlen + elen)
    elif method != 8:
        return None
    raw = f.read(min(csize or limits.max_pickle_bytes, limits.max_pickle_bytes))
    if method == 8:
        try:
            raw = zlib.decompressobj(-15).decompress(raw, limits.max_pickle_bytes)
        except zlib.error:
            return None
    return raw if named or raw[:1] == b"\x80" else None

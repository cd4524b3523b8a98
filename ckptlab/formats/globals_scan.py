"""Naming the unsafe globals of a file ckptlab refuses to read, so a refusal never hides a payload.

A damaged or odd file (a deflated or CRC-broken `data.pkl`, a plain pickle, a zip that is not a
checkpoint, a truncated part of an HF directory) is an error for ckptlab, but `torch.load` may still
unpickle it and run what it references. This module walks every pickle it can find in such a file — zip
members found by their local headers, stored or deflated, CRC ignored, as a lenient loader would read them —
with the restricted interpreter, bounded by the limits, and returns the unsafe globals.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from ..errors import FormatError
from .limits import Limits
from .pickle_vm import scan_globals
from .zipdir import ZipDirectory
from .zipsafe import LOCAL_HEADER, Region

_MAX_MEMBERS = 10_000


def unsafe_globals_in_file(path: Path, limits: Limits) -> list[str]:
    """Unsafe globals referenced by any pickle in `path` (a pickle stream or a zip of them); never raises.
    Pickles are read incrementally from the file, so memory stays small whatever lengths they declare."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if f.read(4) == LOCAL_HEADER:
                return _zip_globals(f, size, limits)
            return scan_globals(
                Region(f, 0, min(size, limits.max_pickle_bytes)), limits, min(size, limits.max_pickle_bytes)
            )
    except (OSError, MemoryError):
        return []


def _zip_globals(f: BinaryIO, size: int, limits: Limits) -> list[str]:
    found: list[str] = []
    offsets = _member_offsets(f, size, limits)
    if offsets is None:  # no usable central directory: find local headers, in bounded chunks
        offsets = _local_headers(f, size, limits)
    for off in offsets[:_MAX_MEMBERS]:
        member = _member_stream(f, off, size, limits)
        if member is not None:
            stream, length = member
            found.extend(g for g in scan_globals(stream, limits, length) if g not in found)
    return found


def _member_offsets(f: BinaryIO, size: int, limits: Limits) -> list[int] | None:
    """Local-header offsets of every member, from the central directory (one pass, under the entry caps and
    ambiguity rules of the readers), in directory order."""
    try:
        return [m.header_offset for m in ZipDirectory(f, size, "", limits).members.values()]
    except (FormatError, OSError, ValueError, struct.error, EOFError):
        return None


def _local_headers(f: BinaryIO, size: int, limits: Limits, chunk: int = 1 << 20) -> list[int]:
    out: list[int] = []
    pos, tail = 0, b""
    end = min(size, 2 * limits.max_pickle_bytes)
    f.seek(0)
    while pos < end and len(out) < _MAX_MEMBERS:
        block = tail + f.read(min(chunk, end - pos))
        base = pos - len(tail)
        i = 0
        while (i := block.find(LOCAL_HEADER, i)) >= 0 and len(out) < _MAX_MEMBERS:
            out.append(base + i)
            i += 4
        pos += len(block) - len(tail)
        tail = block[-3:]
        if not block:
            break
    return sorted(set(out))


def _member_stream(f: BinaryIO, off: int, size: int, limits: Limits) -> tuple[BinaryIO, int] | None:
    """A member's pickle as (stream, length), found at its local header: stored (read in place) or deflated
    (inflated, bounded), CRC and flags ignored. Any name counts (a payload may hide as `data.txt`), so only a
    member that starts like a binary pickle, or is named like one, is scanned."""
    f.seek(off)
    h = f.read(30)
    if len(h) < 30 or h[:4] != LOCAL_HEADER:
        return None
    method, _, _, _, csize, _, nlen, elen = struct.unpack("<HHHIIIHH", h[8:30])
    name = f.read(nlen).decode("utf-8", "replace").lower()
    named = name.endswith((".pkl", ".pickle"))
    start = off + 30 + nlen + elen
    length = min(csize or size - start, limits.max_pickle_bytes, max(0, size - start))
    if method == 0:
        f.seek(start)
        if not named and f.read(1) != b"\x80":
            return None
        f.seek(start)
        return Region(f, start, length), length  # type: ignore[return-value]
    if method != 8:
        return None
    f.seek(start)
    try:
        raw = zlib.decompressobj(-15).decompress(f.read(length), limits.max_pickle_bytes)
    except zlib.error:
        return None
    if not named and raw[:1] != b"\x80":
        return None
    return io.BytesIO(raw), len(raw)

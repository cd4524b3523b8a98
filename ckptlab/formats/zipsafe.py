"""Opening untrusted zip archives: entry caps checked before `zipfile` allocates; regions; data offsets."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import IO

from ..errors import FormatError, LimitError
from .limits import Limits

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_LOCAL = b"PK\x03\x04"


class Region(io.RawIOBase):
    """A read-only window [start, start+length) of a file, so a zip embedded in a file can be opened."""

    def __init__(self, f: IO[bytes], start: int, length: int) -> None:
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(b), self.length - self.pos))
        if n == 0:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def declared_entries(f: IO[bytes], size: int) -> int:
    """Entry count from the end-of-central-directory record (zip64-aware), read before parsing."""
    tail_len = min(size, 65536 + 22)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    i = tail.rfind(_EOCD)
    if i < 0 or len(tail) - i < 22:
        raise FormatError(None, "not a complete zip archive (no end-of-central-directory record; truncated?)")
    (total,) = struct.unpack("<H", tail[i + 10 : i + 12])
    if total == 0xFFFF and i >= 20 and tail[i - 20 : i - 16] == _EOCD64_LOCATOR:
        (eocd64_off,) = struct.unpack("<Q", tail[i - 12 : i - 4])
        if eocd64_off + 56 <= size:
            f.seek(eocd64_off)
            rec = f.read(56)
            if rec[:4] == b"PK\x06\x06":
                (total,) = struct.unpack("<Q", rec[32:40])
    return total


def open_zip(f: IO[bytes], size: int, path: str, limits: Limits) -> zipfile.ZipFile:
    """A ZipFile over `f` after checking the declared entry count against the cap."""
    try:
        n = declared_entries(f, size)
    except FormatError as e:
        raise FormatError(path, e.cause) from None
    if n > limits.max_zip_entries:
        raise LimitError(path, f"zip declares {n} entries, over the cap of {limits.max_zip_entries}")
    try:
        f.seek(0)
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
        raise FormatError(path, f"damaged zip archive ({e})") from None
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise FormatError(path, f"damaged zip archive ({type(e).__name__}: {e})") from None
    if len(zf.infolist()) > limits.max_zip_entries:
        raise LimitError(path, f"zip holds more than {limits.max_zip_entries} entries")
    return zf


def data_offset(f: IO[bytes], info: zipfile.ZipInfo, size: int, path: str) -> int:
    """Absolute offset of a member's first data byte (the local header's extra field differs from the
    central one in torch archives, which pad it for alignment, so it must be read)."""
    f.seek(info.header_offset)
    h = f.read(30)
    if len(h) < 30 or h[:4] != _LOCAL:
        raise FormatError(path, f"zip member {info.filename}: local header missing or damaged")
    name_len, extra_len = struct.unpack("<HH", h[26:30])
    off = info.header_offset + 30 + name_len + extra_len
    if off + info.file_size > size:
        raise FormatError(path, f"zip member {info.filename} runs past the end of the file (truncated)")
    return off


def file_size(f: IO[bytes]) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        pos = f.tell()
        end = f.seek(0, 2)
        f.seek(pos)
        return end

"""Opening untrusted zip archives: entry caps checked before `zipfile` allocates; regions; data offsets."""

from __future__ import annotations

import io
import lzma
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable
from typing import IO

from ..errors import FormatError, LimitError
from .limits import Limits

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
LOCAL_HEADER = b"PK\x03\x04"


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

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        # clamp before allocating: RawIOBase.read(n) would allocate n bytes for a declared 2**60-byte string
        room = max(0, self.length - self.pos)
        n = room if n is None or n < 0 else min(n, room)
        if n == 0:
            return b""
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        room = max(0, self.length - self.pos)
        self.f.seek(self.start + self.pos)
        data = self.f.readline(room if size is None or size < 0 else min(size, room))
        self.pos += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(b), self.length - self.pos))
        if n == 0:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def central_directory(f: IO[bytes], size: int) -> tuple[int, int, int, int]:
    """(declared entries, central directory start, central directory size, declared start) from the
    end-of-central-directory record (zip64-aware), read before parsing. The start is computed back from the
    record, as zipfile does, so data prepended to the archive is allowed (it shifts every offset by
    start - declared start)."""
    # the record ends the file unless a comment follows it: try the last 42 bytes (record + zip64 locator)
    # before searching the last 64 KiB
    tail_len = min(size, 42)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    if len(tail) >= 22 and tail[-22:-18] == _EOCD:
        i = len(tail) - 22
    else:
        tail_len = min(size, 65536 + 22)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        i = tail.rfind(_EOCD)
    if i < 0 or len(tail) - i < 22:
        raise FormatError(None, "not a complete zip archive (no end-of-central-directory record; truncated?)")
    total, cd_size, declared = struct.unpack("<HII", tail[i + 10 : i + 20])
    cd_end = size - tail_len + i
    if i >= 20 and tail[i - 20 : i - 16] == _EOCD64_LOCATOR:
        # the zip64 end record sits right before its locator (read there, as zipfile does, rather than at
        # the offset the locator declares, which data prepended to the archive would shift)
        rec_at = cd_end - 20 - 56
        if rec_at >= 0:
            f.seek(rec_at)
            rec = f.read(56)
            if rec[:4] == b"PK\x06\x06":
                if total == 0xFFFF:
                    (total,) = struct.unpack("<Q", rec[32:40])
                cd_size, declared = struct.unpack("<QQ", rec[40:56])
                cd_end = rec_at
    return total, max(0, cd_end - cd_size), cd_size, declared


def declared_entries(f: IO[bytes], size: int) -> int:
    """Entry count from the end-of-central-directory record (zip64-aware), read before parsing."""
    return central_directory(f, size)[0]


def central_entries_exceed(f: IO[bytes], size: int, cap: int) -> bool:
    """Whether the central directory really holds more than `cap` entries, whatever the end record claims.

    zipfile parses the whole directory (about 500 bytes of Python objects per 46-byte entry) before a count
    can be checked, so a record under-declaring its entries is caught here by walking the fixed-size entry
    headers, stopping at cap + 1. Skipped when the directory is too small to hold more than `cap` entries.
    """
    _, start, length, _ = central_directory(f, size)
    if length // 46 <= cap:
        return False
    n = pos = buf_start = 0
    buf = b""
    while n <= cap and pos + 46 <= length:
        if pos + 46 > buf_start + len(buf):
            f.seek(start + pos)
            buf, buf_start = f.read(min(length - pos, 1 << 20)), pos
            if len(buf) < 46:
                break
        h = buf[pos - buf_start : pos - buf_start + 46]
        if h[:4] != b"PK\x01\x02":
            break
        name_len, extra_len, comment_len = struct.unpack("<HHH", h[28:34])
        pos += 46 + name_len + extra_len + comment_len
        n += 1
    return n > cap


class DamagedMemberError(FormatError, zipfile.BadZipFile):
    """A member that cannot be read (damaged header, bad CRC, unsupported method or flag). Also a
    BadZipFile, so callers that skip unreadable members keep doing so."""


class SafeZipFile(zipfile.ZipFile):
    """A ZipFile whose `read` is capped by the member's declared size and fails with one-line errors.

    zipfile raises a zoo of exceptions for damaged members (BadZipFile, NotImplementedError, RuntimeError,
    EOFError, UnicodeDecodeError...) and `read` inflates whatever size a member declares (a zip bomb).
    """

    ckpt_path: str | None = None
    max_member_bytes: int = 64 * 1024 * 1024

    def read(self, name: str | zipfile.ZipInfo, pwd: bytes | None = None) -> bytes:
        info = name if isinstance(name, zipfile.ZipInfo) else self.getinfo(name)  # KeyError if absent
        if info.file_size > self.max_member_bytes:
            raise LimitError(
                self.ckpt_path,
                f"zip member {info.filename} declares {info.file_size} bytes, "
                f"over the cap of {self.max_member_bytes}",
            )
        try:
            return super().read(info, pwd)
        except (
            zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError, ValueError,
            struct.error, zlib.error, lzma.LZMAError,
        ) as e:  # fmt: skip
            raise DamagedMemberError(
                self.ckpt_path, f"zip member {info.filename} is damaged or unsupported ({_short(e)})"
            ) from None


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]


def open_zip(f: IO[bytes], size: int, path: str, limits: Limits) -> zipfile.ZipFile:
    """A ZipFile over `f` after checking the declared entry count against the cap."""
    try:
        n = declared_entries(f, size)
    except FormatError as e:
        raise FormatError(path, e.cause) from None
    if n > limits.max_zip_entries:
        raise LimitError(path, f"zip declares {n} entries, over the cap of {limits.max_zip_entries}")
    if central_entries_exceed(f, size, limits.max_zip_entries):
        raise LimitError(path, f"zip central directory holds more than {limits.max_zip_entries} entries")
    try:
        f.seek(0)
        zf = SafeZipFile(f)
    except zipfile.BadZipFile as e:
        raise FormatError(path, f"damaged zip archive ({e})") from None
    except (OSError, ValueError, struct.error, EOFError, NotImplementedError) as e:
        raise FormatError(path, f"damaged zip archive ({type(e).__name__}: {_short(e)})") from None
    zf.ckpt_path, zf.max_member_bytes = path, limits.max_pickle_bytes
    if len(zf.infolist()) > limits.max_zip_entries:
        raise LimitError(path, f"zip holds more than {limits.max_zip_entries} entries")
    if any(not info.filename for info in zf.infolist()):  # ZipInfo.is_dir() raises IndexError on these
        raise FormatError(path, "damaged zip archive (a member has an empty name)")
    ambiguous_names(zf.namelist(), path)
    return zf


def ambiguous_names(names: Iterable[str], path: str) -> None:
    """Two members torch could confuse make the archive ambiguous: zipfile's getinfo() returns the LAST of
    duplicate names, while torch's miniz reader returns the first, and matches names case-insensitively. A
    benign `data.pkl` after a malicious `DATA.PKL` (or a second `data.pkl`) would be checked while torch
    loads the other. Exact duplicates are refused; case-only collisions where torch reads by name (pickles,
    storage records, byteorder, version) too. TorchScript code files differing in case stay allowed."""
    names = list(names)
    if len(set(map(str.lower, names))) == len(names):  # the usual answer, found in C for any member count
        return
    unique: set[str] = set()
    seen: dict[str, str] = {}
    for name in names:
        if name in unique:
            raise FormatError(path, f"ambiguous zip archive: member {name!r} appears twice")
        unique.add(name)
        low = name.lower()
        other = seen.get(low)
        if other is not None and _read_by_name(low):
            raise FormatError(
                path, f"ambiguous zip archive: members {other!r} and {name!r} differ only in case"
            )
        seen.setdefault(low, name)


def _read_by_name(low: str) -> bool:
    parts = low.split("/")
    return low.endswith(".pkl") or parts[-1] in ("byteorder", "version") or "data" in parts[:-1]


def local_header_lengths(f: IO[bytes], offset: int) -> tuple[int, int] | None:
    """(name length, extra length) of the local file header at `offset`, or None when there is none: the
    member's data starts 30 + both past the header (torch pads the local extra field for alignment, so it
    differs from the central one and must be read)."""
    f.seek(offset)
    h = f.read(30)
    if len(h) < 30 or h[:4] != LOCAL_HEADER:
        return None
    return struct.unpack("<HH", h[26:30])  # type: ignore[return-value]


def resolve_data_offset(f: IO[bytes], offset: int, zip_header: bool, path: str) -> int:
    """A RawLocation's data offset: `offset` itself, or past the local header found there."""
    if not zip_header:
        return offset
    lengths = local_header_lengths(f, offset)
    if lengths is None:
        raise FormatError(path, f"zip local header missing or damaged at byte {offset}")
    return offset + 30 + lengths[0] + lengths[1]


def file_size(f: IO[bytes]) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        pos = f.tell()
        end = f.seek(0, 2)
        f.seek(pos)
        return end

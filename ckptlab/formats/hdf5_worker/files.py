"""Opening an HDF5 file, or a member of a zip (a `.keras` archive), for libhdf5."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from typing import Any

import h5py
from h5py import h5f, h5p

from .errors import WorkerError

# Files up to this size are read whole into memory at open (HDF5's core driver): a small file's metadata is
# then parsed from one read instead of ~40 small preads, 5-10 % less time per file. Larger files keep the
# sec2 driver, which reads only the metadata (from ~384 KiB the whole-file read made a file twice as slow).
_CORE_MAX_BYTES = 256 * 1024
_FAPLS: dict[bool, Any] = {}  # file-access property lists, by "core driver", shared by every open


class _RangeFile(io.RawIOBase):
    """A read-only, cheaply seekable view of bytes [start, start+size) of a file (a stored zip member).

    zipfile's ZipExtFile rewinds to the member start on every backward seek, and HDF5 seeks backwards
    constantly, so for uncompressed members we hand h5py this window onto the archive instead.
    """

    def __init__(self, f: io.BufferedReader, start: int, size: int) -> None:
        super().__init__()
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: Any) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _open_member(path: str, member: str, stack: list[Any]) -> Any:
    """A file object for `member` of zip `path`; pushes what must be closed onto `stack`."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WorkerError(f"not a zip archive ({exc})") from None
    stack.append(zf)
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise WorkerError(f"no {member} in archive") from None
    if info.flag_bits & 0x1:
        raise WorkerError(f"{member} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        raw = open(path, "rb")  # noqa: SIM115 - closed through `stack`
        stack.append(raw)
        raw.seek(info.header_offset)
        header = raw.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise WorkerError(f"bad local header for {member}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return _RangeFile(raw, info.header_offset + 30 + name_len + extra_len, info.file_size)
    # compressed member: HDF5 needs random access, so inflate it to a private temp file first
    tmp = tempfile.TemporaryFile(prefix="ckptlab-h5-")  # noqa: SIM115 - closed through `stack`
    stack.append(tmp)
    try:
        with zf.open(info) as src:
            shutil.copyfileobj(src, tmp, 1 << 20)
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        ValueError,
        zlib.error,
        lzma.LZMAError,
    ) as exc:  # the same list as zipsafe.SafeZipFile.read: this worker must not import ckptlab
        raise WorkerError(f"cannot inflate {member} ({exc})") from None
    tmp.seek(0)
    return tmp


def open_h5(path: str, member: str | None, stack: list[Any]) -> Any:
    """An h5py.File (the high-level API, for dataset reads); pushed onto `stack` to be closed."""
    target: Any = _open_member(path, member, stack) if member else path
    try:
        f = h5py.File(target, "r")
    except OSError as exc:
        raise _open_failure(str(exc)) from None
    stack.append(f)
    return f


def _fapl(core: bool) -> Any:
    if core not in _FAPLS:
        fapl = h5p.create(h5p.FILE_ACCESS)
        if core:
            fapl.set_fapl_core(1 << 16, False)  # no backing store: nothing is ever written back
        _FAPLS[core] = fapl
    return _FAPLS[core]


def open_fid(path: str, member: str | None, size: int | None, stack: list[Any]) -> Any:
    """A low-level FileID. h5py.File costs ~50 us more per file than h5f.open with a shared property list,
    which matters at a few hundred us per small file; zip members still need h5py.File's file-object driver.
    `size` is the file's size as the parent saw it (None: unknown).
    """
    if member:
        return open_h5(path, member, stack).id
    if size is None:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = _CORE_MAX_BYTES + 1  # h5f.open below reports what is wrong, as for any file
    try:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY, fapl=_fapl(size <= _CORE_MAX_BYTES))
    except OSError as exc:
        raise _open_failure(str(exc)) from None
    # the default (weak) close degree: the file really closes when the walker's last object id is freed,
    # so no id is ever closed behind h5py's back
    stack.append(fid)
    return fid


def _open_failure(msg: str) -> WorkerError:
    """h5py's 'Unable to synchronously open file (truncated file: eof = ...)' -> a short cause."""
    inner = msg[msg.find("(") + 1 : msg.rfind(")")] if "(" in msg else msg
    if "signature not found" in inner:
        return WorkerError("not an HDF5 file (no HDF5 signature)")
    if inner.startswith("truncated file"):
        fields = dict(
            part.strip().split(" = ", 1) for part in inner.split(":", 1)[-1].split(",") if " = " in part
        )
        if "eof" in fields and "stored_eof" in fields:
            return WorkerError(f"truncated HDF5 file ({fields['eof']} of {fields['stored_eof']} bytes)")
        return WorkerError("truncated HDF5 file")
    return WorkerError(f"cannot open HDF5 file ({inner})")

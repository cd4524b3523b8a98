"""PyTorch files without torch: the zip archive (`torch.save` default, TorchScript) and the legacy stream.

Zip: the central directory gives the members; `data.pkl` is walked by the restricted unpickler; each storage
is the uncompressed member `data/<key>`, so its byte offset is known without reading it.
Legacy (pre-1.6, `_use_new_zipfile_serialization=False`): magic, protocol, sys-info and object pickles, then
the storage-key list, then each storage as an 8-byte element count followed by raw bytes.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import IO, Any

from ..dtypes import BYTE_SIZES, itemsize
from ..errors import FormatError, LimitError
from ..model import CheckpointMeta, RawLocation, Safety
from .content import Content, analyse
from .limits import DEFAULT_LIMITS, Limits
from .pickle_vm import Obj, RestrictedUnpickler, StorageRef, TensorRef, torch_persistent_load
from .zipdir import ZipDirectory
from .zipsafe import file_size, resolve_data_offset

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


@dataclass
class TorchZip:
    """The parts of a torch zip archive the readers need."""

    dir: ZipDirectory
    prefix: str  # 'archive/' or '<stem>/' ...
    is_torchscript: bool
    byteorder: str


def find_prefix(names: Iterable[str]) -> str | None:
    """Archive folder holding data.pkl: torch names it after the file stem, so it can be anything."""
    for n in names:
        if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1):
            return n[: -len("data.pkl")]
    return None


def open_torch_zip(
    f: IO[bytes],
    size: int,
    path: str,
    limits: Limits,
    zd: ZipDirectory | None = None,
    prefix: str | None = None,
) -> TorchZip:
    """`zd`, `prefix`: the directory and data.pkl's folder (find_prefix) a caller already has."""
    zd = zd if zd is not None else ZipDirectory(f, size, path, limits)
    names = zd.members  # iterated in directory order, without a copy
    if prefix is None:
        prefix = find_prefix(names)
    if prefix is None:
        raise FormatError(path, "zip archive without data.pkl: not a PyTorch checkpoint")
    code = prefix + "code/"
    is_ts = (prefix + "constants.pkl") in zd or any(map(str.startswith, names, repeat(code)))
    byteorder = "little"
    if (prefix + "byteorder") in zd:
        bo = zd.read_small(prefix + "byteorder").strip()
        if bo not in (b"little", b"big"):
            raise FormatError(path, f"unknown byteorder {bo[:16]!r}")
        byteorder = bo.decode()
    return TorchZip(zd, prefix, is_ts, byteorder)


def walk_data_pkl(
    f: IO[bytes], tz: TorchZip, path: str, limits: Limits, member: str = "data.pkl"
) -> tuple[Any, RestrictedUnpickler]:
    """The object pickled in `member`, with TensorRefs for tensors; the unpickler lists unsafe globals and
    the storages the tensors use."""
    info = tz.dir.stored(tz.prefix + member)
    if info.file_size > limits.max_pickle_bytes:
        raise LimitError(
            path, f"{member} is {info.file_size} bytes, over the cap of {limits.max_pickle_bytes}"
        )
    raw = tz.dir.read_stored(tz.prefix + member)
    u = RestrictedUnpickler(
        io.BytesIO(raw), context="torchscript" if tz.is_torchscript else None, limits=limits
    )
    try:
        value = u.load()
    except FormatError as e:  # keep the type: a LimitError stays a LimitError
        raise type(e)(path, f"{member}: {e.cause}") from None
    return value, u


def zip_locator(f: IO[bytes], tz: TorchZip, path: str, size: int) -> Callable[[TensorRef], RawLocation]:
    """Each storage is the stored member `data/<key>`: checked once per key (present, stored, big enough,
    inside the file), located by its local header's offset (the exact data offset is read on load)."""
    checked: dict[str, tuple[int, StorageRef]] = {}
    prefix, byteorder, members = f"{tz.prefix}data/", tz.byteorder, tz.dir.members

    def check(st: StorageRef) -> tuple[int, StorageRef]:
        m = members.get(prefix + st.key)
        if m is None or m.compress_type:
            m = tz.dir.stored(prefix + st.key)  # raises, naming the problem
        need = st.numel * BYTE_SIZES.get(st.dtype, 1)  # untyped and packed storages count bytes
        if m.file_size < need:
            raise FormatError(path, f"storage data/{st.key} holds {m.file_size} bytes, needs {need}")
        # the exact data offset needs the local header; its fixed part already bounds a truncation
        if m.header_offset < 0:
            raise FormatError(path, f"storage data/{st.key}: local header offset is outside the file")
        if m.header_offset + 30 + len(m.name) + m.file_size > size:  # names are ASCII in torch archives
            raise FormatError(path, f"storage data/{st.key} runs past the end of the file (truncated)")
        checked[st.key] = (m.header_offset, st)
        return checked[st.key]

    return _locator(path, checked, check, byteorder, zip_header=True)


def _locator(
    path: str,
    known: dict[str, tuple[int, StorageRef]],
    check: Callable[[StorageRef], tuple[int, StorageRef]] | None,
    byteorder: str,
    zip_header: bool,
) -> Callable[[TensorRef], RawLocation]:
    """Tensor -> RawLocation, from each storage key's (offset, StorageRef). A tensor whose storage record
    disagrees with the one its key was checked with (another size or dtype) is refused: its view was
    bounded by its own record, and the bytes it would read belong to the checked one."""
    new = tuple.__new__

    def locate(t: TensorRef) -> RawLocation:
        st = t.storage
        hit = known.get(st.key)
        if hit is None:
            if check is None:
                raise FormatError(path, f"storage {st.key} is not in the file's storage list")
            hit = check(st)
        offset, ref = hit
        if ref is not st and ref != st:
            raise FormatError(path, f"storage {st.key} is declared twice with different sizes or types")
        numel = st.numel if st.dtype is not None else st.numel // itemsize(t.dtype)
        stride = None if t.contiguous else t.stride
        return new(RawLocation, (path, offset, numel, t.storage_offset, stride, byteorder, zip_header))

    return locate


def scalar_reader(
    f: IO[bytes], locate: Callable[[TensorRef], RawLocation]
) -> Callable[[TensorRef], float | None]:
    """Read a one-element tensor's value straight from the file (a few bytes; used for metrics)."""
    codes = {
        "float32": "f",
        "float64": "d",
        "float16": "e",
        "int64": "q",
        "int32": "i",
        "int16": "h",
        "int8": "b",
        "uint8": "B",
        "bool": "?",
    }

    def read(t: TensorRef) -> float | None:
        try:
            loc = locate(t)
        except FormatError:
            return None
        order = "<" if loc.byteorder == "little" else ">"
        isz = itemsize(t.dtype)
        f.seek(resolve_data_offset(f, loc.offset, loc.zip_header, loc.file) + loc.storage_offset * isz)
        raw = f.read(isz)
        if len(raw) != isz:
            return None
        if t.dtype == "bfloat16":
            (u,) = struct.unpack(order + "H", raw)
            return struct.unpack("<f", struct.pack("<I", u << 16))[0]
        code = codes.get(t.dtype)
        return float(struct.unpack(order + code, raw)[0]) if code else None

    return read


def _check_count(path: str | Path, content: Content, limits: Limits) -> None:
    n = len(content.tensors) + len(content.other_tensors)
    if n > limits.max_tensors:
        raise LimitError(str(path), f"{n} tensors exceed the cap of {limits.max_tensors}")


def _meta(
    path: str | Path, fmt: str, size: int, content: Content, unsafe: list[str], **extra: Any
) -> CheckpointMeta:
    findings = tuple(f"pickle references {g} (not imported or called)" for g in unsafe)
    return CheckpointMeta(
        path=str(path),
        format=fmt,
        size_bytes=size,
        tensors=tuple(content.tensors),
        step=content.step,
        epoch=content.epoch,
        metrics=content.metrics,
        has_optimizer=content.has_optimizer,
        has_scheduler=content.has_scheduler,
        has_rng_state=content.has_rng_state,
        metadata=content.metadata | extra.pop("metadata", {}),
        entries=tuple(content.entries),
        safety=Safety(tuple(unsafe), findings),
        framework=extra.pop("framework", content.framework),
        files=(str(path),),
        other_tensors=tuple(content.other_tensors),
        **extra,
    )


def read_torch_zip(
    path: str | Path,
    limits: Limits = DEFAULT_LIMITS,
    opened: tuple[IO[bytes], ZipDirectory, int, str] | None = None,
) -> CheckpointMeta:
    """A torch.save / TorchScript archive. `opened`: the file, zip directory, file size and archive prefix
    (find_prefix) a caller already has, so none is computed twice."""
    if opened is None:
        with open(path, "rb") as f:
            return _read_torch_zip(path, limits, f, None, file_size(f), None)
    return _read_torch_zip(path, limits, *opened)


def _read_torch_zip(
    path: str | Path,
    limits: Limits,
    f: IO[bytes],
    zd: ZipDirectory | None,
    size: int,
    prefix: str | None,
) -> CheckpointMeta:
    p = str(path)
    tz = open_torch_zip(f, size, p, limits, zd, prefix)
    root, u = walk_data_pkl(f, tz, p, limits)
    locate = zip_locator(f, tz, p, size)
    content = analyse(root, locate, scalar_reader(f, locate))
    _check_count(path, content, limits)
    unsafe = list(u.unsafe)
    meta: dict[str, Any] = {}
    if (tz.prefix + "version") in tz.dir:
        version = tz.dir.read_small(tz.prefix + "version").strip()
        meta["archive_version"] = version.decode("ascii", "replace")[:16]
    if tz.is_torchscript:
        names = tz.dir.namelist()
        meta["torchscript_class"] = _root_class(root)
        meta["code_files"] = sum(1 for n in names if n.startswith(tz.prefix + "code/") and n.endswith(".py"))
        if (tz.prefix + "constants.pkl") in tz.dir:
            _, cu = walk_data_pkl(f, tz, p, limits, "constants.pkl")
            unsafe += [g for g in cu.unsafe if g not in unsafe]
        return _meta(path, "torchscript", size, content, unsafe, metadata=meta, framework="torchscript")
    locations = sorted({s.location for s in u.storages.values()})
    if locations:
        meta["saved_on"] = locations
    return _meta(path, "torch-zip", size, content, unsafe, metadata=meta)


def _root_class(root: Any) -> str | None:
    return root.qualname.removeprefix("__torch__.") if isinstance(root, Obj) else None


class _CappedReader(io.RawIOBase):
    """Bounds how far into a legacy file the pickle walk may read (its pickles precede the storages)."""

    def __init__(self, f: IO[bytes], cap: int, path: str) -> None:
        self.f, self.cap, self.path = f, cap, path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def _room(self) -> int:
        room = self.cap - self.f.tell()
        if room < 0:
            raise LimitError(self.path, f"legacy pickle stream exceeds the cap of {self.cap} bytes")
        return room + 1  # one byte past the cap, so reaching it is detected rather than read as truncation

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        # never ask the file for more than the cap allows: a declared 2**60-byte string must read short
        # (and fail as truncated), not try to allocate
        room = self._room()
        data = self.f.read(room if n is None or n < 0 else min(n, room))
        self._room()
        return data

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        room = self._room()
        data = self.f.readline(room if size is None or size < 0 else min(size, room))
        self._room()
        return data


def read_torch_legacy(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> CheckpointMeta:
    p = str(path)
    with open(path, "rb") as f:
        size = file_size(f)
        stream = _CappedReader(f, limits.max_pickle_bytes, p)
        unsafe: list[str] = []

        def walk(what: str, pid: Any = None) -> tuple[Any, dict[str, StorageRef]]:
            # errors name no globals here: read_file names every unsafe global of a refused file
            u = RestrictedUnpickler(stream, persistent_load=pid, limits=limits)  # type: ignore[arg-type]
            try:
                v = u.load()
            except FormatError as e:
                raise type(e)(p, f"{what}: {e.cause}") from None
            unsafe.extend(g for g in u.unsafe if g not in unsafe)
            return v, u.storages

        try:
            magic, _ = walk("magic number")
        except FormatError as e:
            why = e.cause.split(": ", 1)[-1]
            raise FormatError(p, f"not a PyTorch checkpoint: a plain pickle ({why})") from None
        if magic != LEGACY_MAGIC:
            raise FormatError(p, "not a PyTorch checkpoint: a plain pickle (no legacy magic number)")
        proto, _ = walk("protocol version")
        if proto != LEGACY_PROTOCOL:
            raise FormatError(p, f"unsupported legacy protocol version {proto!r}")
        sys_info, _ = walk("sys info")
        little = not (isinstance(sys_info, dict) and sys_info.get("little_endian") is False)
        root, refs = walk("checkpoint object", torch_persistent_load)
        keys, _ = walk("storage key list")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise FormatError(p, "storage key list is malformed")
        # Storages follow in key order, each an 8-byte element count and its bytes, so every offset follows
        # from the pickle's counts without a read per storage. The first and last size headers are read to
        # confirm: a count that disagrees anywhere shifts every later offset, the last one included.
        offsets: dict[str, int] = {}
        pos = f.tell()
        order = "<" if little else ">"
        for key in keys:
            st = refs.get(key)
            if st is None:
                raise FormatError(p, f"storage {key} is listed but no tensor uses it")
            if pos + 8 > size:
                raise FormatError(p, f"truncated: storage {key} header missing at byte {pos}")
            offsets[key] = pos + 8
            pos += 8 + st.numel * BYTE_SIZES.get(st.dtype, 1)
            if pos > size:
                raise FormatError(p, f"truncated: storage {key} runs past the end of the file ({size} bytes)")
        for key in dict.fromkeys((keys[0], keys[-1]) if keys else ()):
            f.seek(offsets[key] - 8)
            (numel,) = struct.unpack(order + "q", f.read(8))
            if numel != refs[key].numel:
                raise FormatError(
                    p, f"storage {key} declares {numel} elements, the pickle says {refs[key].numel}"
                )
        byteorder = "little" if little else "big"
        known = {key: (offsets[key], refs[key]) for key in keys}
        locate = _locator(p, known, None, byteorder, zip_header=False)
        content = analyse(root, locate, scalar_reader(f, locate))
        _check_count(path, content, limits)
        meta: dict[str, Any] = {"legacy_protocol": proto}
        locations = sorted({st.location for st in refs.values()})
        if locations:
            meta["saved_on"] = locations
        return _meta(path, "torch-legacy", os.path.getsize(path), content, unsafe, metadata=meta)

"""The isolated HDF5 child process: the only code in ckptlab that imports h5py.

libhdf5 is C with a history of heap overflows on crafted files, so the parent (`hdf5_client`) never parses
HDF5 itself: it spawns this module, caps its address space, and turns a crash, a hang or an out-of-memory
into a one-line error. This file must stay self-contained (stdlib + numpy + h5py, no ckptlab imports) so the
parent can run it by path without importing the ckptlab package in the child.

Protocol: the worker imports h5py, says `{"ready": true}` on stdout, then serves requests, one JSON object
per line on stdin, until stdin closes or no request came for the last request's `idle_exit_s` seconds. The
first request's `memory_bytes` caps the address space for the worker's whole life. A single request may
instead be given as argv[1]; the worker then answers it, without the hello, and exits.

    {"op": "meta", "items": [{"path": "/a.h5"}, {"path": "/m.keras", "member": "model.weights.h5"}],
     "max_objects": 500000, "max_attr_bytes": 67108864, "memory_bytes": 2147483648, "idle_exit_s": 120}

answers one JSON line per item, in request order, flushed as each item finishes (so a crash on item k still
leaves the answers for items before k):

    {"ok": true, "facts": {"objects": [...]}}
    {"ok": false, "error": "cause", "limit": false}

Objects are listed breadth-first from the root, as lists (half the parse time of dicts in the parent):

    ["g", path, attrs]                  a group ("" is the root) and its attributes {name: value}
    ["a", path]                         a group already listed under another path (a hard-link alias or cycle)
    ["d", path, addr, shape, dtype, kind, layout, offset, storage_size, attrs, external, virtual]
                                        a dataset: object address, shape (None: no dataspace), numpy dtype
                                        string, 'numeric'/'string'/'compound'/..., 'contiguous'/'chunked'/...,
                                        file offset of contiguous data in this file or None, bytes stored,
                                        attributes, external storage [[file, offset, size]], virtual
                                        sources [[file, dataset]]
    ["s", path, target]                 a soft link       ["e", path, file, target]   an external link
    ["u", path]                         a user-defined link                ["t", path]   a committed datatype

An answer with `"bye": true` is the worker's last: the file raised an error this code did not foresee, so
the worker exits rather than parse more files in a state nobody checked; the parent sends the rest to a
new one.

    {"op": "dataset", "path": "/a.h5", "member": null, "dataset": "/x", "memory_bytes": ...}

answers one JSON header line `{"ok": true, "dtype": "<f4", "shape": [2, 3], "nbytes": 24, "attr_dtype": null}`
followed by exactly `nbytes` raw C-order little-endian bytes.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import select
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from collections import deque
from types import SimpleNamespace
from typing import Any

# imported when the worker starts, before any request: the parent starts it ahead of need, so the slow
# import overlaps the parent's own work; and the memory cap, set later, is for what a hostile file makes
# libhdf5 allocate, while numpy and h5py reserve address space at import in amounts that vary by machine
import h5py
import numpy as np
from h5py import h5, h5a, h5d, h5f, h5g, h5l, h5o, h5p, h5t

# numpy kinds that are tensors: bool, signed, unsigned, float, complex
_NUMERIC_KINDS = "biufc"
# attribute dtypes read by the fast path below; anything else goes through h5py's AttributeManager
_PLAIN_ATTR_KINDS = "biufcS"
# HDF5 dataset layouts (H5D_layout_t)
_LAYOUTS = {0: "compact", 1: "contiguous", 2: "chunked", 3: "virtual"}
_MAX_SOURCES_LISTED = 8  # virtual-dataset mappings reported per dataset (each is a finding)
# Files up to this size are read whole into memory at open (HDF5's core driver): a small file's metadata is
# then parsed from one read instead of ~40 small preads, 5-10 % less time per file. Larger files keep the
# sec2 driver, which reads only the metadata (from ~384 KiB the whole-file read made a file twice as slow).
_CORE_MAX_BYTES = 256 * 1024
_FAPLS: dict[bool, Any] = {}  # file-access property lists, by "core driver", shared by every open
# HDF5 type (its H5Tencode bytes) -> (numpy dtype, memory type for reads, _dtype_kind): h5py's type
# conversion costs ~10 us per call and a file holds a handful of distinct types across dozens of objects
_TYPES: dict[bytes, tuple[Any, Any, str]] = {}
_MAX_TYPES_CACHED = 1024


class WorkerError(Exception):
    """A clean, reportable failure of one item (the parent shows `cause` verbatim)."""

    def __init__(self, cause: str, limit: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.limit = limit


def _limit_resources(memory_bytes: int | None) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: only the parent's timeout applies
        return

    # a crafted file that crashes libhdf5 must not leave core files behind
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))


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


def _open_h5(path: str, member: str | None, stack: list[Any]) -> Any:
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


def _open_fid(path: str, member: str | None, size: int | None, stack: list[Any]) -> Any:
    """A low-level FileID. h5py.File costs ~50 us more per file than h5f.open with a shared property list,
    which matters at a few hundred us per small file; zip members still need h5py.File's file-object driver.
    `size` is the file's size as the parent saw it (None: unknown).
    """
    if member:
        return _open_h5(path, member, stack).id
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


def _text(value: bytes | str) -> str:
    """Names and strings from the file as valid UTF-8 text: bad bytes become visible `\\xNN` escapes.

    (Lone surrogates would survive JSON but break whoever prints the name later.)
    """
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return value.decode("utf-8", "backslashreplace")


def _jsonable(value: Any) -> Any:
    """An attribute value as plain JSON: bytes decoded, numpy scalars and arrays as Python values."""
    if isinstance(value, (bytes, str)):
        return _text(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SUO":
            return [_jsonable(v) for v in value.ravel().tolist()]
        if value.dtype.kind in _NUMERIC_KINDS:
            return value.tolist()
        return f"<{value.dtype.kind} array>"
    if isinstance(value, np.generic):
        return value.item() if value.dtype.kind in _NUMERIC_KINDS else f"<{value.dtype.kind} scalar>"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"


def _text_len(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(v) for v in value if isinstance(v, str))
    return 0


def _type_info(tid: Any) -> tuple[Any, Any, str]:
    """(numpy dtype, memory type for reads, _dtype_kind) of an HDF5 type, as h5py converts it."""
    try:
        key = tid.encode()
    except (ValueError, RuntimeError, OSError):  # not encodable: convert it uncached
        key = None
    hit = _TYPES.get(key) if key is not None else None
    if hit is None:
        dt = tid.dtype
        hit = (dt, h5t.py_create(dt), _dtype_kind(dt))
        if key is not None and len(_TYPES) < _MAX_TYPES_CACHED:
            _TYPES[key] = hit
    return hit


def _attr_value(aid: Any, oid: Any, raw_name: bytes) -> Any:
    """An attribute's value as plain JSON, the same as `_jsonable(h5py.AttributeManager(obj)[name])`.

    The common types (numbers, fixed and variable-length strings, no array dtype) are read here with the
    calls h5py's high-level read makes, minus its overhead (~45 us -> ~15 us per attribute: a Keras 2 file
    has a dozen); anything else takes h5py's own path.
    """
    shape = aid.shape
    if shape is None:  # an empty dataspace: h5py returns an Empty instance
        return "<Empty>"
    dt, mtype, kind = _type_info(aid.get_type())
    if dt.subdtype is None:
        if dt.kind in _PLAIN_ATTR_KINDS:
            arr = np.zeros(shape, dtype=dt)
            aid.read(arr, mtype=mtype)  # mtype is py_create(dt), what h5py's high-level read uses
            return _jsonable(arr[()] if arr.ndim == 0 else arr)
        if kind == "string" and dt.kind == "O":  # variable-length strings, read as bytes
            arr = np.zeros(shape, dtype=dt)
            aid.read(arr, mtype=mtype)
            return _text(arr[()]) if arr.ndim == 0 else [_text(v) for v in arr.ravel().tolist()]
    return _jsonable(h5py.AttributeManager(SimpleNamespace(id=oid))[raw_name])  # it only needs `.id`


class _Walker:
    """Walks links breadth-first without following soft or external links, reading metadata only.

    Uses h5py's low-level API throughout: the high-level Group/Dataset/AttributeManager objects cost
    ~0.3 ms per object (and ~45 us per attribute), which dominates the read of a small Keras file and is
    seconds for a file of tens of thousands of datasets.
    """

    def __init__(self, max_objects: int, max_attr_bytes: int) -> None:
        self.max_objects = max_objects
        self.attr_budget = max_attr_bytes  # all attributes of the file together
        self.max_attr_bytes = max_attr_bytes
        self.count = 0
        self.objects: list[list[Any]] = []  # in the compact form the module docstring describes
        self.where = ""  # the object being read, named in errors about corrupt metadata

    def _tick(self) -> None:
        self.count += 1
        if self.count > self.max_objects:
            raise WorkerError(f"more than {self.max_objects} HDF5 objects", limit=True)

    def attrs(self, oid: Any, cpl: Any = None) -> dict[str, Any]:
        """All attributes of `oid`, in the order h5py lists them. `cpl` is the object's creation property
        list when the caller has it already."""
        out: dict[str, Any] = {}
        n_attrs = h5a.get_num_attrs(oid)
        if n_attrs == 0:
            return out
        index = h5.INDEX_NAME
        if n_attrs > 1:  # h5py lists attributes in creation order when the file tracks it
            cpl = cpl if cpl is not None else oid.get_create_plist()
            if cpl.get_attr_creation_order() & h5p.CRT_ORDER_TRACKED:
                index = h5.INDEX_CRT_ORDER
        names: list[bytes] = []

        def visit(name: bytes) -> bool | None:
            names.append(name)
            # stop early (a non-None return ends H5Aiterate) once the cap is certain to be passed
            return True if self.count + len(names) > self.max_objects else None

        h5a.iterate(oid, visit, index_type=index)
        for raw_name in names:
            self._tick()
            name = _text(raw_name)
            try:
                aid = h5a.open(oid, raw_name)
                try:
                    size = aid.get_storage_size()
                except RuntimeError:  # h5py treats a 0-byte answer (empty or vlen data) as an error
                    size = 0
                if size > self.max_attr_bytes or size > self.attr_budget:
                    out[name] = {"__omitted__": size}
                    continue
                value = _attr_value(aid, oid, raw_name)
                # variable-length strings report only their pointer size above; measure the real text
                size = max(size, _text_len(value))
                if size > self.max_attr_bytes or size > self.attr_budget:
                    out[name] = {"__omitted__": size}
                    continue
                self.attr_budget -= size
                out[name] = value
            except (OSError, TypeError, ValueError, KeyError, RuntimeError) as exc:
                out[name] = f"<unreadable: {exc}>"
        return out

    def _links(self, gid: Any) -> list[tuple[bytes, int, int]]:
        """(name, link type, object address for hard links) of every link in a group, in name order."""
        links: list[tuple[bytes, int, int]] = []

        def visit(name: bytes, info: Any) -> bool | None:
            links.append((name, info.type, info.u))
            return True if self.count + len(links) > self.max_objects else None

        gid.links.iterate(visit, info=True)
        return links

    def walk(self, fid: Any) -> None:
        root = h5g.open(fid, b"/")
        self.objects.append(["g", "", self.attrs(root)])
        seen_groups = {h5o.get_info(root).addr}
        queue: deque[tuple[str, Any]] = deque([("", root)])
        del root
        while queue:
            prefix, gid = queue.popleft()
            self.where = prefix
            for bname, link_type, addr in self._links(gid):
                self._tick()
                name = _text(bname)
                path = self.where = f"{prefix}/{name}" if prefix else name
                if link_type == h5l.TYPE_EXTERNAL:
                    file, target = (_text(v) for v in gid.links.get_val(bname))
                    self.objects.append(["e", path, file, target])
                    continue
                if link_type == h5l.TYPE_SOFT:
                    target = _text(gid.links.get_val(bname))
                    self.objects.append(["s", path, target])
                    continue
                if link_type != h5l.TYPE_HARD:  # user-defined link classes: never resolved
                    self.objects.append(["u", path])
                    continue
                # a hard link's info carries the object's address: no H5Oget_info per object
                oid = h5o.open(gid, bname)
                if isinstance(oid, h5g.GroupID):
                    if addr in seen_groups:  # a hard-link cycle or a group linked twice
                        self.objects.append(["a", path])
                    else:
                        seen_groups.add(addr)
                        self.objects.append(["g", path, self.attrs(oid)])
                        queue.append((path, oid))
                elif isinstance(oid, h5d.DatasetID):
                    self.objects.append(self.dataset(path, oid, addr))
                else:  # committed datatypes carry no data
                    self.objects.append(["t", path])
            del gid  # the id closes when its last reference goes; the file closes after the last id

    def dataset(self, path: str, did: Any, addr: int) -> list[Any]:
        dt, _, kind = _type_info(did.get_type())
        shape = did.shape
        # HDF5 gives an offset only for contiguous data stored in this file (not compact, chunked, virtual,
        # external or unallocated), so for the common dataset the creation property list is not needed
        offset = did.get_offset()
        dcpl = None if offset is not None else did.get_create_plist()
        layout = "contiguous" if dcpl is None else _LAYOUTS.get(dcpl.get_layout(), "unknown")
        external = []
        virtual = []
        storage_size = 0
        if dcpl is not None:
            for i in range(dcpl.get_external_count()):
                name, ext_offset, ext_size = dcpl.get_external(i)
                external.append([_jsonable(name), int(ext_offset), int(ext_size)])
        attrs = self.attrs(did, dcpl)
        if layout == "virtual":
            # the mapping table is metadata: listing it opens no source file
            for i in range(min(dcpl.get_virtual_count(), _MAX_SOURCES_LISTED)):
                virtual.append([_text(dcpl.get_virtual_filename(i)), _text(dcpl.get_virtual_dsetname(i))])
        else:
            storage_size = did.get_storage_size()
            if not storage_size:
                offset = None
        dims = list(shape) if shape is not None else None
        return ["d", path, addr, dims, dt.str, kind, layout, offset, storage_size, attrs, external, virtual]


def _dtype_kind(dt: Any) -> str:
    """'numeric' for tensors, else a word for the entry summary (string, compound, enum, ...)."""
    if dt.metadata is None and dt.subdtype is None and dt.kind in _NUMERIC_KINDS:
        return "numeric"  # h5py marks strings, enums, vlens and references in the dtype's metadata
    if h5py.check_string_dtype(dt) is not None:
        return "string"
    if dt.subdtype is not None:
        return "array"
    if dt.kind in _NUMERIC_KINDS:
        return "enum" if h5py.check_enum_dtype(dt) and dt.kind != "b" else "numeric"
    if h5py.check_vlen_dtype(dt) is not None:
        return "vlen"
    if h5py.check_ref_dtype(dt) is not None:
        return "reference"
    return {"V": "compound" if dt.names else "opaque", "O": "object"}.get(dt.kind, dt.kind)


def _meta(item: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
    stack: list[Any] = []
    try:
        fid = _open_fid(item["path"], item.get("member"), item.get("size"), stack)
        walker = _Walker(int(req["max_objects"]), int(req["max_attr_bytes"]))
        try:
            walker.walk(fid)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)  # KeyError quotes
            raise WorkerError(f"corrupt HDF5 metadata at /{walker.where} ({detail})") from None
        finally:
            del fid
        return {"ok": True, "facts": {"objects": walker.objects}}
    finally:
        for obj in reversed(stack):
            obj.close()


def _resolve_dataset(f: Any, dataset: str) -> Any:
    """The dataset at `dataset`, reached through hard links only (no soft or external link is followed)."""
    node = f
    parts = [p for p in dataset.split("/") if p]
    for i, part in enumerate(parts):
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if link is None:
            raise WorkerError(f"no dataset /{'/'.join(parts[: i + 1])}")
        if not isinstance(link, h5py.HardLink):
            raise WorkerError(f"/{'/'.join(parts[: i + 1])} is a {type(link).__name__}; not followed")
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise WorkerError(f"/{'/'.join(parts)} is not a dataset")
    return node


def _read_dataset(req: dict[str, Any], out: Any) -> None:
    stack: list[Any] = []
    try:
        f = _open_h5(req["path"], req.get("member"), stack)
        d = _resolve_dataset(f, req["dataset"])
        dcpl = d.id.get_create_plist()
        if d.external:
            raise WorkerError("dataset uses external raw storage; refusing to read other files")
        if dcpl.get_layout() == 3:
            raise WorkerError("virtual dataset; refusing to read its source files")
        if d.shape is None:
            raise WorkerError("dataset has no data (null dataspace)")
        if _dtype_kind(d.dtype) != "numeric" and not (d.dtype.kind == "V" and not d.dtype.names):
            raise WorkerError(f"dataset is not numeric ({_dtype_kind(d.dtype)})")
        try:
            # np.asarray, not ascontiguousarray: the latter turns a scalar dataset into shape (1,)
            arr = np.asarray(d[()])
            if not arr.flags.c_contiguous:
                arr = arr.copy(order="C")
        except (OSError, ValueError, RuntimeError) as exc:
            raise WorkerError(f"cannot read dataset ({exc})") from None
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        attr_dtype = d.attrs.get("dtype") if "dtype" in d.attrs else None
        header = {
            "ok": True,
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "nbytes": arr.nbytes,
            "attr_dtype": _jsonable(attr_dtype),
        }
        out.write(json.dumps(header).encode() + b"\n")
        out.write(memoryview(arr.reshape(-1).view(np.uint8)))
    finally:
        for obj in reversed(stack):
            obj.close()


def _answer(out: Any, doc: dict[str, Any]) -> None:
    try:
        line = json.dumps(doc)
    except (TypeError, ValueError) as exc:
        # a value no conversion above foresaw: fail this item, not the batch
        line = json.dumps({"ok": False, "error": f"cannot encode HDF5 metadata ({exc})"})
    out.write(line.encode() + b"\n")
    out.flush()


def _failure(exc: Exception) -> dict[str, Any]:
    """The answer for an item that raised. libhdf5's own checks (a corrupt superblock, heap or B-tree) fail
    cleanly and leave the library usable, so the worker goes on; anything this code did not foresee makes
    it answer `bye` and exit, rather than parse more files in a state nobody checked."""
    if isinstance(exc, WorkerError):
        return {"ok": False, "error": exc.cause, "limit": exc.limit}
    # still one clean answer, not a traceback
    return {"ok": False, "error": f"cannot read HDF5 ({type(exc).__name__}: {exc})", "bye": True}


def _serve(req: dict[str, Any], out: Any) -> bool:
    """Answer one request; False when the worker must exit after it."""
    if req.get("op") == "dataset":
        try:
            _read_dataset(req, out)
        except MemoryError:
            raise
        except Exception as exc:
            doc = _failure(exc)
            _answer(out, doc)
            return "bye" not in doc
        out.flush()
        return True
    for item in req.get("items", []):
        try:
            doc = _meta(item, req)
        except MemoryError:
            raise
        except Exception as exc:  # one odd file must not end the whole batch
            doc = _failure(exc)
        _answer(out, doc)
        if "bye" in doc:
            return False
    return True


class _Lines:
    """Request lines from a file descriptor, with an idle timeout (no buffering behind select's back)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, idle_s: float | None) -> bytes | None:
        """The next line, or None at end of input or after `idle_s` seconds without one."""
        while b"\n" not in self.buf:
            if idle_s is not None and not select.select([self.fd], [], [], idle_s)[0]:
                return None
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                line, self.buf = self.buf, b""
                return line or None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # answers go to a private copy of stdout; fd 1 itself now points at stderr, so anything libhdf5 or a
    # filter plugin prints cannot corrupt the protocol
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    if not argv:
        _answer(out, {"ready": True})  # the hello: imports done, requests are answered at once from now on
    lines = _Lines(0)
    limited = False
    idle_s: float | None = None
    while True:
        raw = argv[0].encode() if argv else lines.next(idle_s)
        if raw is None:
            return 0
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            _answer(out, {"ok": False, "error": f"bad request ({exc})", "bye": True})
            return 2
        if not limited:
            _limit_resources(req.get("memory_bytes"))
            limited = True
        idle_s = req.get("idle_exit_s")
        try:
            go_on = _serve(req, out)
        except MemoryError:
            # state after a failed allocation is suspect: answer, then exit; the parent restarts for the rest
            _answer(out, {"ok": False, "error": "oom", "bye": True})
            return 3
        if argv or not go_on:
            return 0


if __name__ == "__main__":
    sys.exit(main())

"""The isolated HDF5 child process: the only code in ckptlab that imports h5py.

libhdf5 is C with a history of heap overflows on crafted files, so the parent (`hdf5_reader`) never parses
HDF5 itself: it spawns this module, caps its address space, and turns a crash, a hang or an out-of-memory
into a one-line error. This file must stay self-contained (stdlib + numpy + h5py, no ckptlab imports) so the
parent can run it by path without importing the ckptlab package in the child.

Protocol: one JSON request on stdin (or as argv[1]).

    {"op": "meta", "items": [{"path": "/a.h5"}, {"path": "/m.keras", "member": "model.weights.h5"}],
     "max_objects": 500000, "max_attr_bytes": 67108864, "memory_bytes": 2147483648}

answers one JSON line per item, in request order, flushed as each item finishes (so a crash on item k still
leaves the answers for items before k):

    {"ok": true, "facts": {"objects": [...]}}
    {"ok": false, "error": "cause", "limit": false}

    {"op": "dataset", "path": "/a.h5", "member": null, "dataset": "/x", "memory_bytes": ...}

answers one JSON header line `{"ok": true, "dtype": "<f4", "shape": [2, 3], "nbytes": 24, "attr_dtype": null}`
followed by exactly `nbytes` raw C-order little-endian bytes.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from collections import deque
from types import SimpleNamespace
from typing import Any

# numpy kinds that are tensors: bool, signed, unsigned, float, complex
_NUMERIC_KINDS = "biufc"
# HDF5 dataset layouts (H5D_layout_t)
_LAYOUTS = {0: "compact", 1: "contiguous", 2: "chunked", 3: "virtual"}
_MAX_SOURCES_LISTED = 8  # virtual-dataset mappings reported per dataset (each is a finding)


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
    import h5py

    target: Any = _open_member(path, member, stack) if member else path
    try:
        f = h5py.File(target, "r")
    except OSError as exc:
        raise WorkerError(_open_error(str(exc))) from None
    stack.append(f)
    return f


def _open_error(msg: str) -> str:
    """h5py's 'Unable to synchronously open file (truncated file: eof = ...)' -> a short cause."""
    inner = msg[msg.find("(") + 1 : msg.rfind(")")] if "(" in msg else msg
    if "signature not found" in inner:
        return "not an HDF5 file (no HDF5 signature)"
    if inner.startswith("truncated file"):
        fields = dict(
            part.strip().split(" = ", 1) for part in inner.split(":", 1)[-1].split(",") if " = " in part
        )
        if "eof" in fields and "stored_eof" in fields:
            return f"truncated HDF5 file ({fields['eof']} of {fields['stored_eof']} bytes)"
        return "truncated HDF5 file"
    return f"cannot open HDF5 file ({inner})"


def _text(value: bytes | str) -> str:
    """Names and strings from the file as valid UTF-8 text: bad bytes become visible `\\xNN` escapes.

    (Lone surrogates would survive JSON but break whoever prints the name later.)
    """
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return value.decode("utf-8", "backslashreplace")


def _jsonable(value: Any) -> Any:
    """An attribute value as plain JSON: bytes decoded, numpy scalars and arrays as Python values."""
    import numpy as np

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


class _Walker:
    """Walks links breadth-first without following soft or external links, reading metadata only.

    Uses h5py's low-level API: the high-level Group/Dataset objects cost ~0.3 ms each, which is seconds
    for a file of tens of thousands of datasets.
    """

    def __init__(self, max_objects: int, max_attr_bytes: int) -> None:
        self.max_objects = max_objects
        self.attr_budget = max_attr_bytes  # all attributes of the file together
        self.max_attr_bytes = max_attr_bytes
        self.count = 0
        self.objects: list[dict[str, Any]] = []
        self.where = ""  # the object being read, named in errors about corrupt metadata

    def _tick(self) -> None:
        self.count += 1
        if self.count > self.max_objects:
            raise WorkerError(f"more than {self.max_objects} HDF5 objects", limit=True)

    def attrs(self, oid: Any) -> dict[str, Any]:
        import h5py

        out: dict[str, Any] = {}
        if h5py.h5a.get_num_attrs(oid) == 0:
            return out
        manager = h5py.AttributeManager(SimpleNamespace(id=oid))  # it only needs `.id`
        for raw_name in manager:
            self._tick()
            name = _text(raw_name)  # h5py yields bytes for names that are not UTF-8
            try:
                aid = manager.get_id(raw_name)
                try:
                    size = aid.get_storage_size()
                except RuntimeError:  # h5py treats a 0-byte answer (empty or vlen data) as an error
                    size = 0
                if size > self.max_attr_bytes or size > self.attr_budget:
                    out[name] = {"__omitted__": size}
                    continue
                value = _jsonable(manager[raw_name])
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

    def _names(self, gid: Any) -> list[bytes]:
        names: list[bytes] = []

        def visit(name: bytes) -> bool | None:
            names.append(name)
            # stop early (a non-None return ends H5Literate) once the cap is certain to be passed
            return True if self.count + len(names) > self.max_objects else None

        gid.links.iterate(visit)
        return names

    def walk(self, f: Any) -> None:
        from h5py import h5g, h5l, h5o

        root = h5g.open(f.id, b"/")
        self.objects.append({"path": "", "type": "group", "attrs": self.attrs(root)})
        seen_groups = {h5o.get_info(root).addr}
        queue: deque[tuple[str, Any]] = deque([("", root)])
        while queue:
            prefix, gid = queue.popleft()
            self.where = prefix
            for bname in self._names(gid):
                self._tick()
                name = _text(bname)
                path = self.where = f"{prefix}/{name}" if prefix else name
                link_type = gid.links.get_info(bname).type
                if link_type == h5l.TYPE_EXTERNAL:
                    file, target = (_text(v) for v in gid.links.get_val(bname))
                    self.objects.append(
                        {"path": path, "type": "external_link", "file": file, "target": target}
                    )
                    continue
                if link_type == h5l.TYPE_SOFT:
                    target = _text(gid.links.get_val(bname))
                    self.objects.append({"path": path, "type": "soft_link", "target": target})
                    continue
                if link_type != h5l.TYPE_HARD:  # user-defined link classes: never resolved
                    self.objects.append({"path": path, "type": "user_link"})
                    continue
                oid = h5o.open(gid, bname)
                info = h5o.get_info(oid)
                if info.type == h5o.TYPE_GROUP:
                    entry: dict[str, Any] = {"path": path, "type": "group"}
                    if info.addr in seen_groups:  # a hard-link cycle or a group linked twice
                        entry["alias"] = True
                    else:
                        seen_groups.add(info.addr)
                        entry["attrs"] = self.attrs(oid)
                        queue.append((path, oid))
                    self.objects.append(entry)
                elif info.type == h5o.TYPE_DATASET:
                    self.objects.append(self.dataset(path, oid, info.addr))
                else:  # committed datatypes carry no data
                    self.objects.append({"path": path, "type": "datatype"})

    def dataset(self, path: str, did: Any, addr: int) -> dict[str, Any]:
        dcpl = did.get_create_plist()
        layout = _LAYOUTS.get(dcpl.get_layout(), "unknown")
        dt = did.dtype
        external = [
            [_jsonable(n), int(o), int(s)]
            for n, o, s in (dcpl.get_external(i) for i in range(dcpl.get_external_count()))
        ]
        info: dict[str, Any] = {
            "path": path,
            "type": "dataset",
            "addr": addr,
            "shape": list(did.shape) if did.shape is not None else None,
            "dtype": dt.str,
            "kind": _dtype_kind(dt),
            "layout": layout,
            "external": external,
            "virtual": [],
            "offset": None,
            "storage_size": 0,
            "attrs": self.attrs(did),
        }
        if layout == "virtual":
            # the mapping table is metadata: listing it opens no source file
            for i in range(min(dcpl.get_virtual_count(), _MAX_SOURCES_LISTED)):
                info["virtual"].append(
                    [_text(dcpl.get_virtual_filename(i)), _text(dcpl.get_virtual_dsetname(i))]
                )
        else:
            info["storage_size"] = did.get_storage_size()
            if layout == "contiguous" and not external and info["storage_size"]:
                info["offset"] = did.get_offset()
        return info


def _dtype_kind(dt: Any) -> str:
    """'numeric' for tensors, else a word for the entry summary (string, compound, enum, ...)."""
    import h5py

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
        f = _open_h5(item["path"], item.get("member"), stack)
        walker = _Walker(int(req["max_objects"]), int(req["max_attr_bytes"]))
        try:
            walker.walk(f)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)  # KeyError quotes
            raise WorkerError(f"corrupt HDF5 metadata at /{walker.where} ({detail})") from None
        return {"ok": True, "facts": {"objects": walker.objects}}
    finally:
        for obj in reversed(stack):
            obj.close()


def _resolve_dataset(f: Any, dataset: str) -> Any:
    """The dataset at `dataset`, reached through hard links only (no soft or external link is followed)."""
    import h5py

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
    import numpy as np

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # read the whole request before the (slow) h5py import so the parent's write never blocks
    raw = argv[0] if argv else sys.stdin.read()
    # answers go to a private copy of stdout; fd 1 itself now points at stderr, so anything libhdf5 or a
    # filter plugin prints cannot corrupt the protocol
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        req = json.loads(raw)
    except ValueError as exc:
        _answer(out, {"ok": False, "error": f"bad request ({exc})"})
        return 2
    # import first: the cap is for what a hostile file makes libhdf5 allocate, and numpy/h5py reserve
    # address space at import in amounts that vary by machine (BLAS thread buffers)
    import h5py  # noqa: F401

    _limit_resources(req.get("memory_bytes"))
    try:
        if req.get("op") == "dataset":
            try:
                _read_dataset(req, out)
            except WorkerError as exc:
                _answer(out, {"ok": False, "error": exc.cause, "limit": exc.limit})
            except MemoryError:
                raise
            except Exception as exc:  # a corrupt file: still one clean answer, not a traceback
                _answer(out, {"ok": False, "error": f"cannot read HDF5 ({type(exc).__name__}: {exc})"})
            out.flush()
            return 0
        for item in req.get("items", []):
            try:
                doc = _meta(item, req)
            except WorkerError as exc:
                doc = {"ok": False, "error": exc.cause, "limit": exc.limit}
            except MemoryError:
                raise
            except Exception as exc:  # one odd file must not end the whole batch
                doc = {"ok": False, "error": f"cannot read HDF5 ({type(exc).__name__}: {exc})"}
            _answer(out, doc)
    except MemoryError:
        # state after a failed allocation is suspect: answer, then exit; the parent restarts for the rest
        _answer(out, {"ok": False, "error": "oom"})
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

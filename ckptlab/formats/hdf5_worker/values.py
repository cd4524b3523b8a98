"""HDF5 names, types and attribute values as plain JSON, the way h5py's high-level API would read them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np
from h5py import h5t

# numpy kinds that are tensors: bool, signed, unsigned, float, complex
_NUMERIC_KINDS = "biufc"
# attribute dtypes read by the fast path below; anything else goes through h5py's AttributeManager
_PLAIN_ATTR_KINDS = "biufcS"
# HDF5 type (its H5Tencode bytes) -> (numpy dtype, memory type for reads, dtype_kind): h5py's type
# conversion costs ~10 us per call and a file holds a handful of distinct types across dozens of objects
_TYPES: dict[bytes, tuple[Any, Any, str]] = {}
_MAX_TYPES_CACHED = 1024


def text(value: bytes | str) -> str:
    """Names and strings from the file as valid UTF-8 text: bad bytes become visible `\\xNN` escapes.

    (Lone surrogates would survive JSON but break whoever prints the name later.)
    """
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return value.decode("utf-8", "backslashreplace")


def jsonable(value: Any) -> Any:
    """An attribute value as plain JSON: bytes decoded, numpy scalars and arrays as Python values."""
    if isinstance(value, (bytes, str)):
        return text(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SUO":
            return [jsonable(v) for v in value.ravel().tolist()]
        if value.dtype.kind in _NUMERIC_KINDS:
            return value.tolist()
        return f"<{value.dtype.kind} array>"
    if isinstance(value, np.generic):
        return value.item() if value.dtype.kind in _NUMERIC_KINDS else f"<{value.dtype.kind} scalar>"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"


def text_len(value: Any) -> int:
    """Characters of text in a decoded attribute value (a string, or the strings of a list)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(v) for v in value if isinstance(v, str))
    return 0


def type_info(tid: Any) -> tuple[Any, Any, str]:
    """(numpy dtype, memory type for reads, dtype_kind) of an HDF5 type, as h5py converts it."""
    try:
        key = tid.encode()
    except (ValueError, RuntimeError, OSError):  # not encodable: convert it uncached
        key = None
    hit = _TYPES.get(key) if key is not None else None
    if hit is None:
        dt = tid.dtype
        hit = (dt, h5t.py_create(dt), dtype_kind(dt))
        if key is not None and len(_TYPES) < _MAX_TYPES_CACHED:
            _TYPES[key] = hit
    return hit


def attr_value(aid: Any, oid: Any, raw_name: bytes) -> Any:
    """An attribute's value as plain JSON, the same as `jsonable(h5py.AttributeManager(obj)[name])`.

    The common types (numbers, fixed and variable-length strings, no array dtype) are read here with the
    calls h5py's high-level read makes, minus its overhead (~45 us -> ~15 us per attribute: a Keras 2 file
    has a dozen); anything else takes h5py's own path.
    """
    shape = aid.shape
    if shape is None:  # an empty dataspace: h5py returns an Empty instance
        return "<Empty>"
    dt, mtype, kind = type_info(aid.get_type())
    if dt.subdtype is None:
        if dt.kind in _PLAIN_ATTR_KINDS:
            arr = np.zeros(shape, dtype=dt)
            aid.read(arr, mtype=mtype)  # mtype is py_create(dt), what h5py's high-level read uses
            return jsonable(arr[()] if arr.ndim == 0 else arr)
        if kind == "string" and dt.kind == "O":  # variable-length strings, read as bytes
            arr = np.zeros(shape, dtype=dt)
            aid.read(arr, mtype=mtype)
            return text(arr[()]) if arr.ndim == 0 else [text(v) for v in arr.ravel().tolist()]
    return jsonable(h5py.AttributeManager(SimpleNamespace(id=oid))[raw_name])  # it only needs `.id`


def dtype_kind(dt: Any) -> str:
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

"""The `dataset` op: one dataset's values as raw C-order little-endian bytes, behind a JSON header."""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

from .errors import WorkerError
from .files import open_h5
from .values import dtype_kind, jsonable


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


def read_dataset(req: dict[str, Any], out: Any) -> None:
    """Answer a `dataset` request on `out`: the JSON header line, then the raw bytes."""
    stack: list[Any] = []
    try:
        f = open_h5(req["path"], req.get("member"), stack)
        d = _resolve_dataset(f, req["dataset"])
        dcpl = d.id.get_create_plist()
        if d.external:
            raise WorkerError("dataset uses external raw storage; refusing to read other files")
        if dcpl.get_layout() == 3:
            raise WorkerError("virtual dataset; refusing to read its source files")
        if d.shape is None:
            raise WorkerError("dataset has no data (null dataspace)")
        if dtype_kind(d.dtype) != "numeric" and not (d.dtype.kind == "V" and not d.dtype.names):
            raise WorkerError(f"dataset is not numeric ({dtype_kind(d.dtype)})")
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
            "attr_dtype": jsonable(attr_dtype),
        }
        out.write(json.dumps(header).encode() + b"\n")
        out.write(memoryview(arr.reshape(-1).view(np.uint8)))
    finally:
        for obj in reversed(stack):
            obj.close()

"""torch.distributed.checkpoint directories: `.metadata` (a pickled Metadata dataclass) + `*.distcp` files.

torch's own FileSystemReader reads `.metadata` with a plain `pickle.load`; here the restricted unpickler walks
it instead. Each tensor is one or more chunks, each a small `torch.save` archive at (file, offset, length).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ..dtypes import nbytes_for
from ..errors import FormatError, IncompleteError, LimitError
from ..model import CheckpointMeta, DcpChunk, DcpLocation, Entry, Safety, TensorMeta
from .content import EPOCH_KEYS, MODEL_KEYS, OPTIMIZER_KEYS, SCHEDULER_KEYS, STEP_KEYS
from .limits import DEFAULT_LIMITS, Limits
from .multifile import DCP_METADATA
from .pickle_vm import DtypeRef, Obj, RestrictedUnpickler
from .zipsafe import Region


def _attrs(o: Any) -> dict[Any, Any]:
    return o.attrs() if isinstance(o, Obj) else {}


def _size(v: Any) -> tuple[int, ...]:
    if isinstance(v, Obj) and v.qualname == "torch.Size":
        v = v.args[0] if v.args else ()
    if isinstance(v, (list, tuple)) and all(isinstance(x, int) and x >= 0 for x in v):
        return tuple(v)
    raise FormatError(None, f"bad size in .metadata: {v!r:.60}")


def _dtype(props: Any) -> str:
    state = props.state if isinstance(props, Obj) else None
    cand = state[0] if isinstance(state, tuple) and state else _attrs(props).get("dtype")
    if isinstance(cand, DtypeRef):
        return cand.name
    raise FormatError(None, "tensor properties without a dtype in .metadata")


def read_dcp(path: Path, limits: Limits = DEFAULT_LIMITS) -> CheckpointMeta:
    p = str(path)
    mpath = path / DCP_METADATA
    size = os.path.getsize(mpath)
    if size > limits.max_pickle_bytes:
        raise LimitError(p, f".metadata is {size} bytes, over the cap of {limits.max_pickle_bytes}")
    u = RestrictedUnpickler(
        io.BytesIO(mpath.read_bytes()), persistent_load=None, context="dcp", limits=limits
    )
    try:
        root = u.load()
    except FormatError as e:
        raise FormatError(p, f".metadata: {e.cause}") from None
    if not (isinstance(root, Obj) and root.cls.name == "Metadata"):
        raise FormatError(p, ".metadata is not a torch.distributed.checkpoint Metadata record")
    attrs = root.attrs()
    sdm = attrs.get("state_dict_metadata")
    storage = attrs.get("storage_data")
    if not isinstance(sdm, dict):
        raise FormatError(p, ".metadata has no state_dict_metadata")
    if len(sdm) > limits.max_tensors:
        raise LimitError(p, f"{len(sdm)} entries exceed the cap of {limits.max_tensors}")
    # (fqn, chunk offsets) -> (relative_path, offset, length)
    where: dict[tuple[str, tuple[int, ...] | None], tuple[str, int, int]] = {}
    for idx, info in (storage or {}).items():
        ia, sa = _attrs(idx), _attrs(info)
        rel, off, length = sa.get("relative_path"), sa.get("offset"), sa.get("length")
        if not (isinstance(rel, str) and isinstance(off, int) and isinstance(length, int)):
            raise FormatError(p, ".metadata storage entry is malformed")
        pp = PurePosixPath(rel)
        if pp.is_absolute() or ".." in pp.parts:
            raise FormatError(p, f"storage path {rel!r} escapes the checkpoint directory")
        offs = ia.get("offset")
        where[(str(ia.get("fqn")), _size(offs) if offs is not None else None)] = (rel, off, length)
    files_needed = sorted({w[0] for w in where.values()})
    missing = [f for f in files_needed if not (path / f).is_file()]
    if missing:
        raise IncompleteError(p, f"data files listed in .metadata are missing: {', '.join(missing[:3])}")
    tensors: list[TensorMeta] = []
    byte_items: list[str] = []
    for fqn, md in sdm.items():
        if not isinstance(md, Obj):
            raise FormatError(p, f"entry {fqn!r} is malformed")
        if md.cls.name == "BytesStorageMetadata":
            byte_items.append(str(fqn))
            continue
        a = md.attrs()
        shape, dtype = _size(a.get("size")), _dtype(a.get("properties"))
        chunks = []
        for ch in a.get("chunks") or []:
            ca = _attrs(ch)
            offs, sizes = _size(ca.get("offsets")), _size(ca.get("sizes"))
            loc = where.get((str(fqn), offs))
            if loc is None:
                raise IncompleteError(p, f"tensor {fqn!r}: chunk at {list(offs)} has no storage entry")
            rel, off, length = loc
            chunks.append(DcpChunk(str(path / rel), off, length, offs, sizes))
        if sum(math.prod(c.chunk_sizes) for c in chunks) != math.prod(shape):
            raise IncompleteError(p, f"tensor {fqn!r}: chunks do not cover its shape {list(shape)}")
        tensors.append(
            TensorMeta(
                str(fqn), shape, dtype, nbytes_for(dtype, math.prod(shape)), loc=DcpLocation(tuple(chunks))
            )
        )
    model, other = _split_model(tensors)
    step = epoch = None
    unsafe = list(u.unsafe)
    findings = [f".metadata references {g} (not imported or called)" for g in unsafe]
    unverified: list[str] = []
    for name in byte_items:
        loc = where.get((name, None))
        try:
            if loc is None:
                raise FormatError(p, "no storage entry")
            val, item_unsafe = _walk_item(path, loc, limits)
        except (FormatError, OSError) as e:
            unverified.append(name)
            findings.append(f"item {name!r} could not be checked ({getattr(e, 'cause', e)})")
            continue
        unsafe.extend(g for g in item_unsafe if g not in unsafe)
        findings.extend(f"item {name!r} references {g} (not imported or called)" for g in item_unsafe)
        leaf = name.lower()
        if isinstance(val, int) and not isinstance(val, bool) and "." not in name:
            if leaf in STEP_KEYS and step is None:
                step = val
            elif leaf in EPOCH_KEYS and epoch is None:
                epoch = val
    tops = {n.split(".", 1)[0] for n in [t.name for t in tensors] + byte_items}
    files = (str(mpath), *(str(path / f) for f in files_needed))
    return CheckpointMeta(
        path=p,
        format="torch-dcp",
        size_bytes=sum(os.path.getsize(f) for f in files),
        tensors=tuple(model),
        step=step,
        epoch=epoch,
        has_optimizer=bool(tops & {*OPTIMIZER_KEYS, "optim"}),
        has_scheduler=bool(tops & set(SCHEDULER_KEYS)),
        has_rng_state=any("rng" in t.lower() for t in tops),
        metadata={"dcp_version": attrs.get("version"), "data_files": len(files_needed)},
        entries=tuple(Entry(n, "bytes", "pickled non-tensor item") for n in byte_items),
        safety=Safety(tuple(unsafe), tuple(findings), tuple(unverified)),
        layout="dcp",
        framework="torch-dcp",
        files=files,
        other_tensors=tuple(other),
    )


def _split_model(tensors: list[TensorMeta]) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """Model weights are the tensors under a model-ish top key, named relative to it."""
    tops = {t.name.split(".", 1)[0] for t in tensors}
    key = next((k for k in MODEL_KEYS if k in tops), None)
    if key is None:
        opt = {*OPTIMIZER_KEYS, *SCHEDULER_KEYS, "optim"}
        return [t for t in tensors if t.name.split(".", 1)[0] not in opt], [
            t for t in tensors if t.name.split(".", 1)[0] in opt
        ]
    model, other = [], []
    for t in tensors:
        if t.name.startswith(key + "."):
            model.append(TensorMeta(t.name[len(key) + 1 :], t.shape, t.dtype, t.nbytes, t.storage, t.loc))
        else:
            other.append(t)
    return model, other


def _walk_item(path: Path, loc: tuple[str, int, int], limits: Limits) -> tuple[Any, list[str]]:
    """A non-tensor item is a torch.save archive inside a .distcp file, which torch's DefaultLoadPlanner
    loads with weights_only=False: walk it restrictedly for its value and its unsafe globals."""
    from .torch_reader import open_torch_zip, walk_data_pkl

    rel, off, length = loc
    with open(path / rel, "rb") as f:
        region = Region(f, off, length)
        tz = open_torch_zip(region, length, str(path / rel), limits)  # type: ignore[arg-type]
        value, u = walk_data_pkl(region, tz, str(path / rel), limits)  # type: ignore[arg-type]
    return value, list(u.unsafe)

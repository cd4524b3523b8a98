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
from ..model import CheckpointMeta, DcpChunk, DcpLocation, Entry, Safety, TensorMeta, human_bytes, plural
from .content import (
    EPOCH_KEYS,
    METRIC_NAME,
    MODEL_KEYS,
    NOT_METRICS,
    OPTIMIZER_KEYS,
    SCHEDULER_KEYS,
    STEP_KEYS,
)
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
    if not isinstance(sdm, dict):
        raise FormatError(p, ".metadata has no state_dict_metadata")
    if len(sdm) > limits.max_tensors:
        raise LimitError(p, f"{len(sdm)} entries exceed the cap of {limits.max_tensors}")
    where = _storage_map(p, attrs.get("storage_data"))
    files_needed = sorted({w[0] for w in where.values()})
    missing = [f for f in files_needed if not (path / f).is_file()]
    if missing:
        raise IncompleteError(p, f"data files listed in .metadata are missing: {', '.join(missing[:3])}")
    tensors, byte_items = _classify(path, sdm, where)
    names = [t.name for t in tensors] + byte_items
    optimizer_roots = _optimizer_roots(names, byte_items)
    parents = _parents(optimizer_roots)
    model_key = _model_root(tensors, parents)
    model, other = _split_model(tensors, model_key, optimizer_roots)
    values, safety = _check_items(path, byte_items, where, u.unsafe, limits)
    step, epoch, metrics = _scalars(values, optimizer_roots)
    containers = _containers(names, parents)
    files = (str(mpath), *(str(path / f) for f in files_needed))
    return CheckpointMeta(
        path=p,
        format="torch-dcp",
        size_bytes=sum(os.path.getsize(f) for f in files),
        tensors=tuple(model),
        step=step,
        epoch=epoch,
        metrics=metrics,
        has_optimizer=bool(optimizer_roots),
        has_scheduler=bool(containers & set(SCHEDULER_KEYS)),
        has_rng_state=any("rng" in c.lower() for c in containers),
        metadata={
            "dcp_version": attrs.get("version"),
            "data_files": len(files_needed),
            **({"model_key": model_key} if model_key else {}),  # as torch files say where the weights sat
        },
        entries=_entries(byte_items, values, other, optimizer_roots),
        safety=safety,
        layout="dcp",
        framework="torch-dcp",
        files=files,
        other_tensors=tuple(other),
    )


_Where = dict[tuple[str, tuple[int, ...] | None], tuple[str, int, int]]


def _storage_map(p: str, storage: Any) -> _Where:
    """(fqn, chunk offsets; None for a non-tensor item) -> (relative path, offset, length) in a data file."""
    where: _Where = {}
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
    return where


def _classify(path: Path, sdm: dict[Any, Any], where: _Where) -> tuple[list[TensorMeta], list[str]]:
    """The tensors, each with its chunks' places in the data files, and the names of the non-tensor items."""
    p = str(path)
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
    return tensors, byte_items


def _check_items(
    path: Path, byte_items: list[str], where: _Where, metadata_unsafe: list[str], limits: Limits
) -> tuple[dict[str, Any], Safety]:
    """Each non-tensor item's value, and the verdict over `.metadata` and every item (one that cannot be
    walked is unverified: torch would unpickle it unchecked)."""
    p = str(path)
    unsafe = list(metadata_unsafe)
    findings = [f".metadata references {g} (not imported or called)" for g in unsafe]
    unverified: list[str] = []
    values: dict[str, Any] = {}
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
        values[name] = val
        unsafe.extend(g for g in item_unsafe if g not in unsafe)
        findings.extend(f"item {name!r} references {g} (not imported or called)" for g in item_unsafe)
    return values, Safety(tuple(unsafe), tuple(findings), tuple(unverified))


# Containers whose numbers are settings, not results: a config's `dropout` or `loss_scale`, a scheduler's
# `gamma` or ReduceLROnPlateau's `best` (compared lower-case: DCP keeps the user's spelling)
_CONFIG_KEYS = frozenset(
    {"config", "cfg", "conf", "args", "hparams", "hyper_parameters", "hyperparameters", "training_args"}
)
_NOT_METRIC_CONTAINERS = _CONFIG_KEYS | set(SCHEDULER_KEYS)


def _scalars(
    values: dict[str, Any], optimizer_roots: set[str]
) -> tuple[int | None, int | float | None, dict[str, float]]:
    """(step, epoch, metrics) from the items' values. A top-level item is read as a torch file's top key
    is (`content._analyse`: a float, or an int named like a metric). A nested item counts only when its
    own name is a metric's, keyed by its full name (`train.loss` and `val.loss` are two metrics), and
    never inside optimizer, scheduler or config state (an lr, a gamma or a dropout is a setting)."""
    step: int | None = None
    epoch: int | float | None = None
    metrics: dict[str, float] = {}
    for name, val in values.items():
        if type(val) not in (int, float) or _under(name, optimizer_roots):
            continue
        *containers, leaf = name.split(".")
        lk = leaf.lower()
        if lk in NOT_METRICS:
            continue
        if containers:
            if METRIC_NAME.search(leaf) and not any(c.lower() in _NOT_METRIC_CONTAINERS for c in containers):
                metrics[name] = float(val)
        elif lk in STEP_KEYS:
            step = int(val) if step is None and math.isfinite(val) else step
        elif lk in EPOCH_KEYS:
            if epoch is None and math.isfinite(val):
                epoch = int(val) if float(val).is_integer() else float(val)
        elif type(val) is float or METRIC_NAME.search(leaf):
            metrics[name] = float(val)
    return step, epoch, metrics


def _optimizer_roots(names: list[str], byte_items: list[str]) -> set[str]:
    """The keys under which optimizer state sits: a top key with an optimizer's name, or, at any depth, a
    key R with non-tensor items under `R.param_groups.` (an optimizer's state_dict flattens to `R.state.*`
    + `R.param_groups.*`, the DCP tutorial nests it as `app.optim`). Its param groups are always pickled
    values (lr, betas, params): tensors under a `param_groups` key are a module's weights of that name."""
    roots = {n.split(".", 1)[0] for n in names if "." in n and n.split(".", 1)[0] in OPTIMIZER_KEYS}
    for n in byte_items:
        parts = n.split(".")
        if "param_groups" in parts[1:-1]:
            roots.add(".".join(parts[: parts.index("param_groups", 1)]))
    return roots


def _parents(optimizer_roots: set[str]) -> set[str]:
    """The keys that hold a nested optimizer (`app` for `app.optim`): their other children are the model,
    the scheduler, the RNG state, as in the tutorial's `{"app": AppState}`."""
    return {r.rsplit(".", 1)[0] for r in optimizer_roots if "." in r}


def _under(name: str, roots: set[str]) -> bool:
    return any(name.startswith(r + ".") for r in roots)


def _model_root(tensors: list[TensorMeta], parents: set[str]) -> str | None:
    """The key the model weights sit under: a top key with a model's name, or one beside the optimizer
    (`app.model` next to `app.optim`); None when the weights are not nested under such a key."""
    tops = {t.name.split(".", 1)[0] for t in tensors}
    for key in MODEL_KEYS:
        if key in tops:
            return key
    for parent in sorted(parents):
        children = {
            t.name[len(parent) + 1 :].split(".", 1)[0] for t in tensors if t.name.startswith(parent + ".")
        }
        for key in MODEL_KEYS:
            if key in children:
                return f"{parent}.{key}"
    return None


def _split_model(
    tensors: list[TensorMeta], root: str | None, optimizer_roots: set[str]
) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """Model weights (named relative to `root`, their key) and the other tensors (optimizer state, ...)."""
    if root is None:
        other_tops = {*OPTIMIZER_KEYS, *SCHEDULER_KEYS}
        model, other = [], []
        for t in tensors:
            not_model = t.name.split(".", 1)[0] in other_tops or _under(t.name, optimizer_roots)
            (other if not_model else model).append(t)
        return model, other
    model, other = [], []
    for t in tensors:
        if t.name.startswith(root + "."):
            model.append(TensorMeta(t.name[len(root) + 1 :], t.shape, t.dtype, t.nbytes, t.storage, t.loc))
        else:
            other.append(t)
    return model, other


def _containers(names: list[str], parents: set[str]) -> set[str]:
    """The keys that hold whole kinds of state: the top keys, and the keys beside a nested optimizer
    (`app.optim`, `app.scheduler`, `app.rng` in the tutorial's `{"app": AppState}`)."""
    out = {n.split(".", 1)[0] for n in names}
    for parent in parents:
        out.update(n[len(parent) + 1 :].split(".", 1)[0] for n in names if n.startswith(parent + "."))
    return out


def _entries(
    byte_items: list[str], values: dict[str, Any], other: list[TensorMeta], optimizer_roots: set[str]
) -> tuple[Entry, ...]:
    """One entry per top-level item, and one per optimizer or other group of nested items (DCP flattens
    `optimizer.param_groups.0.lr` into an item of its own: a dozen lines per optimizer otherwise)."""
    groups: dict[str, list[str]] = {}
    roots = sorted(optimizer_roots)
    for name in byte_items:
        root = next((r for r in roots if name.startswith(r + ".")), name.split(".", 1)[0])
        groups.setdefault(root, []).append(name)
    out = []
    for root, items in groups.items():
        if root in optimizer_roots:
            sizes = [t.nbytes for t in other if t.name.startswith(root + ".")]
            lrs = sorted({v for n, v in values.items() if n.startswith(root + ".") and n.endswith(".lr")
                          and type(v) in (int, float)})  # fmt: skip
            lr = f", lr={lrs[0]:g}" if len(lrs) == 1 else ""
            summary = (
                f"{plural(len(sizes), 'tensor')} ({human_bytes(sum(sizes))}), {plural(len(items), 'item')}"
            )
            out.append(Entry(root, "optimizer", summary + lr))
        elif items == [root]:  # a top-level item: its value
            v = values.get(root)
            if type(v) in (int, float, bool, str) and len(str(v)) <= 120:
                out.append(Entry(root, type(v).__name__, str(v)))
            else:
                out.append(Entry(root, "bytes", "pickled non-tensor item"))
        else:
            keys = ", ".join(n[len(root) + 1 :] for n in items[:6]) + (", …" if len(items) > 6 else "")
            out.append(Entry(root, "items", f"{plural(len(items), 'pickled item')}: {keys}"))
    return tuple(out)


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

"""Frozen dataclasses shared by every layer: what a checkpoint contains, and where its bytes live.

Raw numbers are fields; human strings are `*_str` properties; `to_json()` gives the documented document.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

FORMATS = (
    "safetensors",
    "safetensors-sharded",
    "torch-zip",
    "torch-legacy",
    "torch-sharded",
    "torchscript",
    "torch-dcp",
    "hdf5",
    "keras",
)
LAYOUTS = ("file", "sharded", "hf-checkpoint", "dcp")


_BINARY_UNITS = (("B", 1), ("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4))


def size_unit(sizes: Iterable[int | float]) -> tuple[str, int]:
    """One binary unit for a set of sizes, chosen by the largest so every value stays below 1024 of it
    (a size column that sorts as numbers, axis ticks): (name, bytes per unit).

    >>> size_unit([1500, 2_000_000]), size_unit([]), size_unit([5 * 1024**3])
    (('MiB', 1048576), ('B', 1), ('GiB', 1073741824))
    """
    top = max(sizes, default=0)
    name, div = _BINARY_UNITS[0]
    for unit, n in _BINARY_UNITS:
        if top >= n:
            name, div = unit, n
    return name, div


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB': in the `size_unit` of the size (negative sizes by their magnitude).

    >>> human_bytes(1536), human_bytes(1023), human_bytes(-5 * 1024**3), human_bytes(3 * 1024**5)
    ('1.5 KiB', '1023 B', '-5.0 GiB', '3072.0 TiB')
    """
    n = float(n)
    unit, div = _BINARY_UNITS[-1] if math.isnan(n) else size_unit([abs(n)])
    return f"{n:.0f} {unit}" if div == 1 else f"{n / div:.1f} {unit}"


def shape_str(shape: tuple[int, ...]) -> str:
    """(4096, 11008) -> '4096 × 11008'; () -> 'scalar'."""
    return " × ".join(map(str, shape)) if shape else "scalar"


def plural(n: int, one: str, many: str | None = None) -> str:
    """plural(1, "tensor") -> '1 tensor'; plural(3, "tensor") -> '3 tensors'."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def human_count(n: int) -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return str(n)


class RawLocation(NamedTuple):
    """Where a tensor's storage bytes sit inside a file, uncompressed (torch zip/legacy, HDF5, DCP blob).
    A NamedTuple for the same reason as TensorMeta: one per tensor."""

    file: str
    offset: int  # absolute byte offset of the storage's first element
    storage_numel: int  # elements in the whole storage (views may use part of it)
    storage_offset: int = 0  # element offset of this tensor inside its storage
    stride: tuple[int, ...] | None = None  # None means C-contiguous
    byteorder: str = "little"
    # True: `offset` is a zip member's local header, whose variable-length fields are read when the bytes
    # are loaded (metadata never needs the exact data offset, so it never pays one read per storage)
    zip_header: bool = False


@dataclass(frozen=True)
class SafetensorsLocation:
    """A tensor read through `safetensors.safe_open` (the reference implementation). One location object is
    shared by every tensor of a file; `key` None means the tensor's own name."""

    file: str
    key: str | None = None


@dataclass(frozen=True)
class Hdf5Location:
    """A chunked/filtered HDF5 dataset: read by the isolated h5py worker."""

    file: str
    dataset: str
    member: str | None = None  # the .h5 member inside a .keras zip


@dataclass(frozen=True)
class DcpChunk:
    """One chunk of a torch.distributed.checkpoint tensor: a torch.save blob inside a .distcp file."""

    file: str
    offset: int
    length: int
    chunk_offsets: tuple[int, ...]
    chunk_sizes: tuple[int, ...]


@dataclass(frozen=True)
class DcpLocation:
    chunks: tuple[DcpChunk, ...]


Location = RawLocation | SafetensorsLocation | Hdf5Location | DcpLocation


class TensorMeta(NamedTuple):
    """One tensor, known from headers only.

    A NamedTuple rather than a frozen dataclass: a scan builds one per tensor of every checkpoint
    (hundreds of thousands), and a tuple is built in C at a fifth of the cost, just as immutable.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    storage: str | None = None  # storage identity; tensors sharing it are tied (weight tying)
    loc: Location | None = None  # where the bytes are: not compared, not in the JSON document

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorMeta) and self[:5] == other[:5]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:5])

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "nbytes": self.nbytes}


@dataclass(frozen=True)
class Entry:
    """A top-level non-tensor entry of a checkpoint, summarised (e.g. 'optimizer_state_dict')."""

    name: str
    kind: str  # python-ish type: dict, list, int, float, str, tensor-dict, optimizer, scheduler, object ...
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "summary": self.summary}


# a finding as the pickle readers word it, with the part of a multi-file checkpoint in front
_PICKLE_REFERENCE = re.compile(
    r"(?:(?P<part>[^:]+): )?pickle references (?P<name>\S+) \(not imported or called\)"
)


@dataclass(frozen=True)
class Safety:
    """Static verdict: anything outside the allowlist is listed, never imported or run."""

    unsafe_globals: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()  # human detail: where each unsafe thing was seen
    unverified: tuple[str, ...] = ()  # parts that could not be checked (unreadable): never called safe

    @property
    def safe(self) -> bool:
        return not self.unsafe_globals and not self.unverified

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the verdict is not safe: the unsafe globals, then each part that could not be checked.

        >>> Safety(("posix.system",), unverified=("optimizer.pt",)).reasons
        ('posix.system', 'optimizer.pt (not checked)')
        """
        return (*self.unsafe_globals, *(f"{p} (not checked)" for p in self.unverified))

    def headline(self, most: int = 3, quote: Callable[[str], str] = str) -> str:
        """The reasons, each through `quote`, cut to the first `most` when there are more (the findings
        list them all).

        >>> Safety(("a.x", "b.y", "c.z", "d.w", "e.v")).headline()
        'a.x, b.y, c.z and 2 more'
        """
        r = self.reasons
        shown = ", ".join(map(quote, r[:most]))
        return shown if len(r) <= most else f"{shown} and {len(r) - most} more"

    def grouped_findings(self) -> tuple[str, ...]:
        """The findings to show: the pickle references of one file (or part) on one line, in first-seen
        order, instead of a line each (an HF Trainer folder's `training_args.bin` names nine globals).

        >>> for line in Safety(findings=(
        ...     "args.bin: pickle references a.X (not imported or called)",
        ...     "args.bin: pickle references a.Y (not imported or called)",
        ...     "model.h5: Lambda layer 'f'",
        ... )).grouped_findings():
        ...     print(line)
        args.bin: pickle references 2 globals outside the allowlist (not imported or called): a.X, a.Y
        model.h5: Lambda layer 'f'
        """
        out: list[str] = []
        slot: dict[str | None, int] = {}  # part -> the line its references take, at its first finding
        names: dict[str | None, list[str]] = {}
        for f in self.findings:
            m = _PICKLE_REFERENCE.fullmatch(f)
            if m is None:
                out.append(f)
                continue
            part = m["part"]
            if part not in slot:
                slot[part], names[part] = len(out), []
                out.append("")
            names[part].append(m["name"])
        for part, i in slot.items():
            at, listed = f"{part}: " if part is not None else "", names[part]
            if len(listed) == 1:
                out[i] = f"{at}pickle references {listed[0]} (not imported or called)"
            else:
                out[i] = (
                    f"{at}pickle references {len(listed)} globals outside the allowlist "
                    f"(not imported or called): {', '.join(listed)}"
                )
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "safe": self.safe,
            "unsafe_globals": list(self.unsafe_globals),
            "findings": list(self.findings),
            "unverified": list(self.unverified),
        }


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything inspect knows about one logical checkpoint, from headers alone."""

    path: str
    format: str
    size_bytes: int
    tensors: tuple[TensorMeta, ...] = ()
    step: int | None = None
    epoch: int | float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    has_optimizer: bool = False
    has_scheduler: bool = False
    has_rng_state: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    entries: tuple[Entry, ...] = ()
    safety: Safety = Safety()
    layout: str = "file"
    framework: str | None = None  # pytorch | lightning | hf-trainer | accelerate | keras | None (unknown)
    files: tuple[str, ...] = ()
    other_tensors: tuple[TensorMeta, ...] = ()  # optimizer state etc.: not model weights
    warnings: tuple[str, ...] = ()

    @property
    def n_tensors(self) -> int:
        return len(self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def dtypes(self) -> dict[str, int]:
        """dtype -> parameter count, largest first."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dtype] = out.get(t.dtype, 0) + t.numel
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def tied(self) -> dict[str, tuple[str, ...]]:
        """storage -> names, for storages used by more than one model tensor (tied weights)."""
        groups: dict[str, list[str]] = {}
        for t in self.tensors:
            if t.storage is not None:
                groups.setdefault(t.storage, []).append(t.name)
        return {k: tuple(v) for k, v in groups.items() if len(v) > 1}

    @property
    def size_str(self) -> str:
        return human_bytes(self.size_bytes)

    @property
    def n_params_str(self) -> str:
        return human_count(self.n_params)

    def tensor(self, name: str) -> TensorMeta:
        """The model or other tensor called `name` (KeyError if absent)."""
        for t in self.tensors + self.other_tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "layout": self.layout,
            "framework": self.framework,
            "size_bytes": self.size_bytes,
            "files": list(self.files),
            "n_tensors": self.n_tensors,
            "n_params": self.n_params,
            "dtypes": self.dtypes,
            "step": self.step,
            "epoch": jsonable(self.epoch),
            "metrics": jsonable(dict(self.metrics)),
            "has_optimizer": self.has_optimizer,
            "has_scheduler": self.has_scheduler,
            "has_rng_state": self.has_rng_state,
            "metadata": jsonable(self.metadata),
            "entries": [e.to_json() for e in self.entries],
            "tied": {k: list(v) for k, v in self.tied.items()},
            "n_other_tensors": len(self.other_tensors),
            "safety": self.safety.to_json(),
            "warnings": list(self.warnings),
            "tensors": [t.to_json() for t in self.tensors],
        }


@dataclass(frozen=True)
class TensorStats:
    """Value statistics of one tensor, computed through the loading layer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    norm: float | None
    nan_count: int
    inf_count: int
    zero_count: int
    device: str

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["shape"] = list(self.shape)
        for k in ("min", "max", "mean", "std", "norm"):
            v = d[k]
            if v is not None and not math.isfinite(v):
                d[k] = str(v)  # JSON has no NaN/Infinity
        return d


def jsonable(obj: Any) -> Any:
    """Metadata values made JSON-safe: mappings become dicts with string keys, tuples lists, non-finite
    floats strings, anything else that is not a JSON scalar its `str()`.

    >>> jsonable({1: (float("nan"), None), "b": b"x"})
    {'1': ['nan', None], 'b': "b'x'"}
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


STATUSES = ("ok", "unreadable", "incomplete", "debris")  # IndexEntry.status, in display order


@dataclass(frozen=True)
class IndexEntry:
    """One row of the index: a logical checkpoint as scanned (possibly unreadable, incomplete or debris)."""

    path: str
    run: str
    root: str
    layout: str  # file | sharded | hf-checkpoint | dcp
    status: str  # one of STATUSES
    fingerprint: str  # (relpath, size, mtime_ns) of every part: unchanged -> not read again
    files: tuple[tuple[str, int, int], ...] = ()  # (path, size, mtime_ns)
    format: str | None = None
    framework: str | None = None
    step: int | None = None
    epoch: int | float | None = None
    size_bytes: int = 0
    n_tensors: int | None = None
    n_params: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    has_optimizer: bool | None = None
    has_scheduler: bool | None = None
    has_rng_state: bool | None = None
    safe: bool | None = None
    unsafe_globals: tuple[str, ...] = ()
    reason: str | None = None  # why the status is not ok
    mtime: float | None = None
    meta: Mapping[str, Any] | None = None  # the inspect document without tensors
    # the checkpoint listed under this link's target, when the file is a symlink to another checkpoint of
    # the root (Lightning's save_last="link", a `best.pt` link): its bytes are counted once, at the target
    link_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "run": self.run,
            "format": self.format,
            "layout": self.layout,
            "framework": self.framework,
            "step": self.step,
            "epoch": jsonable(self.epoch),
            "size_bytes": self.size_bytes,
            "n_tensors": self.n_tensors,
            "n_params": self.n_params,
            "metrics": jsonable(dict(self.metrics)),
            "has_optimizer": self.has_optimizer,
            "has_scheduler": self.has_scheduler,
            "has_rng_state": self.has_rng_state,
            "safe": self.safe,
            "unsafe_globals": list(self.unsafe_globals),
            "status": self.status,
            "reason": self.reason,
            "mtime": self.mtime,
            "link_to": self.link_to,
        }


# IndexEntry is a frozen dataclass: its __init__ sets each of its 23 fields through object.__setattr__, which
# costs more than all the rest of making an entry from a row, and a scan makes thousands. new_entry fills
# the instance dict directly, as pickle and copy.copy restore one. Only when every field is given (the
# constructor fills defaults) and IndexEntry has neither __slots__ nor a __post_init__; else the constructor.
_N_ENTRY_FIELDS = len(fields(IndexEntry))
_FAST_ENTRY = "__slots__" not in vars(IndexEntry) and not hasattr(IndexEntry, "__post_init__")


def new_entry(values: dict[str, Any]) -> IndexEntry:
    """`IndexEntry(**values)`, built faster when `values` names every field."""
    if not _FAST_ENTRY or len(values) != _N_ENTRY_FIELDS:
        return IndexEntry(**values)
    entry = object.__new__(IndexEntry)
    entry.__dict__.update(values)
    return entry

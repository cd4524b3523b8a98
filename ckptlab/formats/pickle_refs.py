"""The inert values a pickle walk builds, and ckptlab's own versions of the allowlisted torch calls.

Globals become `Global` placeholders (or immutable stand-in classes on the C path), unknown calls `Obj`
records, storages `StorageRef`s and tensors `TensorRef`s, whose geometry is validated once here: every
reader downstream can trust shape, stride, element count and that the view stays inside its storage.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..dtypes import TORCH_STORAGE_DTYPES, itemsize
from ..errors import FormatError
from .pickle_allow import is_safe_global


@dataclass(eq=False)
class Global:
    """A `module.name` reference from the pickle. Never resolved."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<global {self.qualname}>"

    def __setstate__(self, state: Any) -> None:  # BUILD on a placeholder: ignored, never applied
        pass


@dataclass(eq=False)
class Obj:
    """What calling / instantiating an unknown global would have produced, recorded inertly."""

    cls: Global
    args: tuple[Any, ...] = ()
    state: Any = None
    items: dict[Any, Any] = field(default_factory=dict)  # SETITEM(S) on a dict subclass
    list_items: list[Any] = field(default_factory=list)  # APPEND(S) on a list subclass

    @property
    def qualname(self) -> str:
        return self.cls.qualname

    # The C unpickler applies BUILD / SETITEMS / APPENDS through these methods: recorded, nothing else.
    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    def attrs(self) -> dict[Any, Any]:
        """The instance dict set by BUILD (`(dict_state, slot_state)` tuples included)."""
        s = self.state
        if isinstance(s, tuple) and len(s) == 2 and isinstance(s[1], dict):
            merged = dict(s[0]) if isinstance(s[0], dict) else {}
            merged.update(s[1])
            return merged
        return s if isinstance(s, dict) else {}

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


@dataclass(eq=False, slots=True)
class DtypeRef:
    name: str

    def __setstate__(self, state: Any) -> None:  # BUILD on a placeholder: ignored
        pass


# StorageRef and TensorRef are NamedTuples: one of each is built per tensor of every checkpoint read, and
# `tuple.__new__` builds them in C. Code that walks containers must test for them before `tuple`.
class StorageRef(NamedTuple):
    """A persistent-id storage reference: ('storage', type, key, location, numel)."""

    key: str
    dtype: str | None  # None for UntypedStorage (v3 tensors carry the dtype)
    location: str
    numel: int  # elements for typed storages, bytes for untyped

    def __repr__(self) -> str:
        return f"<storage {self.key} {self.dtype or 'untyped'}[{self.numel}] on {self.location}>"


class TensorRef(NamedTuple):
    """An inert tensor: storage reference + view geometry, validated (no bytes are read)."""

    storage: StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    numel: int
    contiguous: bool  # C-contiguous: the bytes are storage[offset : offset + numel] in order
    requires_grad: bool = False
    kind: str = "dense"  # dense | parameter

    def __setstate__(self, state: Any) -> None:  # BUILD on a rebuilt tensor: ignored, never applied
        pass


class FrozenClass(type):
    """Metaclass of every class a pickle can reach as a global on the C path. Those classes are shared by
    every read in the process, so a pickle must not change them: BUILD on a global is refused (it would
    set attributes on the class), and so is any other attribute assignment."""

    @property
    def __setstate__(cls) -> Callable[[Any], None]:
        # a data descriptor on the metaclass wins over the class's own __setstate__ (BaseException has one)
        def refuse(state: Any) -> None:
            raise FormatError(None, "pickle tries to set the state of a global")

        return refuse

    def __setattr__(cls, name: str, value: Any) -> None:
        raise FormatError(None, f"pickle tries to set attribute {name!r} on a global")

    def __delattr__(cls, name: str) -> None:
        raise FormatError(None, f"pickle tries to delete attribute {name!r} of a global")


class PickledDict(dict, metaclass=FrozenClass):  # type: ignore[type-arg]
    """An OrderedDict / AttributeDict from a pickle: a plain dict that takes BUILD (state_dict()'s
    `_metadata` attribute arrives that way) without applying it. On the C path the class itself is what
    `collections.OrderedDict` resolves to, so `OrderedDict()` is built in C."""

    def __setstate__(self, state: Any) -> None:
        pass


# ---------------------------------------------------------------- C-path records


class TensorCall(BaseException, metaclass=FrozenClass):
    """What the C unpickler builds for `torch._utils._rebuild_tensor(_v2)(...)`: BaseException is the one
    builtin type whose constructor takes any arguments and keeps them (`.args`) without running Python
    code, so a tensor record costs no Python call; it is validated afterwards by `tensor_from_call`."""

    __slots__ = ()


class StoragePid(BaseException, metaclass=FrozenClass):
    """A persistent id as the C unpickler hands it over: `persistent_load` is this class, so keeping the
    id (`.args[0]`, untouched) costs no Python call per storage; `storage_ref` validates it later."""

    __slots__ = ()


# storage stand-in classes (C path) and their dtypes, registered as they are created
STORAGE_CLASS_DTYPES: dict[Any, str | None] = {}


def storage_ref(pid: Any) -> StorageRef:
    """('storage', storage_type, key, location, numel[, view_metadata]) -> StorageRef."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        what = "tuple" if isinstance(pid, tuple) else type(pid).__name__
        raise FormatError(None, f"unexpected persistent id {what}")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if type(numel) is not int or numel < 0:
        raise FormatError(None, f"bad storage size {numel!r}")
    try:
        dtype = STORAGE_CLASS_DTYPES[stype]
    except (KeyError, TypeError):
        dtype = storage_dtype(stype)
    return StorageRef(key if type(key) is str else str(key), dtype, str(location), numel)


def storage_dtype(stype: Any) -> str | None:
    """The dtype a pickled storage type stands for (None: untyped); FormatError for anything else. Storage
    types are recognised by name: the allowlist has already reported a global from an unexpected module."""
    if isinstance(stype, FrozenClass):  # a C-path stand-in that is not a storage type
        stype = getattr(stype, "_global", stype)
    if isinstance(stype, Global):
        if stype.name in TORCH_STORAGE_DTYPES:
            return TORCH_STORAGE_DTYPES[stype.name]
        if stype.name in ("UntypedStorage", "TypedStorage"):
            return None
        raise FormatError(None, f"unknown storage type {stype.qualname}")
    if isinstance(stype, DtypeRef):  # some writers pickle the dtype itself
        return stype.name
    raise FormatError(None, f"unknown storage type {type(stype).__name__}")


# Validated shapes, shared by every read: (canonical shape, numel, C-contiguous strides). Checkpoints
# repeat a handful of shapes across hundreds of tensors, so most tensors cost one dict lookup here.
# Equal-but-not-int dims (1.0, True) map to the canonical int shape. Bounded: at most _MAX_SHAPES shapes
# of at most _MAX_CACHED_DIMS dims, so crafted files cannot make it hold much memory.
_SHAPES: dict[Any, tuple[tuple[int, ...], int, tuple[int, ...]]] = {}
_MAX_SHAPES = 1 << 16
_MAX_CACHED_DIMS = 8


def _shape_info(shape: Any) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    try:
        return _SHAPES[shape]
    except (KeyError, TypeError):
        pass
    if type(shape) is not tuple:
        if isinstance(shape, Obj) and shape.qualname == "torch.Size":  # torch.Size((2, 3))
            shape = shape.args[0] if shape.args else ()
        if not isinstance(shape, (tuple, list)):
            raise FormatError(None, f"bad tensor shape: {shape!r:.80}")
    numel, strides = 1, []
    for d in reversed(shape):
        if type(d) is not int:
            raise FormatError(None, f"bad tensor shape: {tuple(shape)!r:.80}")
        if d < 0:
            raise FormatError(None, f"negative tensor shape: {tuple(shape)!r:.80}")
        strides.append(numel)
        numel *= d
    info = (tuple(shape), numel, tuple(reversed(strides)))
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    if type(shape) is tuple and len(shape) <= _MAX_CACHED_DIMS:
        _SHAPES[info[0]] = info
    return info


_new = tuple.__new__


def make_tensor(
    storage: StorageRef, offset: Any, shape: Any, stride: Any, dtype: str | None = None, rg: Any = False
) -> TensorRef:
    """A validated TensorRef: int geometry, known dtype, and a view that stays inside its storage."""
    dtype = dtype or storage.dtype
    if dtype is None:
        raise FormatError(None, "untyped storage without a dtype")
    if type(offset) is not int or offset < 0:
        raise FormatError(None, f"bad storage offset {offset!r}")
    shape, numel, cstride = _shape_info(shape)
    # elements of the storage in units of this tensor's dtype (untyped storages count bytes)
    capacity = storage.numel if storage.dtype is not None else storage.numel // itemsize(dtype)
    if stride == cstride:  # the common case: contiguous, bound check without a loop
        if numel and offset + numel > capacity:
            raise FormatError(None, f"tensor view reaches element {offset + numel - 1} of a "
                              f"{capacity}-element storage")  # fmt: skip
        return _new(TensorRef, (storage, offset, shape, cstride, dtype, numel, True, rg is True, "dense"))
    return _strided(storage, offset, shape, stride, dtype, numel, capacity, rg is True)


def _strided(
    storage: StorageRef, offset: int, shape: tuple[int, ...], stride: Any, dtype: str, numel: int,
    capacity: int, rg: bool,
) -> TensorRef:  # fmt: skip
    if isinstance(stride, Obj) and stride.qualname == "torch.Size":
        stride = stride.args[0] if stride.args else ()
    if not isinstance(stride, (tuple, list)) or not all(type(s) is int and s >= 0 for s in stride):
        raise FormatError(None, f"bad tensor stride: {stride!r:.80}")
    stride = tuple(stride)
    if len(stride) != len(shape):
        if numel:
            raise FormatError(None, f"tensor view has {len(shape)} dims but {len(stride)} strides")
        return _new(TensorRef, (storage, offset, shape, stride, dtype, 0, True, rg, "dense"))
    if numel:
        last = offset + sum((d - 1) * s for d, s in zip(shape, stride, strict=True))
        if last >= capacity:
            raise FormatError(None, f"tensor view reaches element {last} of a {capacity}-element storage")
    # strides of size-1 dims never matter: such a tensor is still laid out contiguously
    contiguous = numel <= 1 or all(
        s == c for d, s, c in zip(shape, stride, _shape_info(shape)[2], strict=True) if d != 1
    )
    return _new(TensorRef, (storage, offset, shape, stride, dtype, numel, contiguous, rg, "dense"))


def tensor_from_call(rec: TensorCall) -> TensorRef:
    """A C-path tensor record -> TensorRef: (storage pid, offset, size, stride[, requires_grad, ...]).

    The common case (a typed storage, a shape seen before, contiguous strides) is inlined here, without
    calls: this runs once per tensor of every checkpoint read. Anything else takes `rebuild_tensor`, which
    checks the same things one by one and names what is wrong."""
    a = rec.args
    if len(a) >= 4:
        pid, offset, shape, stride = a[0], a[1], a[2], a[3]
        pid = pid.args[0] if type(pid) is StoragePid and pid.args else None
        if type(pid) is tuple and len(pid) >= 5 and pid[0] == "storage" and type(offset) is int:
            dtype = STORAGE_CLASS_DTYPES.get(pid[1]) if type(pid[1]) is FrozenClass else None
            key, location, numel = pid[2], pid[3], pid[4]
            info = _SHAPES.get(shape) if type(shape) is tuple else None
            if (
                dtype is not None
                and info is not None
                and type(key) is str
                and type(location) is str
                and type(numel) is int
                and stride == info[2]
                and offset >= 0
                and (offset + info[1] <= numel or not info[1])
            ):
                storage = _new(StorageRef, (key, dtype, location, numel))
                rg = len(a) > 4 and a[4] is True
                return _new(TensorRef, (storage, offset, info[0], info[2], dtype, info[1], True, rg, "dense"))
    return rebuild_tensor(a)


def rebuild_tensor(args: tuple[Any, ...], dtype: str | None = None) -> TensorRef:
    if len(args) < 4:
        raise FormatError(None, "malformed tensor record")
    storage = args[0]
    if type(storage) is StoragePid:
        storage = storage_ref(storage.args[0] if storage.args else None)
    elif type(storage) is not StorageRef:
        raise FormatError(None, "malformed tensor record")
    return make_tensor(storage, args[1], args[2], args[3], dtype, len(args) > 4 and args[4] is True)


def as_tensor(v: Any) -> Any:
    """A TensorRef for a C-path tensor record; anything else as is."""
    return tensor_from_call(v) if type(v) is TensorCall else v


# ---------------------------------------------------------------- handlers of allowlisted calls


def _rebuild_v3(args: tuple[Any, ...]) -> TensorRef:
    # (storage, offset, size, stride, requires_grad, hooks, dtype, [metadata])
    dtype = args[6] if len(args) > 6 else None
    if not isinstance(dtype, DtypeRef):
        raise FormatError(None, "v3 tensor record without a dtype")
    return rebuild_tensor(args, dtype.name)


def _rebuild_parameter(args: tuple[Any, ...]) -> Any:
    t = as_tensor(args[0]) if args else None
    if isinstance(t, TensorRef):
        rg = args[1] if len(args) > 1 and isinstance(args[1], bool) else t.requires_grad
        return t._replace(kind="parameter", requires_grad=rg)
    return t


def _from_type_v2(args: tuple[Any, ...]) -> Any:
    # (func, new_type, func_args, state): Parameter subclasses and plain tensors go through here. torch calls
    # func(*func_args): anything but one of its tensor rebuilds would be a call hidden from the unpickler
    func = args[0] if args else None
    g = Global("torch._utils", "_rebuild_tensor_v2") if func is TensorCall else getattr(func, "_global", func)
    if not (isinstance(g, Global) and g.qualname.startswith("torch._utils._rebuild")):
        what = g.qualname if isinstance(g, Global) else type(g).__name__
        raise FormatError(None, f"pickle: _rebuild_from_type_v2 calls {what}, not a tensor rebuild")
    if len(args) >= 3 and isinstance(args[2], tuple) and args[2]:
        inner = as_tensor(args[2][0])
        if isinstance(inner, TensorRef):
            return inner
    return None


def _ordered_dict(args: tuple[Any, ...]) -> Any:
    if args and isinstance(args[0], (list, tuple)):
        try:
            return PickledDict(args[0])
        except (TypeError, ValueError):
            return PickledDict()
    return PickledDict()


def _dict_like(args: tuple[Any, ...]) -> Any:
    if args and isinstance(args[0], dict):
        return PickledDict(args[0])
    return PickledDict()


def _set_like(args: tuple[Any, ...]) -> Any:
    try:
        return set(args[0]) if args and isinstance(args[0], (list, tuple, set)) else set()
    except TypeError:
        return set()


# numpy scalar type codes -> struct formats: what `np.float64(0.25)` (a metric computed with numpy, an
# `np.int64` step) pickles as, `numpy.core.multiarray.scalar(dtype('f8'), <8 raw bytes>)`
_NUMPY_SCALARS = {
    "f2": ("e", "float16"), "f4": ("f", "float32"), "f8": ("d", "float64"),
    "i1": ("b", "int8"), "i2": ("h", "int16"), "i4": ("i", "int32"), "i8": ("q", "int64"),
    "u1": ("B", "uint8"), "u2": ("H", "uint16"), "u4": ("I", "uint32"), "u8": ("Q", "uint64"),
    "b1": ("?", "bool"),
}  # fmt: skip


def numpy_scalar(v: Any) -> tuple[int | float | bool, str] | None:
    """(value, numpy dtype name) of a pickled numpy scalar of a plain numeric dtype, decoded from its bytes
    (never through numpy); None for anything else. The dtype's byte order is in its BUILD state."""
    if not isinstance(v, Obj) or not v.qualname.endswith("multiarray.scalar") or len(v.args) != 2:
        return None
    dtype, raw = v.args
    if not isinstance(dtype, Obj) or dtype.qualname != "numpy.dtype" or not isinstance(raw, bytes):
        return None
    code = dtype.args[0] if dtype.args else None
    known = _NUMPY_SCALARS.get(code) if isinstance(code, str) else None
    if known is None or len(raw) != struct.calcsize(known[0]):
        return None
    state = dtype.state
    order = ">" if isinstance(state, tuple) and len(state) > 1 and state[1] == ">" else "<"
    return struct.unpack(order + known[0], raw)[0], known[1]


def _codecs_encode(args: tuple[Any, ...]) -> Any:
    # protocol 2 pickles bytes as _codecs.encode(str, 'latin1'); decoding it is pure data
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        try:
            return args[0].encode("latin1")
        except UnicodeEncodeError:
            return b""
    return b""


TENSOR_REBUILDS = frozenset({"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2"})

_HANDLERS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    "torch._utils._rebuild_tensor": rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _from_type_v2,
    "torch.nn.parameter.Parameter": _rebuild_parameter,
    "collections.OrderedDict": _ordered_dict,
    "builtins.dict": _dict_like,
    "builtins.set": _set_like,
    "builtins.frozenset": lambda a: frozenset(_set_like(a)),
    "_codecs.encode": _codecs_encode,
    "lightning.fabric.utilities.data.AttributeDict": _dict_like,
    "lightning_fabric.utilities.data.AttributeDict": _dict_like,
    "pytorch_lightning.utilities.parsing.AttributeDict": _dict_like,
    "lightning.pytorch.utilities.parsing.AttributeDict": _dict_like,
}


def handler_for(qualname: str, context: str | None) -> Callable[[tuple[Any, ...]], Any] | None:
    """ckptlab's own implementation of an allowlisted global (a tensor rebuild, OrderedDict...), if any."""
    handler = _HANDLERS.get(qualname)
    return handler if handler is not None and is_safe_global(qualname, context) else None

"""Walking pickles without importing or calling anything from the file.

Every global becomes an inert placeholder, every call an `Obj` record (or, for torch's tensor rebuilds, a
`TensorRef`); globals outside the allowlist are collected as unsafe. Two walkers share these placeholders:
pickles within the size cap go through CPython's C unpickler with `find_class` resolving each global to an
immutable stand-in class (fast; the size bounds opcodes, memo and stack), larger ones through an interpreter
over `pickletools.genops` that counts opcodes, nesting, stack and memo against explicit caps.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ..dtypes import TORCH_STORAGE_DTYPES, torch_dtype_name
from ..errors import FormatError, LimitError
from .limits import DEFAULT_LIMITS, Limits


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


class _Inert:
    """Placeholders ignore BUILD: a crafted pickle must not overwrite their fields."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        pass


@dataclass(eq=False, slots=True)
class StorageRef(_Inert):
    """A persistent-id storage reference: ('storage', type, key, location, numel)."""

    key: str
    dtype: str | None  # None for UntypedStorage (v3 tensors carry the dtype)
    location: str
    numel: int  # elements for typed storages, bytes for untyped


@dataclass(eq=False, slots=True)
class TensorRef(_Inert):
    """An inert tensor: storage reference + view geometry. No bytes are read."""

    storage: StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    requires_grad: bool = False
    kind: str = "dense"  # dense | parameter


@dataclass(eq=False, slots=True)
class DtypeRef(_Inert):
    name: str


# Globals that `torch.save` of tensors, containers, numbers, strings, optimizer/scheduler state and the
# common framework wrappers produces. Matching here only means "not reported": nothing is ever imported.
SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "collections.defaultdict",
        "collections.deque",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "builtins.slice",
        "builtins.bytearray",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "__builtin__.set",
        "__builtin__.complex",
        "_codecs.encode",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
        "torch.Tensor",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.torch_version.TorchVersion",
        "torch.strided",
        "torch.sparse_coo",
        "torch.sparse_csr",
        "torch.contiguous_format",
        "torch.channels_last",
        "torch.preserve_format",
        "torch.per_tensor_affine",
        "torch.per_channel_affine",
        "torch.serialization._get_layout",
        # numpy arrays and scalars (RNG states saved by HF Trainer / Lightning)
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
        # Lightning's hyper-parameter container is a plain dict subclass
        "lightning.fabric.utilities.data.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "lightning.pytorch.utilities.parsing.AttributeDict",
    }
    | {f"torch.{n}" for n in TORCH_STORAGE_DTYPES}
)
_SAFE_PATTERNS = (
    re.compile(
        r"^torch\.(float|bfloat|int|uint|bool|complex|qint|quint|half|double|long|short|cfloat|cdouble)\w*$"
    ),
    re.compile(r"^numpy\.dtypes\.\w+DType$"),
)
# Allowed only in the formats that produce them.
CONTEXT_GLOBALS: dict[str, tuple[re.Pattern[str], ...]] = {
    "torchscript": (re.compile(r"^__torch__\."), re.compile(r"^torch\.jit\._pickle\.\w+$")),
    "dcp": (
        re.compile(r"^torch\.distributed\.checkpoint\.[\w.]+$"),
        re.compile(r"^pathlib\.(PosixPath|WindowsPath|PurePosixPath|PureWindowsPath)$"),
    ),
}


def python3_name(module: str, name: str) -> tuple[str, str]:
    """The (module, name) Python 3's unpickler resolves for a pickled global (fix_imports mapping)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_safe_global(qualname: str, context: str | None = None) -> bool:
    if qualname in SAFE_GLOBALS or any(p.match(qualname) for p in _SAFE_PATTERNS):
        return True
    return any(p.match(qualname) for p in CONTEXT_GLOBALS.get(context or "", ()))


PersistentLoad = Callable[[Any], Any]


def torch_persistent_load(pid: Any) -> Any:
    """('storage', storage_type, key, location, numel[, view_metadata]) -> StorageRef."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise FormatError(None, f"unexpected persistent id {type(pid).__name__}")
    _, stype, key, location, numel = pid[:5]
    if not isinstance(numel, int) or numel < 0:
        raise FormatError(None, f"bad storage size {numel!r}")
    dtype: str | None = None
    stype = as_global(stype)
    if isinstance(stype, Global):
        if stype.name in TORCH_STORAGE_DTYPES:
            dtype = TORCH_STORAGE_DTYPES[stype.name]
        elif stype.name not in ("UntypedStorage", "TypedStorage"):
            raise FormatError(None, f"unknown storage type {stype.qualname}")
    elif isinstance(stype, DtypeRef):  # some writers pickle the dtype itself
        dtype = stype.name
    return StorageRef(key=str(key), dtype=dtype, location=str(location), numel=numel)


def _as_int_tuple(v: Any, what: str) -> tuple[int, ...]:
    if type(v) is tuple:  # the common case, checked without a generator: once per tensor
        for x in v:
            if type(x) is not int or x < 0:
                break
        else:
            return v
    if isinstance(v, Obj) and v.qualname == "torch.Size":
        v = v.args[0] if v.args else ()
    if not isinstance(v, (tuple, list)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise FormatError(None, f"bad tensor {what}: {v!r:.80}")
    if any(x < 0 for x in v):
        raise FormatError(None, f"negative tensor {what}: {tuple(v)}")
    return tuple(v)


def _rebuild_tensor(args: tuple[Any, ...], dtype: str | None = None) -> TensorRef:
    if len(args) < 4 or not isinstance(args[0], StorageRef):
        raise FormatError(None, "malformed tensor record")
    storage, offset, size, stride = args[:4]
    if not isinstance(offset, int) or offset < 0:
        raise FormatError(None, f"bad storage offset {offset!r}")
    dt = dtype or storage.dtype
    if dt is None:
        raise FormatError(None, "untyped storage without a dtype")
    rg = bool(args[4]) if len(args) > 4 and isinstance(args[4], bool) else False
    return TensorRef(storage, offset, _as_int_tuple(size, "shape"), _as_int_tuple(stride, "stride"), dt, rg)


def _rebuild_v3(args: tuple[Any, ...]) -> TensorRef:
    # (storage, offset, size, stride, requires_grad, hooks, dtype, [metadata])
    dtype = args[6] if len(args) > 6 else None
    if not isinstance(dtype, DtypeRef):
        raise FormatError(None, "v3 tensor record without a dtype")
    return _rebuild_tensor(args, dtype.name)


def _rebuild_parameter(args: tuple[Any, ...]) -> Any:
    t = args[0] if args else None
    if isinstance(t, TensorRef):
        t.kind = "parameter"
        if len(args) > 1 and isinstance(args[1], bool):
            t.requires_grad = args[1]
    return t


def _from_type_v2(args: tuple[Any, ...]) -> Any:
    # (func, new_type, func_args, state): Parameter subclasses and plain tensors go through here
    if len(args) >= 3 and isinstance(args[2], tuple) and args[2]:
        inner = args[2][0]
        if isinstance(inner, TensorRef):
            return inner
    return None


class PickledDict(dict):  # type: ignore[type-arg]
    """An OrderedDict / AttributeDict from a pickle: a plain dict that takes BUILD (state_dict()'s
    `_metadata` attribute arrives that way) without applying it."""

    def __setstate__(self, state: Any) -> None:
        pass


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


def _codecs_encode(args: tuple[Any, ...]) -> Any:
    # protocol 2 pickles bytes as _codecs.encode(str, 'latin1'); decoding it is pure data
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        try:
            return args[0].encode("latin1")
        except UnicodeEncodeError:
            return b""
    return b""


_HANDLERS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    "torch._utils._rebuild_tensor": lambda a: _rebuild_tensor(a),
    "torch._utils._rebuild_tensor_v2": lambda a: _rebuild_tensor(a),
    "torch._utils._rebuild_tensor_v3": _rebuild_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _from_type_v2,
    "torch.nn.parameter.Parameter": _rebuild_parameter,
    "collections.OrderedDict": _ordered_dict,
    "builtins.dict": _dict_like,
    "builtins.set": _set_like,
    "builtins.frozenset": lambda a: frozenset(_set_like(a)),
    "__builtin__.set": _set_like,
    "_codecs.encode": _codecs_encode,
    "lightning.fabric.utilities.data.AttributeDict": _dict_like,
    "lightning_fabric.utilities.data.AttributeDict": _dict_like,
    "pytorch_lightning.utilities.parsing.AttributeDict": _dict_like,
    "lightning.pytorch.utilities.parsing.AttributeDict": _dict_like,
}


def _handler_for(qualname: str, context: str | None) -> Callable[[tuple[Any, ...]], Any] | None:
    """ckptlab's own implementation of an allowlisted global (a tensor rebuild, OrderedDict...), if any."""
    handler = _HANDLERS.get(qualname)
    return handler if handler is not None and is_safe_global(qualname, context) else None


class RestrictedUnpickler:
    """Walk one pickle from a binary stream. Construct, then call `load()`; repeat for sequential pickles."""

    def __init__(
        self,
        stream: io.BufferedIOBase | io.BytesIO,
        *,
        persistent_load: PersistentLoad | None = torch_persistent_load,
        context: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        lenient: bool = False,
    ) -> None:
        self.lenient = lenient  # scanning for globals only: a malformed tensor record must not stop the walk
        self.stream = stream
        self.persistent_load = persistent_load
        self.context = context
        self.limits = limits
        self.globals_seen: list[str] = []
        self.unsafe: list[str] = []

    def _global(self, module: str, name: str) -> Any:
        # report what Python 3 would resolve: protocol < 3 pickles (torch.save's default is 2) spell
        # builtins as __builtin__ and subprocess as commands; pickle maps them before the lookup
        module, name = python3_name(module, name)
        qual = f"{module}.{name}"
        if qual not in self.globals_seen:
            self.globals_seen.append(qual)
            if not is_safe_global(qual, self.context) and qual not in self.unsafe:
                self.unsafe.append(qual)
        if module == "torch":
            dt = torch_dtype_name(name)
            if dt is not None:
                return DtypeRef(dt)
        return Global(module, name)

    def _call(self, fn: Any, args: Any) -> Any:
        if not isinstance(args, tuple):
            args = tuple(args) if isinstance(args, list) else (args,)
        if isinstance(fn, Global):
            handler = _handler_for(fn.qualname, self.context)
            if handler is not None:
                try:
                    return handler(args)
                except FormatError:
                    if not self.lenient:
                        raise
            return Obj(fn, args)
        if isinstance(fn, DtypeRef):
            return fn
        # calling a non-global (a memo'd list, an int...) is malformed, not dangerous: record inertly
        return Obj(Global("<non-callable>", type(fn).__name__), args)

    def load(self) -> Any:
        """Walk one pickle. Pickles up to `limits.max_fast_pickle_bytes` go through CPython's C unpickler with
        every global resolved to an inert stand-in (`_StandInUnpickler`); the size cap bounds its opcodes,
        memo and nesting. Larger ones go through the interpreter below, which counts each of those."""
        if not self.lenient and self._fast_cap() > 0:
            start = self.stream.tell()
            try:
                return self._load_fast()
            except _TooBigForFastPath:
                self.stream.seek(start)
                self.globals_seen, self.unsafe = [], []
        return self._load_interpreted()

    def _fast_cap(self) -> int:
        # every opcode takes at least one byte, so a pickle no longer than the opcode, memo and stack caps
        # cannot exceed them; nesting is not a resource for the C unpickler (it does not recurse)
        lim = self.limits
        return min(lim.max_fast_pickle_bytes, lim.max_pickle_ops, lim.max_pickle_memo, lim.max_pickle_stack)

    def _load_fast(self) -> Any:
        budget = _Budget(self.stream, self._fast_cap())
        u = _StandInUnpickler(budget, self)
        try:
            value = u.load()
        except (FormatError, _TooBigForFastPath):
            raise
        except RecursionError:
            raise LimitError(None, "pickle: structure nested too deeply") from None
        except MemoryError:
            raise LimitError(None, "pickle: too large to walk in memory") from None
        except pickle.UnpicklingError as e:
            raise FormatError(None, f"malformed pickle: {_short(e)}") from None
        except EOFError:  # the stream ended between opcodes: genops' wording, so both walkers agree
            raise FormatError(None, "malformed pickle: pickle exhausted before seeing STOP") from None
        except (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            UnicodeDecodeError,
            OverflowError,
        ) as e:
            raise FormatError(None, f"malformed pickle: {_short(e)}") from None
        return value

    def stand_in(self, module: str, name: str) -> Any:
        """What the C unpickler gets for a global: a dtype placeholder, or an inert class (cached per name)
        whose construction runs ckptlab's handler for known torch rebuilds and records an `Obj` otherwise."""
        ref = self._global(module, name)
        if isinstance(ref, DtypeRef):
            return ref
        return _stand_in_class(ref.module, ref.name, self.context)

    def _load_interpreted(self) -> Any:
        lim = self.limits
        stack: list[Any] = []
        metastack: list[list[Any]] = []
        memo: dict[int, Any] = {}
        ops = 0

        def pop_mark() -> list[Any]:
            nonlocal stack
            if not metastack:
                raise FormatError(None, "pickle: MARK missing")
            items = stack
            stack = metastack.pop()
            return items

        def put(idx: int) -> None:
            if len(memo) >= lim.max_pickle_memo:
                raise LimitError(None, f"pickle memo exceeds {lim.max_pickle_memo} entries")
            if not stack:
                raise FormatError(None, "pickle: PUT on empty stack")
            memo[idx] = stack[-1]

        try:
            for op, arg, _pos in pickletools.genops(self.stream):
                ops += 1
                if ops > lim.max_pickle_ops:
                    raise LimitError(None, f"pickle exceeds {lim.max_pickle_ops} opcodes")
                if len(stack) > lim.max_pickle_stack:
                    raise LimitError(None, f"pickle stack exceeds {lim.max_pickle_stack} items")
                name = op.name
                if name in ("PROTO", "FRAME"):
                    continue
                if name == "STOP":
                    if len(stack) != 1:
                        raise FormatError(None, "pickle: stack not balanced at STOP")
                    return stack[0]
                if name == "MARK":
                    if len(metastack) >= lim.max_pickle_depth:
                        raise LimitError(None, f"pickle nesting exceeds {lim.max_pickle_depth}")
                    metastack.append(stack)
                    stack = []
                elif name in ("NONE",):
                    stack.append(None)
                elif name == "NEWTRUE":
                    stack.append(True)
                elif name == "NEWFALSE":
                    stack.append(False)
                elif name in (
                    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
                ):  # fmt: skip
                    stack.append(arg)
                elif name == "BYTEARRAY8":
                    stack.append(bytes(arg))
                elif name == "EMPTY_LIST":
                    stack.append([])
                elif name == "EMPTY_DICT":
                    stack.append({})
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name == "EMPTY_SET":
                    stack.append(set())
                elif name == "TUPLE":
                    items = pop_mark()
                    stack.append(tuple(items))
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    if len(stack) < n:
                        raise FormatError(None, "pickle: stack underflow")
                    items = stack[-n:]
                    del stack[-n:]
                    stack.append(tuple(items))
                elif name == "LIST":
                    # pop_mark() swaps `stack`; bind the result first, never `stack.append(pop_mark())`
                    items = pop_mark()
                    stack.append(items)
                elif name == "DICT":
                    items = pop_mark()
                    stack.append(dict(zip(items[::2], items[1::2], strict=False)))
                elif name == "FROZENSET":
                    items = pop_mark()
                    stack.append(frozenset(items))
                elif name == "APPEND":
                    v = stack.pop()
                    _append(stack[-1], [v])
                elif name == "APPENDS":
                    items = pop_mark()
                    _append(stack[-1], items)
                elif name == "SETITEM":
                    v = stack.pop()
                    k = stack.pop()
                    _setitems(stack[-1], [k, v])
                elif name == "SETITEMS":
                    items = pop_mark()
                    _setitems(stack[-1], items)
                elif name == "ADDITEMS":
                    items = pop_mark()
                    target = stack[-1]
                    if isinstance(target, set):
                        target.update(items)
                elif name == "POP":
                    if stack:
                        stack.pop()
                    else:
                        pop_mark()
                elif name == "POP_MARK":
                    pop_mark()
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    put(int(arg))
                elif name == "MEMOIZE":
                    put(len(memo))
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    if int(arg) not in memo:
                        raise FormatError(None, f"pickle: memo key {arg} missing")
                    stack.append(memo[int(arg)])
                elif name == "GLOBAL":
                    module, _, gname = str(arg).partition(" ")
                    stack.append(self._global(module, gname))
                elif name == "STACK_GLOBAL":
                    gname = stack.pop()
                    module = stack.pop()
                    if not isinstance(module, str) or not isinstance(gname, str):
                        raise FormatError(None, "pickle: STACK_GLOBAL needs two strings")
                    stack.append(self._global(module, gname))
                elif name == "REDUCE":
                    args = stack.pop()
                    fn = stack.pop()
                    stack.append(self._call(fn, args))
                elif name == "NEWOBJ":
                    args = stack.pop()
                    cls = stack.pop()
                    stack.append(self._call(cls, args))
                elif name == "NEWOBJ_EX":
                    stack.pop()  # kwargs
                    args = stack.pop()
                    cls = stack.pop()
                    stack.append(self._call(cls, args))
                elif name == "INST":
                    module, _, gname = str(arg).partition(" ")
                    args = pop_mark()
                    stack.append(self._call(self._global(module, gname), tuple(args)))
                elif name == "OBJ":
                    items = pop_mark()
                    if not items:
                        raise FormatError(None, "pickle: OBJ without class")
                    stack.append(self._call(items[0], tuple(items[1:])))
                elif name == "BUILD":
                    state = stack.pop()
                    target = stack[-1]
                    if isinstance(target, Obj):
                        target.state = state
                elif name in ("PERSID", "BINPERSID"):
                    pid = arg if name == "PERSID" else stack.pop()
                    if self.persistent_load is None:
                        raise FormatError(None, "pickle uses persistent ids where none are expected")
                    stack.append(self.persistent_load(pid))
                elif name in ("EXT1", "EXT2", "EXT4"):
                    # the copyreg extension registry maps codes to arbitrary globals: never consulted
                    qual = f"copyreg.extension_code_{arg}"
                    if qual not in self.unsafe:
                        self.unsafe.append(qual)
                    stack.append(Global("copyreg", f"extension_code_{arg}"))
                elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
                    raise FormatError(None, "pickle uses out-of-band buffers (protocol 5), not used by torch")
                else:  # pragma: no cover - genops knows no other opcodes
                    raise FormatError(None, f"pickle: unsupported opcode {name}")
        except (FormatError, LimitError):
            raise
        except IndexError:
            raise FormatError(None, "pickle: stack underflow (malformed pickle)") from None
        except RecursionError:
            raise LimitError(None, "pickle: structure nested too deeply") from None
        except MemoryError:
            raise LimitError(None, "pickle: too large to walk in memory") from None
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, OverflowError, EOFError) as e:
            raise FormatError(None, f"malformed pickle: {_short(e)}") from None
        raise FormatError(None, "pickle truncated (no STOP opcode)")


class _TooBigForFastPath(Exception):
    pass


class _Budget(io.RawIOBase):
    """A read-only view that stops the C unpickler once it has consumed `cap` bytes (then the caller falls
    back to the interpreter, which has explicit caps). Clamps reads so a declared huge length allocates
    nothing."""

    def __init__(self, stream: Any, cap: int) -> None:
        self.stream, self.cap, self.used = stream, cap, 0

    def readable(self) -> bool:
        return True

    def _take(self, n: int) -> int:
        room = self.cap - self.used
        if room <= 0:
            raise _TooBigForFastPath
        return room if n is None or n < 0 else min(n, room)

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self.stream.read(self._take(n))
        self.used += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        data = self.stream.readline(self._take(size if size is not None else -1))
        self.used += len(data)
        return data

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def peek(self, n: int = 0) -> bytes:
        # with peek() the C unpickler prefetches big blocks and consumes them in C; without it, it calls
        # read() once per opcode. Peeked bytes are not consumed: the unpickler reads what it used at the end.
        room = self.cap - self.used
        if room <= 0:
            return b""
        pos = self.stream.tell()
        data = self.stream.read(min(max(n, 1 << 16), room))
        self.stream.seek(pos)
        return data


class _FrozenClass(type):
    """Stand-in classes are shared by every read in the process, so a pickle must not change them: BUILD
    with slot state on a global would otherwise setattr on the class (e.g. replace its handler) and alter
    how later, unrelated files are read."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise FormatError(None, f"pickle tries to set attribute {name!r} on a global")

    def __delattr__(cls, name: str) -> None:
        raise FormatError(None, f"pickle tries to delete attribute {name!r} of a global")


class _StandIn(metaclass=_FrozenClass):
    """Base of the inert classes the C unpickler receives for globals. Constructing one (REDUCE, NEWOBJ,
    INST, OBJ) never runs code from the file: it calls ckptlab's handler for a known torch rebuild, or
    returns an `Obj` record. `__new__` returns that result, so `__init__` is never reached."""

    _global: Global
    _handler: Callable[[tuple[Any, ...]], Any] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._handler is not None:
            return cls._handler(args)
        return Obj(cls._global, args)


_STAND_INS: dict[tuple[str, str, str | None], type] = {}


def _stand_in_class(module: str, name: str, context: str | None) -> type:
    key = (module, name, context)
    cls = _STAND_INS.get(key)
    if cls is None:
        g = Global(module, name)
        handler = _handler_for(g.qualname, context)
        attrs = {"_global": g, "_handler": staticmethod(handler) if handler else None, "__slots__": ()}
        cls = _FrozenClass(f"StandIn_{name}"[:100], (_StandIn,), attrs)
        _STAND_INS[key] = cls
    return cls


def as_global(x: Any) -> Any:
    """A `Global` for a stand-in class (the C path's value for an uncalled global); anything else as is."""
    if isinstance(x, type) and issubclass(x, _StandIn):
        return x._global
    return x


class _StandInUnpickler(pickle.Unpickler):
    """CPython's C unpickler with `find_class` overridden: every global becomes an inert stand-in, nothing
    is imported (the "restricting globals" recipe of the pickle documentation, taken to its end)."""

    def __init__(self, file: Any, owner: RestrictedUnpickler) -> None:
        super().__init__(file, fix_imports=False, encoding="latin1")
        self._owner = owner

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise FormatError(None, "pickle: global name is not a string")
        return self._owner.stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._owner.persistent_load is None:
            raise FormatError(None, "pickle uses persistent ids where none are expected")
        return self._owner.persistent_load(pid)


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]


def _append(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Obj):
        target.list_items.extend(items)
    elif isinstance(target, set):
        target.update(items)
    else:
        raise FormatError(None, f"pickle: APPEND to {type(target).__name__}")


def _setitems(target: Any, items: list[Any]) -> None:
    if len(items) % 2:
        raise FormatError(None, "pickle: odd SETITEMS")
    pairs = zip(items[::2], items[1::2], strict=True)
    if isinstance(target, dict):
        for k, v in pairs:
            target[k] = v
    elif isinstance(target, Obj):
        for k, v in pairs:
            target.items[k] = v
    else:
        raise FormatError(None, f"pickle: SETITEM on {type(target).__name__}")


def _any_persistent_id(pid: Any) -> Any:
    try:
        return torch_persistent_load(pid)
    except FormatError:
        return pid


def scan_globals(
    data: bytes | IO[bytes], limits: Limits = DEFAULT_LIMITS, length: int | None = None
) -> list[str]:
    """Unsafe globals referenced anywhere in one or more consecutive pickles (no execution). `data` is bytes
    or a stream of `length` bytes read incrementally (so a huge declared string never gets allocated)."""
    found: list[str] = []
    if isinstance(data, (bytes, bytearray)):
        stream: IO[bytes] = io.BytesIO(data)
        length = len(data)
    else:
        stream = data
    start = stream.tell()
    while stream.tell() - start < (length or 0):
        u = RestrictedUnpickler(stream, persistent_load=_any_persistent_id, limits=limits, lenient=True)
        malformed = False
        try:
            u.load()
        except FormatError:
            malformed = True  # what follows a malformed pickle cannot be framed: stop after it
        found.extend(g for g in u.unsafe if g not in found)
        if malformed:
            break
    return found

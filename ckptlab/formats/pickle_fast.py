"""The fast pickle walk: CPython's C unpickler with every global resolved to an inert stand-in.

`find_class` never imports: it returns an immutable class whose construction records an `Obj` (or runs
ckptlab's own handler for an allowlisted call). The calls every tensor makes are kept out of Python
entirely: `_rebuild_tensor_v2(...)` builds a `TensorCall` record (a BaseException subclass, constructed in
C), the persistent id a `StoragePid` record, `OrderedDict()` a `PickledDict`. One pass afterwards
(`resolve`) validates the records into TensorRef / StorageRef. The caller bounds the input size, which
bounds opcodes, memo and stack (see `RestrictedUnpickler.load`).
"""

from __future__ import annotations

import contextlib
import io
import pickle
from typing import TYPE_CHECKING, Any

from ..errors import FormatError
from .pickle_refs import (
    STORAGE_CLASS_DTYPES,
    TENSOR_REBUILDS,
    DtypeRef,
    FrozenClass,
    Global,
    Obj,
    PickledDict,
    StoragePid,
    StorageRef,
    TensorCall,
    TensorRef,
    handler_for,
    storage_dtype,
    storage_ref,
    tensor_from_call,
)

if TYPE_CHECKING:
    from .pickle_vm import RestrictedUnpickler


class TooBigForFastPath(Exception):
    pass


class Budget(io.RawIOBase):
    """A read-only view that stops the C unpickler once it has consumed `cap` bytes (then the caller falls
    back to the interpreter, which has explicit caps). Clamps reads so a declared huge length allocates
    nothing."""

    def __init__(self, stream: Any, cap: int) -> None:
        self.stream, self.cap, self.used = stream, cap, 0

    def readable(self) -> bool:
        return True

    def _take(self, n: int) -> int:
        room = self.cap - self.used
        # an opcode's argument that crosses the cap is a pickle longer than the cap, not a truncated one
        if room <= 0 or (n is not None and n > room):
            raise TooBigForFastPath
        return room if n is None or n < 0 else n

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self.stream.read(self._take(n))
        self.used += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        data = self.stream.readline(self._take(size if size is not None else -1))
        self.used += len(data)
        if not data.endswith(b"\n") and self.used >= self.cap:  # a line cut by the cap, not by the file
            raise TooBigForFastPath
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


class StandIn(metaclass=FrozenClass):
    """Base of the inert classes the C unpickler receives for globals. Constructing one (REDUCE, NEWOBJ,
    INST, OBJ) never runs code from the file: it calls ckptlab's handler for a known call, or returns an
    `Obj` record. `__new__` returns that result, so `__init__` is never reached."""

    _global: Global
    _handler: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._handler is not None:
            return cls._handler(args)
        return Obj(cls._global, args)


_STAND_INS: dict[tuple[str, str, str | None], Any] = {}


def stand_in(module: str, name: str, context: str | None) -> Any:
    """The class a global resolves to (cached per name and context; immutable, see FrozenClass)."""
    key = (module, name, context)
    cls = _STAND_INS.get(key)
    if cls is None:
        qual = f"{module}.{name}"
        handler = handler_for(qual, context)
        if qual in TENSOR_REBUILDS and handler is not None:
            cls = TensorCall
        elif qual == "collections.OrderedDict" and handler is not None:
            cls = PickledDict
        else:
            g = Global(module, name)
            attrs = {"_global": g, "__slots__": ()}
            if handler is not None:
                attrs["_handler"] = staticmethod(handler)
            cls = FrozenClass(f"StandIn_{name}"[:100], (StandIn,), attrs)
            with contextlib.suppress(FormatError):  # a storage type: its dtype, found once, not per tensor
                STORAGE_CLASS_DTYPES[cls] = storage_dtype(g)
        _STAND_INS[key] = cls
    return cls


def as_global(x: Any) -> Any:
    """A `Global` for a stand-in class (the C path's value for an uncalled global); anything else as is."""
    if isinstance(x, FrozenClass):
        if x is TensorCall or x is PickledDict:
            return Global("torch._utils" if x is TensorCall else "collections", x.__name__)
        return getattr(x, "_global", x)
    return x


class StandInUnpickler(pickle.Unpickler):
    """CPython's C unpickler with `find_class` overridden: every global becomes an inert stand-in, nothing
    is imported (the "restricting globals" recipe of the pickle documentation, taken to its end)."""

    def __init__(self, file: Any, owner: RestrictedUnpickler) -> None:
        super().__init__(file, fix_imports=False, encoding="latin1")
        self._owner = owner

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise FormatError(None, "pickle: global name is not a string")
        ref = self._owner.record_global(module, name)
        if isinstance(ref, DtypeRef):
            return ref
        return stand_in(ref.module, ref.name, self._owner.context)

    def persistent_load(self, pid: Any) -> Any:
        return self._owner.persistent_load(pid)  # type: ignore[misc]


class TorchStandInUnpickler(StandInUnpickler):
    """For torch's own persistent ids: kept in StoragePid records (built in C) until `resolve`."""

    persistent_load = StoragePid  # type: ignore[assignment]


class NoPersistentIds(StandInUnpickler):
    def persistent_load(self, pid: Any) -> Any:
        raise FormatError(None, "pickle uses persistent ids where none are expected")


_CONTAINERS = (dict, PickledDict, list, tuple, set, frozenset, Obj)
_RESOLVED = (*_CONTAINERS, StoragePid, TensorRef)  # what `fix` must see besides TensorCall
_DEPTH = 64  # as deep as content analysis looks for tensors


def resolve(root: Any, storages: dict[str, StorageRef]) -> Any:
    """Replace the C walk's TensorCall / StoragePid records by validated TensorRef / StorageRef, in place
    for mutable containers (tuples and sets are rebuilt). Records nested deeper than content analysis looks
    stay as they are: inert, and ignored downstream. `storages` collects every storage by key."""
    return _Resolver(storages).fix(root, 0)


class _Resolver:
    # A class, not nested closures: a closure that calls itself is a reference cycle, and this one would
    # keep the whole object tree (through `done`) alive until the cyclic collector ran.
    __slots__ = ("done", "storages")

    def __init__(self, storages: dict[str, StorageRef]) -> None:
        self.done: dict[int, Any] = {}
        self.storages = storages

    def tensor(self, rec: TensorCall) -> TensorRef:
        t = tensor_from_call(rec)
        if t.storage.key not in self.storages:
            self.storages[t.storage.key] = t.storage
        return t

    def fix(self, x: Any, depth: int) -> Any:
        tx = type(x)
        if tx is TensorCall:
            return self.tensor(x)
        if tx is StoragePid:
            ref = storage_ref(x.args[0] if x.args else None)
            self.storages.setdefault(ref.key, ref)
            return ref
        if tx is TensorRef:  # built by a handler during the walk (a Parameter, a v3 tensor)
            self.storages.setdefault(x.storage.key, x.storage)
            return x
        if depth > _DEPTH or tx not in _CONTAINERS:
            return x
        key, done = id(x), self.done
        if key in done:
            return done[key]
        done[key] = x  # cycle guard: a container reached again while being fixed is left as is
        if tx is dict or tx is PickledDict:
            for k, v in x.items():
                tv = type(v)
                if tv is TensorCall:
                    x[k] = self.tensor(v)  # replacing a value keeps the dict's size: safe while iterating
                elif tv in _RESOLVED:
                    r = self.fix(v, depth + 1)
                    if r is not v:
                        x[k] = r
            return x
        if tx is list:
            for i, v in enumerate(x):
                tv = type(v)
                if tv is TensorCall:
                    x[i] = self.tensor(v)
                elif tv in _RESOLVED:
                    x[i] = self.fix(v, depth + 1)
            return x
        if tx is Obj:
            x.args = self.fix(x.args, depth + 1)
            x.state = self.fix(x.state, depth + 1)
            self.fix(x.items, depth + 1)
            self.fix(x.list_items, depth + 1)
            return x
        items = [self.fix(v, depth + 1) for v in x]  # tuple, set, frozenset: immutable or hashed, rebuilt
        if all(a is b for a, b in zip(items, x, strict=True)):
            return x
        try:
            new = tx(items)
        except TypeError:  # unhashable members of a rebuilt set: keep the records
            return x
        done[key] = new
        return new


def load_fast(stream: Any, cap: int, owner: RestrictedUnpickler) -> Any:
    """One pickle through the C unpickler; raises TooBigForFastPath once `cap` bytes are consumed."""
    budget = Budget(stream, cap)
    pl = owner.persistent_load
    if pl is None:
        u: StandInUnpickler = NoPersistentIds(budget, owner)
    elif owner.torch_ids:
        u = TorchStandInUnpickler(budget, owner)
    else:
        u = StandInUnpickler(budget, owner)
    value = u.load()
    return resolve(value, owner.storages)

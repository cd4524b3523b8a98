"""Walking pickles without importing or calling anything from the file.

Every global becomes an inert placeholder, every call an `Obj` record (or, for torch's tensor rebuilds, a
`TensorRef`); globals outside the allowlist are collected as unsafe. Two walkers build the same values:
pickles within the size cap go through CPython's C unpickler with inert stand-ins (`pickle_fast`; the size
bounds opcodes, memo and stack), larger ones through the interpreter here, over `pickletools.genops`, which
counts opcodes, nesting, stack and memo against explicit caps.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable
from typing import IO, Any

from ..dtypes import torch_dtype_name
from ..errors import FormatError, LimitError
from .limits import DEFAULT_LIMITS, Limits
from .pickle_allow import is_safe_global, python3_name
from .pickle_fast import TooBigForFastPath, as_global, load_fast
from .pickle_refs import DtypeRef, Global, Obj, PickledDict, StorageRef, TensorRef, handler_for, storage_ref

__all__ = [
    "DtypeRef",
    "Global",
    "Obj",
    "PickledDict",
    "RestrictedUnpickler",
    "StorageRef",
    "TensorRef",
    "as_global",
    "scan_globals",
    "torch_persistent_load",
]

PersistentLoad = Callable[[Any], Any]

# torch's persistent ids ('storage', type, key, location, numel) -> StorageRef
torch_persistent_load: PersistentLoad = storage_ref


class RestrictedUnpickler:
    """Walk one pickle from a binary stream. Construct, then call `load()`; repeat for sequential pickles.
    After `load()`, `unsafe` lists the globals outside the allowlist and `storages` every storage that a
    tensor referenced, by key."""

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
        self.torch_ids = persistent_load is torch_persistent_load
        self.context = context
        self.limits = limits
        self.globals_seen: list[str] = []
        self.unsafe: list[str] = []
        self.storages: dict[str, StorageRef] = {}

    def record_global(self, module: str, name: str) -> Global | DtypeRef:
        """Note a global (unsafe unless allowlisted) and return its placeholder; never imports it."""
        # report what Python 3 would resolve: protocol < 3 pickles (torch.save's default is 2) spell
        # builtins as __builtin__ and subprocess as commands; pickle maps them before the lookup
        module, name = python3_name(module, name)
        qual = f"{module}.{name}"
        if qual not in self.globals_seen:
            self.globals_seen.append(qual)
            # a dotted name is resolved attribute by attribute (protocol 4): `pkg.mod` + `os.system` reaches
            # os.system through the module's imports, whatever the module: never allowed
            if ("." in name or not is_safe_global(qual, self.context)) and qual not in self.unsafe:
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
            handler = handler_for(fn.qualname, self.context)
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
        every global resolved to an inert stand-in (`pickle_fast`); the size cap bounds its opcodes, memo and
        nesting. Larger ones go through the interpreter below, which counts each of those."""
        cap = self._fast_cap()
        if not self.lenient and cap > 0:
            start = self.stream.tell()
            try:
                return self._load_fast(cap)
            except (TooBigForFastPath, MemoryError):
                # too long for the size cap, or a length field the C unpickler tried to allocate (it
                # allocates a BYTEARRAY8's declared size up front): the interpreter reads such fields in
                # bounded pieces and names the problem
                self.stream.seek(start)
                self.globals_seen, self.unsafe, self.storages = [], [], {}
        return self._load_interpreted()

    def _fast_cap(self) -> int:
        # every opcode takes at least one byte, so a pickle no longer than the opcode, memo and stack caps
        # cannot exceed them; nesting is not a resource for the C unpickler (it does not recurse)
        lim = self.limits
        return min(lim.max_fast_pickle_bytes, lim.max_pickle_ops, lim.max_pickle_memo, lim.max_pickle_stack)

    def _load_fast(self, cap: int) -> Any:
        try:
            return load_fast(self.stream, cap, self)
        except (FormatError, TooBigForFastPath, MemoryError):
            raise
        except RecursionError:
            raise LimitError(None, "pickle: structure nested too deeply") from None
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
                    stack.append(self.record_global(module, gname))
                elif name == "STACK_GLOBAL":
                    gname = stack.pop()
                    module = stack.pop()
                    if not isinstance(module, str) or not isinstance(gname, str):
                        raise FormatError(None, "pickle: STACK_GLOBAL needs two strings")
                    stack.append(self.record_global(module, gname))
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
                    stack.append(self._call(self.record_global(module, gname), tuple(args)))
                elif name == "OBJ":
                    items = pop_mark()
                    if not items:
                        raise FormatError(None, "pickle: OBJ without class")
                    stack.append(self._call(items[0], tuple(items[1:])))
                elif name == "BUILD":
                    state = stack.pop()
                    target = stack[-1]
                    if isinstance(target, (Global, DtypeRef)):  # as the C path: it would set class attributes
                        raise FormatError(None, "pickle tries to set the state of a global")
                    if isinstance(target, Obj):
                        target.state = state
                elif name in ("PERSID", "BINPERSID"):
                    pid = arg if name == "PERSID" else stack.pop()
                    if self.persistent_load is None:
                        raise FormatError(None, "pickle uses persistent ids where none are expected")
                    ref = self.persistent_load(pid)
                    if type(ref) is StorageRef:
                        self.storages.setdefault(ref.key, ref)
                    stack.append(ref)
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


def scan_globals(stream: IO[bytes], limits: Limits, length: int) -> list[str]:
    """Unsafe globals referenced anywhere in one or more consecutive pickles (no execution): `stream` holds
    `length` bytes, read incrementally (so a huge declared string never gets allocated)."""
    found: list[str] = []
    start = stream.tell()
    while stream.tell() - start < length:
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

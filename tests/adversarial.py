"""Builders of crafted bytes for the bad-input, malicious and corpus tests.

Everything here returns bytes (or writes files) and never unpickles anything. The pickle assembler writes
protocol-2 opcodes by hand so a test can say exactly which global, persistent id or shape a stream holds,
without importing the callable it names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import pickletools
import re
import signal
import struct
import subprocess
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# ---------------------------------------------------------------- a tiny pickle assembler


@dataclass(frozen=True)
class G:
    """A global reference `module.name` (opcode GLOBAL)."""

    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """`fn(*args)` (REDUCE)."""

    fn: Any
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class PID:
    """A persistent id (BINPERSID): torch storages are `('storage', type, key, location, numel)`."""

    value: Any


@dataclass(frozen=True)
class Build:
    """`obj.__setstate__(state)` (BUILD)."""

    obj: Any
    state: Any


@dataclass(frozen=True)
class Raw:
    """Opcodes inserted verbatim (must leave exactly one value on the stack)."""

    ops: bytes


def ops(obj: Any) -> bytes:
    """Opcodes pushing `obj` (no PROTO, no STOP)."""
    if obj is None:
        return pickle.NONE
    if obj is True:
        return pickle.NEWTRUE
    if obj is False:
        return pickle.NEWFALSE
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return pickle.BININT1 + bytes([obj])
        if -(2**31) <= obj < 2**31:
            return pickle.BININT + struct.pack("<i", obj)
        enc = pickle.encode_long(obj)
        return pickle.LONG1 + bytes([len(enc)]) + enc
    if isinstance(obj, float):
        return pickle.BINFLOAT + struct.pack(">d", obj)
    if isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        return pickle.BINUNICODE + struct.pack("<I", len(b)) + b
    if isinstance(obj, bytes):
        if len(obj) < 256:
            return pickle.SHORT_BINBYTES + bytes([len(obj)]) + obj
        return pickle.BINBYTES + struct.pack("<I", len(obj)) + obj
    if isinstance(obj, tuple):
        if not obj:
            return pickle.EMPTY_TUPLE
        return pickle.MARK + b"".join(ops(x) for x in obj) + pickle.TUPLE
    if isinstance(obj, list):
        if not obj:
            return pickle.EMPTY_LIST
        return pickle.EMPTY_LIST + pickle.MARK + b"".join(ops(x) for x in obj) + pickle.APPENDS
    if isinstance(obj, dict):
        if not obj:
            return pickle.EMPTY_DICT
        body = b"".join(ops(k) + ops(v) for k, v in obj.items())
        return pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS
    if isinstance(obj, G):
        return pickle.GLOBAL + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    if isinstance(obj, Call):
        return ops(obj.fn) + ops(tuple(obj.args)) + pickle.REDUCE
    if isinstance(obj, PID):
        return ops(obj.value) + pickle.BINPERSID
    if isinstance(obj, Build):
        return ops(obj.obj) + ops(obj.state) + pickle.BUILD
    if isinstance(obj, Raw):
        return obj.ops
    raise TypeError(f"cannot assemble {type(obj).__name__}")


def asm(obj: Any, proto: int = 2) -> bytes:
    """A complete pickle stream holding `obj`."""
    return pickle.PROTO + bytes([proto]) + ops(obj) + pickle.STOP


def storage_pid(key: str, numel: int, stype: str = "FloatStorage", legacy: bool = False) -> PID:
    pid: tuple[Any, ...] = ("storage", G("torch", stype), key, "cpu", numel)
    return PID((*pid, None) if legacy else pid)


def tensor(
    key: str,
    storage_numel: int,
    shape: tuple[int, ...],
    stride: tuple[int, ...] | None = None,
    offset: int = 0,
    stype: str = "FloatStorage",
    legacy: bool = False,
) -> Call:
    """`torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`."""
    if stride is None:
        acc, st = 1, []
        for d in reversed(shape):
            st.append(acc)
            acc *= d
        stride = tuple(reversed(st))
    return Call(
        G("torch._utils", "_rebuild_tensor_v2"),
        (
            storage_pid(key, storage_numel, stype, legacy),
            offset,
            tuple(shape),
            tuple(stride),
            False,
            Call(G("collections", "OrderedDict")),
        ),
    )


def system_call(cmd: str) -> Call:
    """`os.system(cmd)`, spelled the way a hand-written exploit spells it."""
    return Call(G("os", "system"), (cmd,))


def inject(pickle_bytes: bytes, payload: Any) -> bytes:
    """Run `payload` first, drop its result, then continue with the original stream unchanged.

    The original memo is untouched (the payload uses no PUT), so the stream still decodes to the same value;
    a real unpickler would execute the payload on the way.
    """
    assert pickle_bytes[:1] == pickle.PROTO, "expects a stream starting with PROTO"
    return pickle_bytes[:2] + ops(payload) + pickle.POP + pickle_bytes[2:]


def stream_bounds(data: bytes, count: int) -> list[tuple[int, int]]:
    """[start, end) of the first `count` concatenated pickles in `data` (decoded by pickletools only)."""
    out, pos = [], 0
    f = io.BytesIO(data)
    for _ in range(count):
        for op, _arg, _p in pickletools.genops(f):
            if op.name == "STOP":
                break
        end = f.tell()
        out.append((pos, end))
        pos = end
    return out


# ---------------------------------------------------------------- payloads that WOULD run if unpickled


class ReduceTo:
    """An object whose pickle is `fn(*args)`: `pickle.dumps` writes the global of the real callable."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def payload_objects(marker: Path) -> dict[str, tuple[Any, str]]:
    """name -> (picklable object whose unpickling creates `marker`, the global it names)."""
    return {
        "system": (ReduceTo(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "exec": (ReduceTo(exec, touch_code(marker)), "builtins.exec"),
        "popen": (ReduceTo(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    }


# ---------------------------------------------------------------- safetensors


def st_bytes(header: Mapping[str, Any] | bytes, data: bytes = b"", declared: int | None = None) -> bytes:
    """`<u64 length><header><data>`; `declared` overrides the length field."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if declared is None else declared
    return struct.pack("<Q", n) + raw + data


def st_entry(dtype: str, shape: list[Any], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def st_valid() -> tuple[dict[str, Any], bytes]:
    """Two F32 tensors, a (2,2) then a (3,): 16 + 12 data bytes."""
    header = {"a": st_entry("F32", [2, 2], 0, 16), "b": st_entry("F32", [3], 16, 28)}
    return header, bytes(28)


# ---------------------------------------------------------------- torch zip


def zip_bytes(
    members: Iterable[tuple[str, bytes]],
    compress: Iterable[str] = (),
) -> bytes:
    """A zip with the given members, ZIP_STORED unless named in `compress` (deflated)."""
    compress = set(compress)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            method = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def torch_zip(
    data_pkl: bytes,
    storages: Mapping[str, bytes],
    prefix: str = "archive",
    compress: Iterable[str] = (),
    extra: Iterable[tuple[str, bytes]] = (),
) -> bytes:
    """The layout `torch.save` writes: `<prefix>/data.pkl`, `byteorder`, `data/<key>`, `version`."""
    members = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little")]
    members += [(f"{prefix}/data/{k}", v) for k, v in storages.items()]
    members += [(f"{prefix}/version", b"3\n"), *extra]
    return zip_bytes(members, {f"{prefix}/{c}" for c in compress})


def simple_state_pickle() -> bytes:
    """{'w': float32 (2, 3) on storage '0', 'b': float32 (3,) on storage '1'}."""
    return asm({"w": tensor("0", 6, (2, 3)), "b": tensor("1", 3, (3,))})


def simple_torch_zip(**kw: Any) -> bytes:
    return torch_zip(simple_state_pickle(), {"0": bytes(24), "1": bytes(12)}, **kw)


def rewrite_zip(
    src: bytes,
    replace: Mapping[str, bytes] | None = None,
    drop: Iterable[str] = (),
    compress: Iterable[str] = (),
) -> bytes:
    """Copy a zip member by member (stored), replacing or dropping members by name."""
    replace, drop = dict(replace or {}), set(drop)
    with zipfile.ZipFile(io.BytesIO(src)) as zf:
        members = [(n, replace.get(n, zf.read(n))) for n in zf.namelist() if n not in drop]
    return zip_bytes(members, compress)


def patch_central(z: bytes, member: str, offset: int, value: bytes) -> bytes:
    """Overwrite bytes at `offset` inside the central directory entry of `member`."""
    i = 0
    while (i := z.find(b"PK\x01\x02", i)) >= 0:
        (nl,) = struct.unpack("<H", z[i + 28 : i + 30])
        if z[i + 46 : i + 46 + nl] == member.encode():
            return z[: i + offset] + value + z[i + offset + len(value) :]
        i += 4
    raise AssertionError(member)


def member_name(src: bytes, suffix: str) -> str:
    with zipfile.ZipFile(io.BytesIO(src)) as zf:
        return next(n for n in zf.namelist() if n.endswith(suffix))


def eocd_offset(data: bytes) -> int:
    return data.rfind(b"PK\x05\x06")


def declare_zip_entries(data: bytes, n: int) -> bytes:
    """Patch the end-of-central-directory record to claim `n` entries (16-bit fields)."""
    i = eocd_offset(data)
    out = bytearray(data)
    out[i + 8 : i + 12] = struct.pack("<HH", n, n)
    return bytes(out)


# ---------------------------------------------------------------- torch legacy (pre-1.6 stream)


def legacy_bytes(
    obj_pickle: bytes,
    storages: list[tuple[str, int, bytes]],
    sys_info: bytes | None = None,
    keys: Any = None,
) -> bytes:
    """magic, protocol, sys-info, object pickle, key list, then per storage `<q numel><bytes>`."""
    if sys_info is None:
        sys_info = pickle.dumps(
            {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {"int": 4}}, 2
        )
    out = pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(LEGACY_PROTOCOL, 2) + sys_info + obj_pickle
    out += pickle.dumps([k for k, _, _ in storages] if keys is None else keys, 2)
    for _, numel, data in storages:
        out += struct.pack("<q", numel) + data
    return out


def simple_legacy(numel_header: int | None = None) -> bytes:
    """{'w': float32 (2, 3)} in the legacy layout; `numel_header` overrides the storage size header."""
    obj = asm({"w": tensor("0", 6, (2, 3), legacy=True)})
    data = legacy_bytes(obj, [("0", 6, bytes(24))])
    if numel_header is not None:
        cut = len(data) - 24 - 8
        data = data[:cut] + struct.pack("<q", numel_header) + data[cut + 8 :]
    return data


# ---------------------------------------------------------------- misc files

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- test helpers


class Hang(BaseException):
    """Raised by `time_limit`; a BaseException so the code under test cannot swallow it (TimeoutError is
    an OSError, which readers turn into 'cannot read')."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (SIGALRM): a hang fails the test, not the run."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def expect_error(
    path: Path,
    exc_type: type[Exception],
    cause: str | re.Pattern[str],
    limits: Any = None,
    budget_s: float = 5.0,
) -> Exception:
    """`read_meta(path)` fails with exactly `exc_type`, naming `path`, with `cause` (text or regex), fast."""
    from ckptlab import read_meta

    kw = {} if limits is None else {"limits": limits}
    t0 = time.monotonic()
    with time_limit(budget_s + 1):
        try:
            meta = read_meta(path, **kw)
        except Exception as e:
            err = e
        else:
            raise AssertionError(f"expected {exc_type.__name__}, got a result ({meta.format})")
    elapsed = time.monotonic() - t0
    # the most specific public class (ckptlab.errors), so an internal subclass still counts as its parent
    kind = next((c for c in type(err).__mro__ if c.__module__ == "ckptlab.errors"), type(err))
    assert kind is exc_type, f"expected {exc_type.__name__}, got {type(err).__name__}: {err}"
    assert err.path == str(path), err.path  # type: ignore[attr-defined]
    got = err.cause  # type: ignore[attr-defined]
    if isinstance(cause, str):
        assert got == cause
    else:
        assert cause.fullmatch(got), f"{got!r} does not match {cause.pattern!r}"
    assert str(err) == f"{path}: {got}"
    assert "\n" not in str(err)
    assert elapsed < budget_s, f"took {elapsed:.2f} s"
    return err


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`python -m ckptlab ARGS` in a subprocess (the real entry point, real exit code)."""
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CKPTLAB_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "ckptlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(out: str, err: str, path: Path | str) -> str:
    """stdout empty, stderr exactly `error: PATH: cause\\n`, no traceback; returns the cause."""
    assert out == ""
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    prefix = f"error: {path}: "
    assert err.startswith(prefix), err
    cause = err[len(prefix) : -1]
    assert cause
    return cause


# ---------------------------------------------------------------- malicious payload helpers


def payload_ops(obj: Any) -> Raw:
    """The opcodes `pickle.dumps(obj, 2)` writes for `obj`, without PROTO/STOP and without memo PUTs, so
    they can be spliced into another stream (see `inject`). Python 3 names (fix_imports=False): a protocol-4
    stream such as DCP's .metadata would not map `__builtin__` back to `builtins`."""
    data = pickletools.optimize(pickle.dumps(obj, protocol=2, fix_imports=False))
    assert data[:2] == b"\x80\x02" and data[-1:] == b"."
    return Raw(data[2:-1])


def wait_for(path: Path, seconds: float = 5.0) -> bool:
    """Whether `path` appears within `seconds` (a Popen payload runs `touch` in a child process)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.01)
    return path.exists()


class ExecutionAttempt(AssertionError):
    pass


@contextlib.contextmanager
def armed() -> Iterator[list[str]]:
    """Tripwires on the calls a payload (or a careless reader) would make: os.system, os.popen,
    subprocess.Popen, and pickle's own loaders. Any call raises ExecutionAttempt and is recorded."""
    import posix

    # the pickle walk subclasses pickle.Unpickler when it is first imported, which is lazy (on the first
    # read): import it before the class is swapped for a tripwire, whichever test module runs first
    import ckptlab.formats.pickle_fast  # noqa: F401

    calls: list[str] = []

    def trip(name: str) -> Any:
        def fn(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise ExecutionAttempt(f"{name} called while reading an untrusted file")

        return fn

    targets = [
        (os, "system"),
        (posix, "system"),
        (os, "popen"),
        (subprocess, "Popen"),
        (pickle, "loads"),
        (pickle, "load"),
        (pickle, "Unpickler"),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name in targets]
    try:
        for mod, name in targets:
            setattr(mod, name, trip(f"{mod.__name__}.{name}"))
        yield calls
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)

"""safetensors: the 8-byte length + JSON header, parsed and checked as strictly as the reference.

Checks mirror `safetensors` (Rust) `Metadata::validate`: header starts with `{`, known dtypes, offsets
contiguous from 0 with no gap or overlap, `end - begin == numel * itemsize`, the data buffer ends exactly at
the end of the file; plus a tighter header cap and duplicate-key detection (serde silently keeps the last).

Two paths give one result: `_fast_parse` (msgspec decodes typed entries in C, Python checks sizes and
offsets) takes every well-formed header; anything else goes through `_parse_json` + `parse_tensors`, which
check rule by rule and word the error. Tests compare the two, by hand-made and by fuzzed headers.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Sequence
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import msgspec

from ..dtypes import DTYPE_BITS, SAFETENSORS_DTYPES
from ..errors import FormatError, LimitError
from ..model import CheckpointMeta, Entry, SafetensorsLocation, TensorMeta, plural
from .limits import DEFAULT_LIMITS, Limits

_U64_MAX = 2**64 - 1


def _no_duplicates(path: str | Path) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise FormatError(str(path), f"duplicate key {k!r} in safetensors header")
            if not _is_scalar_utf8(k) or (isinstance(v, str) and not _is_scalar_utf8(v)):
                # serde_json (the reference) rejects unpaired surrogate escapes such as "\ud800"
                raise FormatError(
                    str(path), "safetensors header is not valid JSON (unpaired surrogate escape)"
                )
            out[k] = v
        return out

    return hook


def _is_scalar_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity / -Infinity; JSON (and the reference) does not
    raise ValueError(f"{name} is not JSON")


def read_raw_header(
    path: str | Path, limits: Limits = DEFAULT_LIMITS, prefix: tuple[int, bytes] | None = None
) -> tuple[int, bytes, int]:
    """(header length N, the N header bytes, file size) of a safetensors file; validates framing only.
    `prefix`: (file size, first bytes) already read by detection, used instead of reopening when they hold
    it all."""
    p = str(path)
    size = prefix[0] if prefix else os.path.getsize(path)
    if size < 8:
        raise FormatError(p, f"file too small for a safetensors header ({size} bytes)")
    if prefix and len(prefix[1]) >= 8:
        (n,) = struct.unpack("<Q", prefix[1][:8])
        if 8 + n <= len(prefix[1]) and n <= size - 8 and n <= limits.max_header_bytes:
            return n, prefix[1][8 : 8 + n], size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:  # the file shrank since it was sized (being rewritten?)
            raise FormatError(p, f"file too small for a safetensors header ({len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > limits.max_header_bytes:
            raise LimitError(
                p, f"safetensors header length {n} exceeds the {limits.max_header_bytes}-byte cap"
            )
        if n > size - 8:
            raise FormatError(
                p, f"safetensors header length {n} runs past the end of the file ({size} bytes)"
            )
        return n, f.read(n), size


def _parse_json(p: str, raw: bytes) -> dict[str, Any]:
    """The exact parse, for the headers `_fast_parse` does not take: duplicate keys, unpaired surrogate
    escapes and NaN/Infinity refused, each problem named the way the reference would."""
    if not raw.startswith(b"{"):
        raise FormatError(p, "safetensors header does not start with '{'")
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_duplicates(p), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise FormatError(p, "safetensors header is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise FormatError(p, f"safetensors header is not valid JSON ({e.msg} at byte {e.pos})") from None
    except RecursionError:
        raise FormatError(p, "safetensors header JSON nested too deeply") from None
    except ValueError as e:  # integers past int_max_str_digits, NaN/Infinity
        raise FormatError(p, f"safetensors header is not valid JSON ({str(e).split(':')[0]})") from None
    if not isinstance(header, dict):
        _not_an_object(p)
    return header


def _not_an_object(p: str) -> NoReturn:
    raise FormatError(p, "safetensors header is not a JSON object")


def parse_tensors(
    path: str | Path, n: int, header: dict[str, Any], limits: Limits, size: int
) -> tuple[list[TensorMeta], dict[str, str]]:
    """Validate every entry against the reference rules; return tensors in file order and `__metadata__`."""
    p = str(path)
    meta = header.get("__metadata__")
    if meta is None:  # absent, or null (which the reference accepts)
        meta = {}
    # `false`, `[]`, `""`, `0` too: the reference refuses anything but an object of strings (or null)
    if not isinstance(meta, dict) or any(type(k) is not str or type(v) is not str for k, v in meta.items()):
        raise FormatError(p, "safetensors __metadata__ must map strings to strings")
    n_entries = len(header) - ("__metadata__" in header)
    if n_entries > limits.max_tensors:
        raise LimitError(p, f"{n_entries} tensors exceed the cap of {limits.max_tensors}")
    loc = SafetensorsLocation(p)  # one per file: the key is the tensor's name
    parsed: list[tuple[int, int, TensorMeta]] = []
    new = tuple.__new__
    codes = SAFETENSORS_DTYPES
    dtype_bits, u64 = DTYPE_BITS, _U64_MAX
    for name, info in header.items():
        # the lean checks every well-formed entry passes; any failure re-checks the entry rule by rule
        # (`_entry_error`) to name what is wrong. This loop runs once per tensor of every file read.
        if name == "__metadata__":
            continue
        try:
            dtype = codes[info["dtype"]]
            shape = info["shape"]
            begin, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            _entry_error(p, name, info)
        numel = 1
        if type(shape) is not list:
            _entry_error(p, name, info)
        for d in shape:
            if type(d) is not int or d < 0:
                _entry_error(p, name, info)
            numel *= d
            if numel > u64 or d > u64:  # as the reference's checked fold: an overflow before a 0 counts
                _entry_error(p, name, info)
        nbytes = numel * dtype_bits[dtype]
        if (
            type(begin) is not int
            or type(end) is not int
            or begin < 0
            or nbytes & 7
            or end - begin != nbytes >> 3
            or end > u64
            or nbytes > u64
        ):
            _entry_error(p, name, info)
        parsed.append((begin, end, new(TensorMeta, (name, tuple(shape), dtype, nbytes >> 3, None, loc))))
    parsed.sort(key=_BY_OFFSETS)
    expected = 0
    for begin, end, tm in parsed:
        if begin != expected:
            what = (
                "overlaps the previous tensor" if begin < expected else f"leaves a gap after byte {expected}"
            )
            raise FormatError(p, f"tensor {tm.name!r}: data_offsets [{begin}, {end}] {what}")
        expected = end
    buffer_len = size - 8 - n
    if expected != buffer_len:
        if expected > buffer_len:
            raise FormatError(
                p, f"truncated: tensors need {expected} data bytes but the file holds {buffer_len}"
            )
        raise FormatError(p, f"{buffer_len - expected} trailing bytes after the last tensor")
    return [t for _, _, t in parsed], meta


_BY_OFFSETS = itemgetter(0, 1)


def _entry_error(p: str, name: str, info: Any) -> NoReturn:
    """The first reference rule a header entry breaks, as a FormatError naming the tensor."""
    if type(info) is not dict:
        raise FormatError(p, f"tensor {name!r}: entry is not an object")
    dtype = SAFETENSORS_DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
    if dtype is None:
        raise FormatError(p, f"tensor {name!r}: unknown dtype {info.get('dtype')!r}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if type(shape) is not list or any(type(d) is not int or d < 0 or d > _U64_MAX for d in shape):
        raise FormatError(p, f"tensor {name!r}: shape must be a list of non-negative integers")
    if (
        type(offsets) is not list
        or len(offsets) != 2
        or any(type(o) is not int or o < 0 or o > _U64_MAX for o in offsets)
    ):
        raise FormatError(p, f"tensor {name!r}: data_offsets must be two non-negative integers")
    begin, end = offsets
    if _overflows(shape):  # stopping at the first overflow: a long shape of huge numbers must not take long
        raise FormatError(p, f"tensor {name!r}: shape {_short(shape)} overflows")
    numel = math.prod(shape)  # no overflow before a 0: small, or 0 from there on
    bits = numel * DTYPE_BITS[dtype]
    if bits > _U64_MAX:
        raise FormatError(p, f"tensor {name!r}: shape {_short(shape)} overflows")
    if bits % 8:
        raise FormatError(p, f"tensor {name!r}: {numel} elements of {dtype} are not a whole number of bytes")
    if end < begin:
        raise FormatError(p, f"tensor {name!r}: data_offsets end {end} before begin {begin}")
    need = bits // 8
    span = end - begin
    raise FormatError(
        p, f"tensor {name!r}: data_offsets span {span} bytes but shape {_short(shape)} {dtype} needs {need}"
    )


def read_safetensors(
    path: str | Path, limits: Limits = DEFAULT_LIMITS, prefix: tuple[int, bytes] | None = None
) -> CheckpointMeta:
    n, raw, size = read_raw_header(path, limits, prefix)
    p = str(path)
    fast = _fast_parse(p, raw, size - 8 - n, limits)
    if fast is not None:
        tensors, meta = fast
    else:  # anything unusual: the exact checks, which name what is wrong
        tensors, meta = parse_tensors(path, n, _parse_json(p, raw), limits, size)
    entries, step, epoch = (), None, None
    if meta:
        entries = (Entry("__metadata__", "dict", plural(len(meta), "string key")),)
        step = _int_or_none(meta.get("step") or meta.get("global_step"))
        epoch = _num_or_none(meta.get("epoch"))
    return CheckpointMeta(
        path=p,
        format="safetensors",
        size_bytes=size,
        tensors=tuple(tensors),
        step=step,
        epoch=epoch,
        metadata=dict(meta),
        entries=entries,
        files=(p,),
    )


# The fast path. msgspec decodes the header straight into typed entries in C, and on the way checks what
# the Python loop of `parse_tensors` checks per value: strict JSON and UTF-8, a known dtype, a shape of
# non-negative integers, exactly two non-negative integer offsets. What is left per tensor is the size rule.
# It accepts a subset of what the exact path accepts and builds the same result (tests compare the two on
# every fixture); anything it does not accept goes to the exact path, so errors are worded in one place.
# Integers above 2**63 - 1 are beyond msgspec's bounds: such headers take the exact path too.
_Offset = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class _Entry(msgspec.Struct, gc=False):
    # defaults only so that `__metadata__` (and a malformed entry) decode too; a None fails the loop
    dtype: Literal[tuple(SAFETENSORS_DTYPES)] | None = None  # type: ignore[valid-type]
    shape: tuple[_Offset, ...] | None = None
    data_offsets: tuple[_Offset, _Offset] | None = None


class _Metadata(msgspec.Struct, gc=False):
    metadata: dict[str, str] | None = msgspec.field(default=None, name="__metadata__")


_DECODE_ENTRIES = msgspec.json.Decoder(dict[str, _Entry]).decode
_DECODE_METADATA = msgspec.json.Decoder(_Metadata).decode
_CODES = {code: (name, DTYPE_BITS[name]) for code, name in SAFETENSORS_DTYPES.items()}
_NOT_TAKEN = (KeyError, TypeError, ValueError, RecursionError, msgspec.MsgspecError)


def _fast_parse(
    p: str, raw: bytes, buffer_len: int, limits: Limits
) -> tuple[list[TensorMeta], dict[str, str]] | None:
    """Tensors in file order and `__metadata__` for a well-formed header, or None: take the exact path."""
    if not raw.startswith(b"{") or buffer_len > _U64_MAX >> 3:  # the reference counts bits in a u64
        return None
    try:
        header = _DECODE_ENTRIES(raw)
        has_meta = header.pop("__metadata__", None) is not None
        meta = _metadata(raw) if has_meta else {}
        # JSON parsers keep the last of duplicate keys silently. Every key is followed by one `:`, so when
        # the colons in the text are exactly the keys parsed (top level, 3 per tensor, the metadata's), no
        # key was dropped; a `:` inside a string only adds to the count (and sends the header the exact way).
        if raw.count(b":") != len(header) * 4 + has_meta + len(meta) or len(header) > limits.max_tensors:
            return None
        loc = SafetensorsLocation(p)  # one per file: the key is the tensor's name
        new, codes, prod, out = tuple.__new__, _CODES, math.prod, []
        add = out.append
        end_of_last = 0  # writers list tensors in file order: then each begins where the one before ended
        for name, e in header.items():  # runs once per tensor of every file read: kept lean
            dtype, bits = codes[e.dtype]
            begin, end = e.data_offsets
            shape = e.shape
            if len(shape) > 64:  # the product of a long shape of huge numbers takes long: the exact path
                return None  # stops at the first overflow
            nbits = prod(shape) * bits
            if nbits & 7 or end - begin != nbits >> 3 or (not nbits and _overflows(shape)):
                return None
            # -1: not in file order (or not contiguous), sorted and checked below; no begin matches it again
            end_of_last = end if begin == end_of_last else -1
            add(new(TensorMeta, (name, shape, dtype, end - begin, None, loc)))
    except _NOT_TAKEN:
        return None
    if end_of_last >= 0:  # contiguous from 0 in listing order: ends exactly where the data does?
        return (out, meta) if end_of_last == buffer_len else None
    keyed = sorted(zip(map(_OFFSETS, header.values()), out, strict=True), key=_FIRST)
    # contiguous from 0 to the end of the file: each begin is the previous end. Every size is then at most
    # the data's length, whose bits fit a u64 (checked above): no product of a non-empty tensor overflowed.
    flat = list(chain.from_iterable(map(_FIRST, keyed)))
    if flat[0] != 0 or flat[-1] != buffer_len or flat[1:-1:2] != flat[2::2]:
        return None
    return list(map(_SECOND, keyed)), meta


# A header written by the reference starts with its metadata: `{"__metadata__":{"k":"v",...},...`. That
# object alone is decoded, not the whole header a second time; anything else (spaces, another order) is
# decoded whole. Strings cannot hold a bare `"`, so the pattern matches one way only (no backtracking).
_META_FIRST = re.compile(rb'\{"__metadata__":(\{(?:"(?:[^"\\]|\\.)*"[:,]?)*\})')
_DECODE_STR_DICT = msgspec.json.Decoder(dict[str, str]).decode
_META_SCAN = 1 << 16  # the pattern runs in Python's regex engine (~0.15 s per MB): longer metadata is decoded


def _metadata(raw: bytes) -> dict[str, str]:
    m = _META_FIRST.match(raw, 0, _META_SCAN)
    if m is not None:
        try:
            return _DECODE_STR_DICT(m.group(1))
        except msgspec.MsgspecError:
            pass  # not what it looked like: the whole header says what it is
    return _DECODE_METADATA(raw).metadata or {}


_OFFSETS = attrgetter("data_offsets")
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def _short(shape: list[int]) -> str:
    """A shape for a message: a crafted one can hold a million dimensions."""
    if len(shape) <= 8:
        return str(shape)
    return "[" + ", ".join(map(str, shape[:8])) + f", ... ({len(shape)} dimensions)]"


def _overflows(shape: Sequence[int]) -> bool:
    """Whether the product of `shape` passes a u64 before reaching a 0 (an empty tensor's shape)."""
    numel = 1
    for d in shape:
        numel *= d
        if numel > _U64_MAX:
            return True
    return False


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _num_or_none(v: str | None) -> int | float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    if not math.isfinite(f):  # "nan" / "inf" strings: not an epoch (and not representable in JSON)
        return None
    return int(f) if f.is_integer() else f

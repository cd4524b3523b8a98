"""The fast metadata paths agree with the slow, checked ones: the C pickle walk with the interpreter, the
torch zip directory reader with zipfile, the msgspec safetensors header path with the exact checks, and
the GC pause leaves the collector as it found it."""

from __future__ import annotations

import gc
import io
import json
import random
import struct
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from adversarial import assert_one_line_error, run_cli, st_bytes, st_entry, torch_zip

from ckptlab.errors import FormatError, LimitError
from ckptlab.formats import read_meta
from ckptlab.formats import safetensors_reader as st
from ckptlab.formats.limits import DEFAULT_LIMITS, Limits
from ckptlab.formats.pickle_refs import TensorRef
from ckptlab.formats.pickle_vm import RestrictedUnpickler
from ckptlab.formats.zipdir import ZipDirectory, _zip64

torch = pytest.importorskip("torch")

INTERPRETED = Limits(max_fast_pickle_bytes=0)  # forces ckptlab's own pickle interpreter


def _nested_checkpoint() -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=g)
    return {
        "pair": (w, torch.zeros(3, dtype=torch.bfloat16)),  # tensors in a tuple: rebuilt, not mutated
        "view": w[:, 1:3],  # a strided view into a shared storage
        "t": w.t(),  # non-contiguous
        "offset": w[2],  # storage offset
        "empty": torch.empty(0, 5),
        "scalar": torch.tensor(3.5),
        "deep": {"a": [{"b": (torch.ones(2),)}]},
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "int": 7,
    }


@pytest.mark.parametrize("legacy", [False, True])
def test_c_walk_matches_the_interpreter(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "nested.pt"
    torch.save(_nested_checkpoint(), path, _use_new_zipfile_serialization=not legacy)
    fast, slow = read_meta(path), read_meta(path, limits=INTERPRETED)
    assert fast.to_json() == slow.to_json()
    every = fast.tensors + fast.other_tensors
    assert [t.loc for t in every] == [t.loc for t in slow.tensors + slow.other_tensors]
    names = {t.name: t for t in every}
    assert names["pair.0"].shape == (4, 6) and names["pair.1"].dtype == "bfloat16"
    assert names["t"].loc.stride == (1, 6) and names["view"].loc.stride == (6, 1)
    assert names["offset"].loc.storage_offset == 12 and names["offset"].loc.stride is None
    assert names["a.0.b.0"].shape == (2,)  # "deep" is the one dict of tensors: taken as the model
    assert names["empty"].shape == (0, 5) and names["scalar"].shape == ()


@pytest.mark.parametrize("cap", [100, 101, 1000, 1003, 4097])
@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_longer_than_the_fast_cap_falls_back_wherever_the_cap_cuts(
    tmp_path: Path, legacy: bool, cap: int
) -> None:
    """Past `max_fast_pickle_bytes` the interpreter takes over. An opcode whose argument crosses the cap
    (a name, a string) is a longer pickle, never a truncated one: a 60,000-tensor state dict (5.8 MB of
    data.pkl) failed with 'pickle data was truncated' before."""
    path = tmp_path / "many.pt"
    torch.save({f"layer.{i}.weight": torch.zeros(1) for i in range(300)}, path,
               _use_new_zipfile_serialization=not legacy)  # fmt: skip
    capped = read_meta(path, limits=Limits(max_fast_pickle_bytes=cap))
    assert capped.to_json() == read_meta(path).to_json() and capped.n_tensors == 300


def test_a_tensor_view_past_its_storage_is_refused_on_both_walks(tmp_path: Path) -> None:
    path = tmp_path / "big_view.pt"
    t = torch.arange(6.0)
    torch.save({"w": t}, path)
    # the storage holds 6 floats; claim a 4x3 view of it in data.pkl (both walks must refuse it)
    with zipfile.ZipFile(path) as zf:
        pkl = zf.read("big_view/data.pkl")
    bad = pkl.replace(b"K\x06\x85", b"K\x0c\x85", 1)  # shape (6,) -> (12,)
    assert bad != pkl
    out = tmp_path / "bad.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, bad if info.filename.endswith("data.pkl") else src.read(info))
    for limits in (DEFAULT_LIMITS, INTERPRETED):
        with pytest.raises(FormatError, match="tensor view reaches element 11 of a 6-element storage"):
            read_meta(out, limits=limits)


def test_records_never_escape_the_c_walk() -> None:
    buf = io.BytesIO()
    torch.save({"x": [torch.ones(1)] * 3, "s": {"k": (torch.zeros(2), 1)}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    u = RestrictedUnpickler(io.BytesIO(pkl))
    root = u.load()
    assert all(type(t) is TensorRef for t in root["x"]) and root["x"][0] == root["x"][2]
    assert type(root["s"]["k"][0]) is TensorRef
    assert set(u.storages) == {"0", "1"}


def test_zip_directory_matches_zipfile(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({f"w{i}": torch.ones(i + 1) for i in range(40)}, path)
    with open(path, "rb") as f, zipfile.ZipFile(path) as zf:
        zd = ZipDirectory(f, path.stat().st_size, str(path), DEFAULT_LIMITS)
        assert zd.namelist() == zf.namelist()
        for info in zf.infolist():
            m = zd.members[info.filename]
            assert (m.header_offset, m.file_size, m.compress_size, m.crc, m.compress_type) == (
                info.header_offset, info.file_size, info.compress_size, info.CRC, info.compress_type,
            )  # fmt: skip
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        assert zd.read_stored(pkl) == zf.read(pkl)


def test_zip_directory_with_data_prepended(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save({"w": torch.arange(4.0)}, src)
    data = src.read_bytes()
    plain = ZipDirectory(io.BytesIO(data), len(data), "m", DEFAULT_LIMITS)
    shifted = ZipDirectory(io.BytesIO(b"\0" * 1000 + data), len(data) + 1000, "s", DEFAULT_LIMITS)
    for name, m in plain.members.items():  # every offset moves with the data, as zipfile allows
        assert shifted.members[name].header_offset == m.header_offset + 1000
    name = next(n for n in plain.namelist() if n.endswith("data.pkl"))
    assert shifted.read_stored(name) == plain.read_stored(name)


def test_zip64_extra_field() -> None:
    big = 5 * 2**32
    extra = struct.pack("<HHQQ", 1, 16, big, big + 7)  # sizes overflowed, offset did not
    assert _zip64(extra, 0xFFFFFFFF, 0xFFFFFFFF, 123, "p") == (big, big + 7, 123)
    with pytest.raises(FormatError, match="zip64"):
        _zip64(b"", 0xFFFFFFFF, 10, 10, "p")


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_state_is_restored(tmp_path: Path, enabled: bool) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(3)}, path)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        read_meta(path)
        with pytest.raises(FormatError):
            read_meta(tmp_path / "missing.pt")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_keeping_pause_moves_what_it_built_to_the_oldest_generation(enabled: bool) -> None:
    from ckptlab.formats import gc_paused

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        gc.collect()
        with gc_paused.keeping():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]
            cycle: list[object] = []
            cycle.append(cycle)
            ref = weakref.ref(_Node(cycle))  # garbage in a cycle, to be found by a full collection
        assert gc.isenabled() is enabled
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert enabled is (id(kept) in oldest and id(kept[0]) in oldest)  # promoted only when re-enabling
        del cycle
        gc.collect()
        assert ref() is None  # promoted, not leaked
    finally:
        gc.enable() if was else gc.disable()


class _Node:
    def __init__(self, other: object) -> None:
        self.me, self.other = self, other


def test_reads_leave_no_reference_cycles(tmp_path: Path) -> None:
    """The GC is paused during reads on the promise that they leave no cyclic garbage behind."""
    path = tmp_path / "m.pt"
    torch.save({"model": {"w": torch.ones(2, 3)}, "opt": {"state": {0: {"m": torch.zeros(2)}}}}, path)
    legacy = tmp_path / "l.pt"
    torch.save({"w": (torch.ones(2),)}, legacy, _use_new_zipfile_serialization=False)
    read_meta(path), read_meta(legacy)  # imports and caches first
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            read_meta(path), read_meta(legacy)
        assert gc.collect() == 0
    finally:
        if was:
            gc.enable()


HUGE_BYTEARRAY = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01\x96" + (2**62).to_bytes(8, "little") + b"s."


def test_a_huge_declared_bytearray_is_refused_without_allocating() -> None:
    """The C unpickler allocates a BYTEARRAY8's declared size up front: a failed allocation falls back to
    the interpreter, which reads in bounded pieces and names the problem."""
    with pytest.raises(FormatError, match=r"expected 4611686018427387904 bytes in a bytearray8, but only 2"):
        RestrictedUnpickler(io.BytesIO(HUGE_BYTEARRAY)).load()


def test_cli_reports_a_huge_bytearray_in_one_line(tmp_path: Path) -> None:
    # CPython 3.11 also prints a SystemError from the failed allocation: the CLI keeps stderr to one line
    path = tmp_path / "ba.pt"
    path.write_bytes(torch_zip(HUGE_BYTEARRAY, {}))
    r = run_cli("inspect", str(path), timeout=60)
    assert r.returncode == 1
    assert assert_one_line_error(r.stdout, r.stderr, path).startswith("data.pkl: malformed pickle")


# ---------------------------------------------------------------- safetensors: msgspec path vs exact


def _st_header() -> tuple[bytes, int]:
    """A header exercising what the fast path handles: metadata, offsets out of key order, a scalar, a
    zero-size tensor, a sub-byte dtype, and names with dots and digits; returns (raw, buffer length)."""
    entries = {
        "__metadata__": {"format": "pt", "step": "12"},
        "z.weight": st_entry("BF16", [3, 4], 0, 24),
        "a.bias": st_entry("F32", [4], 28, 44),
        "scalar": st_entry("I64", [], 44, 52),
        "empty": st_entry("F16", [0, 7], 52, 52),
        "fp4": st_entry("F4", [2, 2], 24, 26),
        "mask": st_entry("BOOL", [2], 26, 28),
    }
    return json.dumps(entries, separators=(",", ":")).encode().ljust(256), 52


def _st_header_in_order() -> tuple[bytes, int]:
    """A header as the reference writes it: metadata first (with braces, commas and escaped quotes inside
    its strings), then the tensors in file order."""
    entries = {
        "__metadata__": {"format": "pt", "note": 'a "quoted" {brace}, \\ and more'},
        "a.weight": st_entry("F32", [2, 2], 0, 16),
        "b": st_entry("I8", [3], 16, 19),
        "c.empty": st_entry("F16", [0], 19, 19),
        "d.bias": st_entry("BF16", [1], 19, 21),
    }
    return json.dumps(entries, separators=(",", ":")).encode().ljust(200), 21


def _exact(raw: bytes, buffer_len: int, limits: Limits = DEFAULT_LIMITS) -> object:
    size = 8 + len(raw) + buffer_len
    try:
        return st.parse_tensors("m", len(raw), st._parse_json("m", raw), limits, size)
    except (FormatError, LimitError) as e:
        return e


def test_safetensors_fast_path_matches_the_exact_checks() -> None:
    raw, buffer_len = _st_header()
    fast = st._fast_parse("m", raw, buffer_len, DEFAULT_LIMITS)
    assert fast is not None, "a plain header must take the fast path"
    assert fast == _exact(raw, buffer_len)
    tensors, meta = fast
    assert [t.name for t in tensors] == ["z.weight", "fp4", "mask", "a.bias", "scalar", "empty"]
    assert [t.nbytes for t in tensors] == [24, 2, 2, 16, 8, 0] and tensors[4].shape == ()
    assert meta == {"format": "pt", "step": "12"}
    assert st._fast_parse("m", b"{}", 0, DEFAULT_LIMITS) == ([], {})


def test_safetensors_fast_path_on_a_header_in_file_order() -> None:
    # the common layout takes the fast path without sorting; the metadata object is decoded on its own
    raw, buffer_len = _st_header_in_order()
    fast = st._fast_parse("m", raw, buffer_len, DEFAULT_LIMITS)
    assert fast is not None and fast == _exact(raw, buffer_len)
    tensors, meta = fast
    assert [t.name for t in tensors] == ["a.weight", "b", "c.empty", "d.bias"]
    assert meta == {"format": "pt", "note": 'a "quoted" {brace}, \\ and more'}
    for blen in (buffer_len - 1, buffer_len + 1):  # the data must end exactly where the last tensor does
        assert st._fast_parse("m", raw, blen, DEFAULT_LIMITS) is None
    # not the reference's layout: the whole header is decoded for the metadata
    spaced = raw.replace(b'"__metadata__":{', b'"__metadata__": {')
    assert st._fast_parse("m", spaced, buffer_len, DEFAULT_LIMITS) == fast


def test_metadata_longer_than_the_pattern_scans_is_decoded_whole() -> None:
    # the metadata pattern looks at the first 64 KiB only (Python's regex engine takes ~0.15 s per MB); a
    # longer metadata object is decoded with the whole header, to the same result
    meta = {f"key{i:05d}": "v" * 20 for i in range(3000)}
    header = {"__metadata__": meta, "a": st_entry("F32", [1], 0, 4)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert len(raw) > st._META_SCAN
    fast = st._fast_parse("m", raw, 4, DEFAULT_LIMITS)
    assert fast is not None and fast == _exact(raw, 4) and fast[1] == meta


@pytest.mark.parametrize("value", [b"false", b"[]", b'""', b"0", b"true"])
def test_metadata_that_is_not_an_object_is_refused(value: bytes) -> None:
    # the reference accepts an object of strings or null; the exact path used to let falsy values through
    raw = b'{"__metadata__":' + value + b',"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    assert st._fast_parse("m", raw, 4, DEFAULT_LIMITS) is None
    err = _exact(raw, 4)
    assert isinstance(err, FormatError)
    assert err.cause == "safetensors __metadata__ must map strings to strings"


def test_a_header_longer_than_the_first_read(tmp_path: Path) -> None:
    # detection reads 4 KiB; the rest of a longer header is read on the same descriptor, not reopened
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    header |= {f"layer.{i:03d}.weight": st_entry("F32", [2], 8 * i, 8 * i + 8) for i in range(400)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert len(raw) > 4 * 4096
    path = tmp_path / "model.safetensors"
    path.write_bytes(st_bytes(raw, bytes(8 * 400)))
    meta = read_meta(path)
    assert meta.n_tensors == 400 and meta.metadata == {"format": "pt"}
    assert [t.name for t in meta.tensors[:2]] == ["layer.000.weight", "layer.001.weight"]
    # the same file cut inside its header: one clear error, whichever read notices it
    path.write_bytes(st_bytes(raw)[: 4096 * 2])
    with pytest.raises(FormatError, match="runs past the end of the file"):
        read_meta(path)


@pytest.mark.parametrize(
    "raw, buffer_len",
    [
        (
            b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],'
            b'"data_offsets":[0,4]}}',
            4,
        ),  # a duplicate tensor: JSON parsers keep the last silently
        (b'{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4),  # duplicate field
        (b'{"__metadata__":{"k":"1","k":"2"}}', 0),  # duplicate metadata key
        (b'{"a:b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4),  # a colon in a name: valid
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}', 4),  # an extra field: valid
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 8),  # trailing bytes
        (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', 4),  # size rule
        (b'{"a":{"dtype":"F4","shape":[1],"data_offsets":[0,0]}}', 0),  # half a byte
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),  # a gap at the start
        (b'{"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,9223372036854775808]}}', 0),
        (b'{"__metadata__":null}', 0),  # the reference accepts a null metadata
        (b'{"__metadata__":{"step":5}}', 0),
        (b'{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', 4),
    ],
)
def test_safetensors_fast_path_declines_what_it_does_not_check(raw: bytes, buffer_len: int) -> None:
    # the exact checks then give the answer: an error, or (a colon in a name, an extra field, a null
    # metadata, offsets past 2**63) the same kind of result the fast path would have built
    assert st._fast_parse("m", raw, buffer_len, DEFAULT_LIMITS) is None


def test_safetensors_fast_path_takes_a_plain_header_within_the_cap() -> None:
    plain = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    assert st._fast_parse("m", plain, 4, DEFAULT_LIMITS) is not None
    assert st._fast_parse("m", plain, 4, Limits(max_tensors=0)) is None  # the cap is the exact path's error


@pytest.mark.parametrize("header", [_st_header, _st_header_in_order])
def test_safetensors_fast_path_never_accepts_what_the_exact_checks_refuse(
    header: Callable[[], tuple[bytes, int]],
) -> None:
    # differential fuzzing: random byte edits of a valid header; whenever the fast path answers, the exact
    # checks must give the same answer (never an error), and many edits (inside names) must stay fast
    raw, buffer_len = header()
    rng = random.Random(20261122)
    alphabet = b'{}[]":,. 0123456789aeFIUBx\\-'
    taken = 0
    for _ in range(3000):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            op = rng.randrange(3)
            if op == 0:
                b[i] = rng.choice(alphabet)
            elif op == 1:
                del b[i]
            else:
                b.insert(i, rng.choice(alphabet))
        edited = bytes(b)
        for blen in (buffer_len, buffer_len + 1):
            fast = st._fast_parse("m", edited, blen, DEFAULT_LIMITS)
            if fast is not None:
                taken += 1
                assert fast == _exact(edited, blen), edited
    assert taken > 100


@pytest.mark.parametrize(
    "raw, buffer_len, cause",
    [
        # 2**61 bytes are 2**64 bits: the reference counts bits in a u64
        (b'{"a":{"dtype":"U8","shape":[2305843009213693952],"data_offsets":[0,2305843009213693952]}}',
         2**61, "tensor 'a': shape [2305843009213693952] overflows"),
        # the reference's checked fold overflows before it reaches the 0
        (b'{"a":{"dtype":"U8","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}}',
         0, "tensor 'a': shape [4611686018427387904, 4611686018427387904, 0] overflows"),
        # a duplicate hidden from a count of `":` by a space
        (b'{"__metadata__":{"k":"1","k" :"2"}}', 0, "duplicate key 'k' in safetensors header"),
    ],
)  # fmt: skip
def test_safetensors_limits_the_reference_sets(raw: bytes, buffer_len: int, cause: str) -> None:
    assert st._fast_parse("m", raw, buffer_len, DEFAULT_LIMITS) is None
    err = _exact(raw, buffer_len)
    assert isinstance(err, FormatError) and err.cause == cause


def test_a_long_shape_of_huge_numbers_stops_at_the_first_overflow() -> None:
    # 100,000 dimensions of 2**63 - 1: multiplying them all out would take minutes
    raw = (
        b'{"a":{"dtype":"U8","shape":['
        + b",".join([b"9223372036854775807"] * 100_000)
        + b'],"data_offsets":[0,1]}}'
    )
    assert st._fast_parse("m", raw, 1, DEFAULT_LIMITS) is None
    err = _exact(raw, 1)
    assert isinstance(err, FormatError)
    first = ", ".join(["9223372036854775807"] * 8)
    assert err.cause == f"tensor 'a': shape [{first}, ... (100000 dimensions)] overflows"

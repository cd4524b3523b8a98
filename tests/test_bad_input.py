"""Bad input: truncated, empty, random, mislabelled, crafted or damaged files.

Each must fail through `read_meta` with the exact error type and one-line cause, fast and in bounded memory,
and through the CLI with exit code 1 and one `error: PATH: cause` line on stderr. Files whose content is a
valid checkpoint under the wrong extension must read correctly (exit 0). Inputs are built on the fly by
`adversarial.py`; tightened `Limits` keep the cap tests fast.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from adversarial import (
    PID,
    PNG_1x1,
    asm,
    assert_one_line_error,
    declare_zip_entries,
    eocd_offset,
    expect_error,
    legacy_bytes,
    ops,
    patch_central,
    rewrite_zip,
    run_cli,
    simple_legacy,
    simple_state_pickle,
    simple_torch_zip,
    st_bytes,
    st_entry,
    st_valid,
    stream_bounds,
    tensor,
    time_limit,
    torch_zip,
    write,
    zip_bytes,
)

from ckptlab import read_meta
from ckptlab.cli import main as cli_main
from ckptlab.errors import CkptlabError, FormatError, IncompleteError, LimitError
from ckptlab.formats.limits import Limits
from ckptlab.formats.pickle_vm import RestrictedUnpickler
from ckptlab.formats.safetensors_reader import read_safetensors

H, D = st_valid()  # {'a': F32 (2, 2) [0, 16], 'b': F32 (3,) [16, 28]} + 28 zero bytes
ANY_CAUSE = re.compile(r".+")
NOT_A_ZIP = "not a complete zip archive (no end-of-central-directory record; truncated?)"


def one(dtype: str, shape: list[Any], begin: int, end: int) -> dict[str, Any]:
    return {"a": st_entry(dtype, shape, begin, end)}


# ================================================================ safetensors

# id -> (file bytes, error type, cause, limits)
ST_CASES: dict[str, tuple[bytes, type[Exception], str | re.Pattern[str], Limits | None]] = {
    "length-over-cap": (
        st_bytes(H, D, declared=10**15),
        LimitError,
        "safetensors header length 1000000000000000 exceeds the 16777216-byte cap",
        None,
    ),
    "length-over-tightened-cap": (
        st_bytes(H, D),
        LimitError,
        re.compile(r"safetensors header length \d+ exceeds the 10-byte cap"),
        Limits(max_header_bytes=10),
    ),
    "length-past-end": (
        st_bytes(H, D, declared=1000),
        FormatError,
        re.compile(r"safetensors header length 1000 runs past the end of the file \(\d+ bytes\)"),
        None,
    ),
    "invalid-utf8": (
        st_bytes(b'{"\xff\xfe": 1}'),
        FormatError,
        "safetensors header is not valid UTF-8",
        None,
    ),
    "invalid-json": (
        st_bytes(b'{"a": ', D),
        FormatError,
        "safetensors header is not valid JSON (Expecting value at byte 6)",
        None,
    ),
    "json-nan": (
        st_bytes(b'{"a": NaN}'),
        FormatError,
        "safetensors header is not valid JSON (NaN is not JSON)",
        None,
    ),
    "json-integer-5000-digits": (
        st_bytes(
            b'{"a": {"dtype": "F32", "shape": [1' + b"0" * 5000 + b'], "data_offsets": [0, 4]}}', bytes(4)
        ),
        FormatError,
        re.compile(r"safetensors header is not valid JSON \(Exceeds the limit \(\d+ digits\).*\)"),
        None,
    ),
    "json-unpaired-surrogate": (
        st_bytes(b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', bytes(4)),
        FormatError,
        "safetensors header is not valid JSON (unpaired surrogate escape)",
        None,
    ),
    "json-nested-100k": (
        st_bytes(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        FormatError,
        "safetensors header JSON nested too deeply",
        None,
    ),
    "entry-not-object": (st_bytes({"a": [1, 2]}), FormatError, "tensor 'a': entry is not an object", None),
    "unknown-dtype": (
        st_bytes(one("F33", [2, 2], 0, 16), bytes(16)),
        FormatError,
        "tensor 'a': unknown dtype 'F33'",
        None,
    ),
    "dtype-missing": (
        st_bytes({"a": {"shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        FormatError,
        "tensor 'a': unknown dtype None",
        None,
    ),
    **{
        f"shape-{name}": (
            st_bytes(one("F32", shape, 0, 16), bytes(16)),
            FormatError,
            "tensor 'a': shape must be a list of non-negative integers",
            None,
        )
        for name, shape in {
            "negative": [-2, -2],
            "float": [2.0, 2],
            "bool": [True, 4],
            "string": ["2", 2],
            "null": [None],
            "dim-2**64": [2**64],
            "not-a-list": 4,
        }.items()
    },
    "shape-bytes-overflow-u64": (
        st_bytes(one("F32", [2**62], 0, 16), bytes(16)),
        FormatError,
        "tensor 'a': shape [4611686018427387904] overflows",
        None,
    ),
    "shape-numel-overflow-u64": (
        st_bytes(one("U8", [2**32, 2**32], 0, 16), bytes(16)),
        FormatError,
        "tensor 'a': shape [4294967296, 4294967296] overflows",
        None,
    ),
    "sub-byte-dtype-odd": (
        st_bytes(one("F4", [3], 0, 2), bytes(2)),
        FormatError,
        "tensor 'a': 3 elements of float4_e2m1fn are not a whole number of bytes",
        None,
    ),
    **{
        f"offsets-{name}": (
            st_bytes({"a": {"dtype": "F32", "shape": [2, 2], **offs}}, bytes(16)),
            FormatError,
            "tensor 'a': data_offsets must be two non-negative integers",
            None,
        )
        for name, offs in {
            "three-ints": {"data_offsets": [0, 8, 16]},
            "one-int": {"data_offsets": [16]},
            "string": {"data_offsets": ["0", 16]},
            "float": {"data_offsets": [0.0, 16]},
            "negative": {"data_offsets": [-16, 0]},
            "over-u64": {"data_offsets": [0, 2**64]},
            "missing": {},
        }.items()
    },
    "end-before-begin": (
        st_bytes(one("F32", [0], 16, 0), bytes(16)),
        FormatError,
        "tensor 'a': data_offsets end 0 before begin 16",
        None,
    ),
    "span-not-numel-times-itemsize": (
        st_bytes(one("F32", [2, 2], 0, 12), bytes(12)),
        FormatError,
        "tensor 'a': data_offsets span 12 bytes but shape [2, 2] float32 needs 16",
        None,
    ),
    "overlapping-offsets": (
        st_bytes({"a": st_entry("F32", [2, 2], 0, 16), "b": st_entry("F32", [2, 2], 8, 24)}, bytes(24)),
        FormatError,
        "tensor 'b': data_offsets [8, 24] overlaps the previous tensor",
        None,
    ),
    "same-offsets-twice": (
        st_bytes({"a": st_entry("F32", [2, 2], 0, 16), "b": st_entry("F32", [2, 2], 0, 16)}, bytes(16)),
        FormatError,
        re.compile(r"tensor '[ab]': data_offsets \[0, 16\] overlaps the previous tensor"),
        None,
    ),
    "gap-between-tensors": (
        st_bytes({"a": st_entry("F32", [2, 2], 0, 16), "b": st_entry("F32", [2, 2], 20, 36)}, bytes(36)),
        FormatError,
        "tensor 'b': data_offsets [20, 36] leaves a gap after byte 16",
        None,
    ),
    "first-tensor-not-at-zero": (
        st_bytes(one("F32", [1], 4, 8), bytes(8)),
        FormatError,
        "tensor 'a': data_offsets [4, 8] leaves a gap after byte 0",
        None,
    ),
    "data-out-of-bounds-truncated": (
        st_bytes(H, D[:20]),
        FormatError,
        "truncated: tensors need 28 data bytes but the file holds 20",
        None,
    ),
    "offsets-far-past-eof": (
        st_bytes(one("U8", [2**40], 0, 2**40), bytes(16)),
        FormatError,
        "truncated: tensors need 1099511627776 data bytes but the file holds 16",
        None,
    ),
    "trailing-bytes": (st_bytes(H, D + b"xx"), FormatError, "2 trailing bytes after the last tensor", None),
    "duplicate-key": (
        st_bytes(
            b'{"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            b' "a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
            bytes(4),
        ),
        FormatError,
        "duplicate key 'a' in safetensors header",
        None,
    ),
    "duplicate-key-nested": (
        st_bytes(b'{"a": {"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
        FormatError,
        "duplicate key 'dtype' in safetensors header",
        None,
    ),
    **{
        f"metadata-{name}": (
            st_bytes({"__metadata__": meta, **H}, D),
            FormatError,
            "safetensors __metadata__ must map strings to strings",
            None,
        )
        for name, meta in {
            "int-value": {"step": 5},
            "null-value": {"step": None},
            "nested": {"cfg": {"lr": "0.1"}},
            "list": ["x"],
            "string": "x",
        }.items()
    },
    "more-than-max-tensors": (
        st_bytes(H, D),
        LimitError,
        "2 tensors exceed the cap of 1",
        Limits(max_tensors=1),
    ),
}


@pytest.mark.parametrize("case", list(ST_CASES))
def test_safetensors_crafted(tmp_path: Path, case: str) -> None:
    data, exc, cause, limits = ST_CASES[case]
    path = write(tmp_path / "model.safetensors", data)
    expect_error(path, exc, cause, limits)


def test_safetensors_header_not_starting_with_brace(tmp_path: Path) -> None:
    # content detection wants `{` at byte 8, so read_meta calls it unrecognised; the reader says why
    raw = b'["a"]'.ljust(64)  # length 64 = '@', not a pickle opcode either
    path = write(tmp_path / "model.safetensors", st_bytes(raw))
    expect_error(path, FormatError, "unrecognised format (first bytes 40 00 00 00 00 00 00 00)")
    with pytest.raises(FormatError) as ei:
        read_safetensors(path)
    assert ei.value.cause == "safetensors header does not start with '{'"


def test_safetensors_file_shrinking_under_the_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a checkpoint being rewritten while it is read: sized at 100 bytes, holds 4 by the time it is opened
    path = write(tmp_path / "model.safetensors", b"\x10\x00\x00\x00")
    real = os.path.getsize
    monkeypatch.setattr(os.path, "getsize", lambda p: 100 if str(p) == str(path) else real(p))
    with pytest.raises(FormatError) as ei:
        read_safetensors(path)
    assert ei.value.cause == "file too small for a safetensors header (4 bytes)"


def test_safetensors_strict_but_not_overstrict(tmp_path: Path) -> None:
    # the reference writer pads the header with spaces for alignment; an empty header is a valid empty file
    padded = json.dumps({"__metadata__": {"epoch": "nan", "step": "12"}, **H}).encode().ljust(200)
    meta = read_meta(write(tmp_path / "padded.safetensors", st_bytes(padded, D)))
    assert [t.name for t in meta.tensors] == ["a", "b"] and meta.step == 12
    assert meta.epoch is None  # "nan" is not an epoch (and would not be valid JSON output)
    json.dumps(meta.to_json(), allow_nan=False)
    assert read_meta(write(tmp_path / "empty.safetensors", st_bytes(b"{}"))).n_tensors == 0
    nul = read_meta(write(tmp_path / "nul.safetensors", st_bytes(one("F32", [1], 0, 4), bytes(4))))
    assert nul.n_params == 1


# ================================================================ torch zip


@pytest.fixture(scope="module")
def real_zip() -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"model": torch.nn.Linear(4, 3).state_dict(), "epoch": 2}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("where", ["10%", "50%", "90%", "before-eocd", "last-byte"])
@pytest.mark.parametrize("source", ["crafted", "torch.save"])
def test_torch_zip_truncated(tmp_path: Path, real_zip: bytes, source: str, where: str) -> None:
    z = simple_torch_zip() if source == "crafted" else real_zip
    cut = {
        "10%": len(z) // 10,
        "50%": len(z) // 2,
        "90%": len(z) * 9 // 10,
        "before-eocd": eocd_offset(z),
        "last-byte": len(z) - 1,
    }[where]
    expect_error(write(tmp_path / "model.pt", z[:cut]), FormatError, NOT_A_ZIP)


def _flip_in_member(z: bytes, member: str, at: int = 5) -> bytes:
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        info = zf.getinfo(member)
    nl, el = struct.unpack("<HH", z[info.header_offset + 26 : info.header_offset + 30])
    i = info.header_offset + 30 + nl + el + at
    return z[:i] + bytes([z[i] ^ 0x01]) + z[i + 1 :]


TZ = simple_torch_zip()
SP = simple_state_pickle()
TORCH_ZIP_CASES: dict[str, tuple[bytes, type[Exception], str | re.Pattern[str], Limits | None]] = {
    "data.pkl-deflated": (
        simple_torch_zip(compress=["data.pkl"]),
        FormatError,
        "archive member archive/data.pkl is compressed; torch.save never compresses (refusing)",
        None,
    ),
    "storage-deflated": (
        simple_torch_zip(compress=["data/0"]),
        FormatError,
        "archive member archive/data/0 is compressed; torch.save never compresses (refusing)",
        None,
    ),
    "storage-record-missing": (
        torch_zip(SP, {"0": bytes(24)}),
        FormatError,
        "archive member archive/data/1 is missing (truncated or damaged archive)",
        None,
    ),
    "storage-record-short": (
        torch_zip(SP, {"0": bytes(24), "1": bytes(8)}),
        FormatError,
        "storage data/1 holds 8 bytes, needs 12",
        None,
    ),
    "more-entries-than-cap": (
        TZ,
        LimitError,
        "zip declares 5 entries, over the cap of 3",
        Limits(max_zip_entries=3),
    ),
    "eocd-declares-60000-entries": (
        declare_zip_entries(TZ, 60000),
        LimitError,
        "zip declares 60000 entries, over the cap of 1000",
        Limits(max_zip_entries=1000),
    ),
    "view-shape-past-storage": (
        torch_zip(asm({"w": tensor("0", 6, (4, 3))}), {"0": bytes(24)}),
        FormatError,
        "data.pkl: tensor view reaches element 11 of a 6-element storage",
        None,
    ),
    "view-offset-past-storage": (
        torch_zip(asm({"w": tensor("0", 6, (2, 3), offset=1)}), {"0": bytes(24)}),
        FormatError,
        "data.pkl: tensor view reaches element 6 of a 6-element storage",
        None,
    ),
    "view-stride-past-storage": (
        torch_zip(asm({"w": tensor("0", 6, (2, 3), stride=(4, 1))}), {"0": bytes(24)}),
        FormatError,
        "data.pkl: tensor view reaches element 6 of a 6-element storage",
        None,
    ),
    "view-huge-offset": (
        torch_zip(asm({"w": tensor("0", 6, (2, 3), offset=2**62)}), {"0": bytes(24)}),
        FormatError,
        "data.pkl: tensor view reaches element 4611686018427387909 of a 6-element storage",
        None,
    ),
    "storage-numel-huge": (
        torch_zip(asm({"w": tensor("0", 2**61, (2, 3))}), {"0": bytes(24)}),
        FormatError,
        "storage data/0 holds 24 bytes, needs 9223372036854775808",
        None,
    ),
    "negative-shape": (
        torch_zip(asm({"w": tensor("0", 6, (-1, 3), stride=(3, 1))}), {"0": bytes(24)}),
        FormatError,
        "data.pkl: negative tensor shape: (-1, 3)",
        None,
    ),
    "unknown-storage-type": (
        torch_zip(asm({"w": tensor("0", 6, (2, 3), stype="EvilStorage")}), {"0": bytes(24)}),
        FormatError,
        "data.pkl: unknown storage type torch.EvilStorage; it references unsafe globals torch.EvilStorage",
        None,
    ),
    "bad-persistent-id": (
        torch_zip(asm({"w": PID("not-a-storage")}), {}),
        FormatError,
        "data.pkl: unexpected persistent id str",
        None,
    ),
    "data.pkl-over-max_pickle_bytes": (
        TZ,
        LimitError,
        f"data.pkl is {len(SP)} bytes, over the cap of 50",
        Limits(max_pickle_bytes=50),
    ),
    "data.pkl-bad-crc": (
        _flip_in_member(TZ, "archive/data.pkl", at=len(SP) - 3),
        FormatError,
        "archive member archive/data.pkl fails its CRC-32 check (damaged file)",
        None,
    ),
    "data.pkl-not-a-pickle": (
        torch_zip(b"\x00\x01garbage", {}),
        FormatError,
        re.compile(r"data\.pkl: malformed pickle: .+"),
        None,
    ),
    "data.pkl-without-stop": (
        torch_zip(asm({"w": 1})[:-1], {}),
        FormatError,
        re.compile(r"data\.pkl: (malformed pickle: pickle exhausted before seeing STOP|pickle truncated.*)"),
        None,
    ),
    # found by fuzzing: zipfile raised NotImplementedError / UnicodeDecodeError / BadZipFile through read_meta
    "central-directory-unsupported-version": (
        patch_central(TZ, "archive/byteorder", 6, b"\x40"),  # "version needed to extract" 6.4
        FormatError,
        "damaged zip archive (zip file version 6.4 is not supported)",
        None,
    ),
    "central-directory-garbage": (
        TZ[: TZ.find(b"PK\x01\x02")] + b"\xee" * 46 + TZ[TZ.find(b"PK\x01\x02") + 46 :],
        FormatError,
        re.compile(r"damaged zip archive \(.+\)"),
        None,
    ),
    "byteorder-local-header-name-differs": (
        _flip_in_member(TZ, "archive/byteorder", at=-10),  # inside the local header's file name
        FormatError,
        re.compile(r"zip member archive/byteorder is damaged or unsupported \(File name in directory .+"),
        None,
    ),
    "byteorder-marked-encrypted": (
        patch_central(TZ, "archive/byteorder", 8, b"\x01\x00"),
        FormatError,
        re.compile(r"zip member archive/byteorder is damaged or unsupported \(.*encrypted.*\)"),
        None,
    ),
    "byteorder-unknown-method": (
        patch_central(TZ, "archive/byteorder", 10, b"\x63\x00"),
        FormatError,
        "zip member archive/byteorder is damaged or unsupported (That compression method is not supported)",
        None,
    ),
    "version-member-zip-bomb": (
        rewrite_zip(TZ, {"archive/version": bytes(16 * 1024 * 1024)}, compress=["archive/version"]),
        LimitError,
        "zip member archive/version declares 16777216 bytes, over the cap of 1048576",
        Limits(max_pickle_bytes=1024 * 1024),
    ),
    "member-with-empty-name": (
        simple_torch_zip(extra=[("", b"x")]),
        FormatError,
        "damaged zip archive (a member has an empty name)",
        None,
    ),
}


@pytest.mark.parametrize("case", list(TORCH_ZIP_CASES))
def test_torch_zip_crafted(tmp_path: Path, case: str) -> None:
    data, exc, cause, limits = TORCH_ZIP_CASES[case]
    expect_error(write(tmp_path / "model.pt", data), exc, cause, limits)


def test_zip_under_declaring_its_entries_is_capped_before_parsing(tmp_path: Path) -> None:
    # the end record claims 1 entry, the central directory holds 20000: refused before zipfile builds 20000
    # ZipInfo objects (~11 MB of Python objects: memory proportional to the directory, not to the cap)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(20000):
            zf.writestr(f"{i:x}", b"")
    path = write(tmp_path / "many.pt", declare_zip_entries(buf.getvalue(), 1))
    tracemalloc.start()
    try:
        expect_error(
            path, LimitError, "zip central directory holds more than 100 entries", Limits(max_zip_entries=100)
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak


def test_zip_bomb_member_stays_in_bounded_memory(tmp_path: Path) -> None:
    path = write(tmp_path / "bomb.pt", TORCH_ZIP_CASES["version-member-zip-bomb"][0])
    tracemalloc.start()
    try:
        expect_error(
            path,
            LimitError,
            re.compile(r"zip member archive/version declares 16777216 bytes, .+"),
            Limits(max_pickle_bytes=1 << 20),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak


# ================================================================ torch legacy


LEG = simple_legacy()
_B = stream_bounds(LEG, 5)  # magic, protocol, sys info, object, key list
LEGACY_CASES: dict[str, tuple[bytes, str | re.Pattern[str]]] = {
    "in-magic": (
        LEG[: _B[0][1] - 3],
        re.compile(r"not a PyTorch checkpoint: a plain pickle \(malformed pickle: .+\)"),
    ),
    "in-protocol": (
        LEG[: _B[1][1] - 1],
        "protocol version: malformed pickle: pickle exhausted before seeing STOP",
    ),
    "in-sys-info": (LEG[: _B[2][0] + 10], re.compile(r"sys info: malformed pickle: .+")),
    "in-object-pickle": (LEG[: _B[3][0] + 20], re.compile(r"checkpoint object: malformed pickle: .+")),
    "in-key-list": (LEG[: _B[4][1] - 2], re.compile(r"storage key list: malformed pickle: .+")),
    "in-storage-header": (LEG[: _B[4][1] + 4], f"truncated: storage 0 header missing at byte {_B[4][1]}"),
    "in-storage-data": (
        LEG[:-5],
        f"truncated: storage 0 runs past the end of the file ({len(LEG) - 5} bytes)",
    ),
    "size-header-disagrees": (
        simple_legacy(numel_header=7),
        "storage 0 declares 7 elements, the pickle says 6",
    ),
    "size-header-negative": (
        simple_legacy(numel_header=-1),
        "storage 0 declares -1 elements, the pickle says 6",
    ),
    "size-header-2**62": (
        simple_legacy(numel_header=2**62),
        "storage 0 declares 4611686018427387904 elements, the pickle says 6",
    ),
    "key-list-not-a-list": (
        legacy_bytes(asm({"w": 1}), [], keys={"k": 1}),
        "storage key list is malformed",
    ),
    "unknown-protocol-version": (
        asm(0x1950A86A20F9469CFC6C) + asm(1002) + LEG[_B[2][0] :],
        "unsupported legacy protocol version 1002",
    ),
}


@pytest.mark.parametrize("case", list(LEGACY_CASES))
def test_torch_legacy_crafted(tmp_path: Path, case: str) -> None:
    data, cause = LEGACY_CASES[case]
    expect_error(write(tmp_path / "model.bin", data), FormatError, cause)


def test_torch_legacy_real_file_truncated(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4, 4)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    for cut, cause in [
        (len(data) - 3, re.compile(r"truncated: storage \d+ runs past the end of the file \(\d+ bytes\)")),
        (
            len(data) // 2,
            re.compile(r"(checkpoint object|storage key list): malformed pickle: .+|truncated: .+"),
        ),
        (30, re.compile(r".+: malformed pickle: .+")),
    ]:
        expect_error(write(tmp_path / f"cut{cut}.bin", data[:cut]), FormatError, cause)


# ================================================================ the restricted pickle VM's caps

TIGHT = Limits(max_pickle_ops=1000, max_pickle_depth=50, max_pickle_memo=100, max_pickle_stack=500)
CAP_PICKLES: dict[str, tuple[bytes, str]] = {
    "opcodes": (b"\x80\x02" + b"N0" * 5000 + b"N.", "pickle exceeds 1000 opcodes"),
    "nesting-via-marks": (b"\x80\x02" + b"(" * 200 + b"N.", "pickle nesting exceeds 50"),
    "memo": (b"\x80\x04" + b"N\x940" * 200 + b"N.", "pickle memo exceeds 100 entries"),
    "stack": (b"\x80\x02" + b"N" * 800 + b".", "pickle stack exceeds 500 items"),
}


@pytest.mark.parametrize("cap", list(CAP_PICKLES))
def test_pickle_vm_caps(cap: str) -> None:
    data, cause = CAP_PICKLES[cap]
    with time_limit(5), pytest.raises(LimitError) as ei:
        RestrictedUnpickler(io.BytesIO(data), limits=TIGHT).load()
    assert ei.value.cause == cause


@pytest.mark.parametrize("cap", list(CAP_PICKLES))
def test_pickle_caps_through_files(tmp_path: Path, cap: str) -> None:
    data, cause = CAP_PICKLES[cap]
    # in a legacy checkpoint's object pickle and in a torch zip's data.pkl: a FormatError naming the cap
    for name, blob, expected in [
        ("legacy.bin", legacy_bytes(data, []), f"checkpoint object: {cause}"),
        ("zip.pt", torch_zip(data, {}), f"data.pkl: {cause}"),
        ("plain.pkl", data, f"not a PyTorch checkpoint: a plain pickle ({cause})"),
    ]:
        err = _error_of(write(tmp_path / name, blob), TIGHT)
        assert isinstance(err, FormatError) and err.cause == expected


@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_pickle_cap_keeps_limit_error_type(tmp_path: Path, container: str) -> None:
    data, cause = CAP_PICKLES["opcodes"]
    if container == "legacy":
        path, expected = write(tmp_path / "m.bin", legacy_bytes(data, [])), f"checkpoint object: {cause}"
    else:
        path, expected = write(tmp_path / "m.pt", torch_zip(data, {})), f"data.pkl: {cause}"
    expect_error(path, LimitError, expected, TIGHT)


def _error_of(path: Path, limits: Limits | None = None) -> CkptlabError:
    with time_limit(10), pytest.raises(CkptlabError) as ei:
        read_meta(path, **({"limits": limits} if limits else {}))
    return ei.value


def test_dup_appends_blowup_is_bounded_by_the_opcode_cap(tmp_path: Path) -> None:
    # a million DUPs into one list: stopped by the opcode cap (or the stack cap), never walked to the end
    bomb = b"\x80\x02](N" + b"2" * 1_000_000 + b"e."
    path = write(tmp_path / "bomb.bin", legacy_bytes(bomb, []))
    err = _error_of(path, Limits(max_pickle_ops=10_000))
    assert isinstance(err, FormatError) and err.cause == "checkpoint object: pickle exceeds 10000 opcodes"
    err = _error_of(path, Limits(max_pickle_stack=10_000))
    assert isinstance(err, FormatError) and err.cause == "checkpoint object: pickle stack exceeds 10000 items"


def test_billion_laughs_shared_references_stay_linear(tmp_path: Path) -> None:
    # L0 = [tensor]; L(i+1) = [Li, Li] through the memo, 40 levels: 2**40 paths to one tensor, ~250 opcodes
    body = b"\x80\x02" + ops([tensor("0", 6, (2, 3), legacy=True)]) + b"r" + struct.pack("<I", 0) + b"0"
    for i in range(40):
        get = b"j" + struct.pack("<I", i)
        body += b"(" + get + get + b"l" + b"r" + struct.pack("<I", i + 1) + b"0"
    body += b"}" + ops("model") + b"j" + struct.pack("<I", 40) + b"s."
    path = write(tmp_path / "laughs.bin", legacy_bytes(body, [("0", 6, bytes(24))]))
    t0 = time.monotonic()
    with time_limit(10):
        meta = read_meta(path)
    assert time.monotonic() - t0 < 5
    assert meta.safety.safe
    assert len(meta.tensors) + len(meta.other_tensors) == 1  # each distinct container is walked once


def test_many_keys_sharing_one_big_list_do_not_hang(tmp_path: Path) -> None:
    n = k = 2500
    body = b"\x80\x02](" + b"N" * n + b"eq\x000}("
    body += b"".join(ops(f"k{i}") + b"h\x00" for i in range(k)) + b"u."
    path = write(tmp_path / "shared.bin", legacy_bytes(body, []))
    with time_limit(2):
        read_meta(path)


# ================================================================ huge declared lengths: memory stays bounded

_CHILD = r"""
import json, resource, sys
import ckptlab
from ckptlab.errors import CkptlabError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    ckptlab.read_meta(sys.argv[1])
    out = {"type": None, "cause": None}
except CkptlabError as e:
    out = {"type": type(e).__name__, "cause": e.cause}
out["grew_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(out))
"""


def _legacy_declaring(opcode: bytes, n: int) -> bytes:
    return legacy_bytes(b"\x80\x04" + opcode + struct.pack("<Q", n) + b"abc.", [])


HUGE = {
    "safetensors-header-10**15": (
        st_bytes(H, D, declared=10**15),
        "LimitError",
        re.compile(r".*exceeds.*cap"),
    ),
    "legacy-BINUNICODE8-2**60": (
        _legacy_declaring(b"\x8d", 2**60),
        "FormatError",
        re.compile("checkpoint object: .+"),
    ),
    "legacy-BINBYTES8-2**34": (
        _legacy_declaring(b"\x8e", 2**34),
        "FormatError",
        re.compile("checkpoint object: .+"),
    ),
    "zip-BINUNICODE8-2**60": (
        torch_zip(b"\x80\x04\x8d" + struct.pack("<Q", 2**60) + b"abc.", {}),
        "FormatError",
        re.compile(
            r"data\.pkl: malformed pickle: (expected 1152921504606846976 bytes .+|pickle data was truncated)"
        ),
    ),
    "safetensors-tensor-2**40-bytes": (
        st_bytes(one("U8", [2**40], 0, 2**40), bytes(16)),
        "FormatError",
        re.compile("truncated: .+"),
    ),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_huge_declared_length_bounded_memory(tmp_path: Path, case: str) -> None:
    data, etype, cause = HUGE[case]
    path = write(tmp_path / "huge.bin", data)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=30
    )
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["type"] == etype and cause.fullmatch(out["cause"]), out
    assert out["grew_kib"] < 64 * 1024, out  # peak RSS grew by less than 64 MiB while reading


def test_huge_declared_length_tracemalloc(tmp_path: Path) -> None:
    for name in ("safetensors-header-10**15", "zip-BINUNICODE8-2**60"):
        path = write(tmp_path / "huge.bin", HUGE[name][0])
        tracemalloc.start()
        try:
            _error_of(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, (name, peak)


def test_huge_declared_length_reads_as_truncated_not_out_of_memory(tmp_path: Path) -> None:
    path = write(tmp_path / "huge.bin", HUGE["legacy-BINUNICODE8-2**60"][0])
    expect_error(
        path,
        FormatError,
        re.compile(
            r"checkpoint object: malformed pickle: "
            r"(expected 1152921504606846976 bytes .* only \d+ remain|pickle data was truncated)"
        ),
    )


# ================================================================ empty, random, foreign, mislabelled


def test_zero_byte_file(tmp_path: Path) -> None:
    expect_error(write(tmp_path / "model.pt", b""), FormatError, "empty file (0 bytes)")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    size = [1, 7, 9, 100, 512, 4096, 65536, 1 << 20][seed]
    data = rng.randbytes(size)
    if seed == 7:
        data = b"\x80\x02" + data  # looks like a pickle: walks into the VM
    expect_error(write(tmp_path / f"random{seed}.pt", data), FormatError, ANY_CAUSE)


FOREIGN = {
    "png-renamed-pt": (PNG_1x1, "model.pt", "unrecognised format (first bytes 89 50 4e 47 0d 0a 1a 0a)"),
    "7-bytes": (b"\x01" * 7, "model.pt", "file too small to be a checkpoint (7 bytes)"),
    "npy": (
        b"\x93NUMPY\x01\x00v\x00" + b" " * 118 + b"\n",
        "model.pt",
        "a NumPy .npy array, not a checkpoint",
    ),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(20), "model.pt.gz", "gzip-compressed file: decompress it first"),
    "7z": (b"7z\xbc\xaf\x27\x1c" + bytes(26), "model.7z", "a 7z archive, not a checkpoint"),
    "plain-zip": (
        zip_bytes([("readme.txt", b"hello")]),
        "model.pt",
        "zip archive without data.pkl or model.weights.h5: not a checkpoint",
    ),
    "index-json-without-weight-map": (
        b'{"a": 1}'.ljust(20),
        "model.safetensors.index.json",
        "JSON file without a weight_map: not a sharded checkpoint index",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_foreign_files(tmp_path: Path, case: str) -> None:
    data, name, cause = FOREIGN[case]
    expect_error(write(tmp_path / name, data), FormatError, cause)


def test_missing_path_and_non_checkpoint_directory(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.pt", FormatError, "no such file or directory")
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "notes.txt", b"hi")
    expect_error(
        tmp_path / "d",
        FormatError,
        "directory is not a checkpoint (no .metadata, trainer_state.json, weights or index.json); "
        "`ckptlab scan` lists the checkpoints under a folder",
    )


MISLABELLED = {
    "safetensors-as-.bin": (lambda: st_bytes(H, D), "pytorch_model.bin", "safetensors", ["a", "b"]),
    "torch-zip-as-.safetensors": (simple_torch_zip, "model.safetensors", "torch-zip", ["w", "b"]),
    "torch-legacy-as-.safetensors": (simple_legacy, "model.safetensors", "torch-legacy", ["w"]),
    "torch-zip-as-.h5": (simple_torch_zip, "model.h5", "torch-zip", ["w", "b"]),
}


@pytest.mark.parametrize("case", list(MISLABELLED))
def test_mislabelled_files_are_read_by_content(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build, name, fmt, names = MISLABELLED[case]
    path = write(tmp_path / name, build())
    meta = read_meta(path)
    assert meta.format == fmt and [t.name for t in meta.tensors] == names and meta.safety.safe
    assert cli_main(["inspect", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)["format"] == fmt


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    expect_error(fifo, FormatError, ANY_CAUSE, budget_s=0.5)


def test_file_truncated_between_stat_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "model.pt", b"")
    real = os.path.getsize
    monkeypatch.setattr(os.path, "getsize", lambda p: 4096 if str(p) == str(path) else real(p))
    expect_error(path, FormatError, ANY_CAUSE)


# ================================================================ sharded index


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sharded"
    write(d / "model-00001-of-00002.safetensors", st_bytes(H, D))
    return d


def _index(d: Path, weight_map: dict[str, str], extra: bytes = b"") -> Path:
    path = d / "model.safetensors.index.json"
    doc = {"metadata": {"total_size": 28}, "weight_map": weight_map}
    path.write_bytes(json.dumps(doc).encode() + extra)
    return path


S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def test_index_with_missing_shard(shard_dir: Path) -> None:
    idx = _index(shard_dir, {"a": S1, "b": S2})
    cause = f"1 of 2 shards listed in the index are missing: {S2}"
    expect_error(idx, IncompleteError, cause)
    with pytest.raises(IncompleteError) as ei:  # the directory form names the index file
        read_meta(shard_dir)
    assert ei.value.path == str(idx) and ei.value.cause == cause


@pytest.mark.parametrize(
    "shard", ["../x.safetensors", "sub/../../x.safetensors", "/etc/passwd", "..\\x.safetensors"]
)
def test_index_with_shard_path_escaping_the_directory(shard_dir: Path, shard: str) -> None:
    write(shard_dir.parent / "x.safetensors", st_bytes(H, D))  # the escape target exists
    idx = _index(shard_dir, {"a": S1, "b": shard})
    expect_error(idx, FormatError, f"shard path {shard!r} escapes the checkpoint directory")


def test_index_listing_a_tensor_absent_from_its_shard(shard_dir: Path) -> None:
    idx = _index(shard_dir, {"a": S1, "b": S1, "c": S1})
    expect_error(idx, IncompleteError, f"tensor 'c' is listed in the index but absent from shard {S1}")


def test_index_naming_itself_as_a_shard(shard_dir: Path) -> None:
    idx = _index(shard_dir, {"a": "model.safetensors.index.json"})
    expect_error(idx, FormatError, ANY_CAUSE)


def test_index_with_a_5000_digit_integer(shard_dir: Path) -> None:
    idx = shard_dir / "model.safetensors.index.json"
    idx.write_bytes(
        b'{"metadata": {"total_size": 1' + b"0" * 5000 + b'}, "weight_map": {"a": "' + S1.encode() + b'"}}'
    )
    expect_error(idx, FormatError, ANY_CAUSE)


# ================================================================ DCP


def test_dcp_reads(dcp_small: Path) -> None:
    meta = read_meta(dcp_small)
    assert meta.format == "torch-dcp" and [t.name for t in meta.tensors] == ["w"] and meta.step == 7


def test_dcp_missing_distcp(dcp_small: Path, tmp_path: Path) -> None:
    d = shutil.copytree(dcp_small, tmp_path / "ckpt")
    names = sorted(p.name for p in d.glob("*.distcp"))
    for p in d.glob("*.distcp"):
        p.unlink()
    expect_error(d, IncompleteError, f"data files listed in .metadata are missing: {', '.join(names)}")


def test_dcp_storage_path_escaping(dcp_small: Path, tmp_path: Path) -> None:
    d = shutil.copytree(dcp_small, tmp_path / "ckpt")
    md = (d / ".metadata").read_bytes()
    assert b"__0_0.distcp" in md
    (d / ".metadata").write_bytes(md.replace(b"__0_0.distcp", b"../_0.distcp"))  # same length
    expect_error(d, FormatError, "storage path '../_0.distcp' escapes the checkpoint directory")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_dcp_damaged_metadata(dcp_small: Path, tmp_path: Path, damage: str) -> None:
    d = shutil.copytree(dcp_small, tmp_path / "ckpt")
    md = (d / ".metadata").read_bytes()
    new = {"truncated": md[: len(md) // 2], "garbage": random.Random(0).randbytes(200), "empty": b""}[damage]
    (d / ".metadata").write_bytes(new)
    expect_error(d, FormatError, re.compile(r"\.metadata[: ].+"))


# ================================================================ numbers that are not finite


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_step_is_not_a_crash(tmp_path: Path, value: float) -> None:
    path = write(
        tmp_path / "m.pt", torch_zip(asm({"w": tensor("0", 6, (2, 3)), "step": value}), {"0": bytes(24)})
    )
    meta = read_meta(path)
    assert meta.step is None


def test_nan_metrics_do_not_break_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"w": tensor("0", 6, (2, 3)), "loss": float("nan"), "best_acc": float("inf"), "epoch": float("inf")}
    path = write(tmp_path / "m.pt", torch_zip(asm(doc), {"0": bytes(24)}))
    assert cli_main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["loss"] == "nan"


def test_hostile_names_in_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"evil\x1b]0;pwned\x07\x1b[2J": tensor("0", 3, (3,)), "lone\ud800surrogate": tensor("1", 3, (3,))}
    path = write(tmp_path / "m.pt", torch_zip(asm(doc), {"0": bytes(12), "1": bytes(12)}))
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    out.encode("utf-8")


# ================================================================ mutation fuzz (regression: zip fixes)


def _mutants(seed_bytes: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(seed_bytes)
        k = rng.random()
        if k < 0.5:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif k < 0.7:
            del b[rng.randrange(len(b)) :]
        elif k < 0.85:
            i = rng.randrange(len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        else:
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 16)]
        out.append(bytes(b))
    return out


def test_mutation_fuzz_only_ckptlab_errors(tmp_path: Path, real_zip: bytes) -> None:
    seeds = {"st": st_bytes(H, D), "zip": simple_torch_zip(), "real": real_zip, "legacy": simple_legacy()}
    rng = random.Random(1234)
    path = tmp_path / "fuzz.bin"
    with time_limit(30):
        for name, seed in seeds.items():
            for i, data in enumerate(_mutants(seed, rng, 60)):
                path.write_bytes(data)
                try:
                    read_meta(path)
                except CkptlabError as e:
                    assert "\n" not in str(e)
                except Exception as e:  # pragma: no cover - the failure report
                    keep = tmp_path.parent / f"fuzz-{name}-{i}.bin"
                    keep.write_bytes(data)
                    raise AssertionError(f"{name} mutant {i}: {type(e).__name__}: {e} (saved {keep})") from e


# ================================================================ the CLI, in a subprocess


def _cli_cases(tmp_path: Path) -> dict[str, Path]:
    shard = tmp_path / "sharded"
    write(shard / S1, st_bytes(H, D))
    _index(shard, {"a": S1, "b": S2})
    return {
        "empty": write(tmp_path / "empty.pt", b""),
        "random": write(tmp_path / "random.pt", random.Random(3).randbytes(4096)),
        "png": write(tmp_path / "image.pt", PNG_1x1),
        "truncated-zip": write(tmp_path / "trunc.pt", simple_torch_zip()[:300]),
        "safetensors-over-cap": write(tmp_path / "cap.safetensors", st_bytes(H, D, declared=10**15)),
        "safetensors-overlap": write(
            tmp_path / "overlap.safetensors",
            st_bytes({"a": st_entry("F32", [2, 2], 0, 16), "b": st_entry("F32", [2, 2], 8, 24)}, bytes(24)),
        ),
        "legacy-truncated": write(tmp_path / "legacy.bin", LEG[:-5]),
        "deflated-data.pkl": write(tmp_path / "deflated.pt", simple_torch_zip(compress=["data.pkl"])),
        "missing-shard-dir": shard,
        "missing-path": tmp_path / "nope.safetensors",
    }


def test_cli_bad_input_one_line_exit_1(tmp_path: Path) -> None:
    for case, path in _cli_cases(tmp_path).items():
        proc = run_cli("inspect", str(path), "--json")
        assert proc.returncode == 1, (case, proc)
        where = path / "model.safetensors.index.json" if case == "missing-shard-dir" else path
        assert_one_line_error(proc.stdout, proc.stderr, where)


def test_cli_bad_input_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for case, path in _cli_cases(tmp_path).items():
        for extra in ([], ["--json"]):
            assert cli_main(["inspect", str(path), *extra]) == 1, case
            out, err = capsys.readouterr()
            where = path / "model.safetensors.index.json" if case == "missing-shard-dir" else path
            assert_one_line_error(out, err, where)


def test_cli_mislabelled_exit_0(tmp_path: Path) -> None:
    path = write(tmp_path / "weights.bin", st_bytes(H, D))
    proc = run_cli("inspect", str(path), "--json")
    assert proc.returncode == 0 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["format"] == "safetensors" and doc["n_tensors"] == 2 and doc["safety"]["safe"] is True

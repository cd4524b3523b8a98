"""Malicious pickles in every container ckptlab reads: nothing runs, the exact global is reported.

Each payload WOULD create a marker file if unpickled: `os.system("touch MARKER")`, `exec(...)`,
`subprocess.Popen(["touch", MARKER])`, written by `pickle.dumps` of an object whose `__reduce__` returns the
real callable, or spliced in by hand. The `control` tests load the same bytes with pickle / torch.load to
prove the payloads are live; the ckptlab tests read them under tripwires and assert the marker never
appears, `safety.safe is False`, `unsafe_globals` names the global, the real tensors are still listed, and
the CLI exits 0 (a valid but unsafe checkpoint) or 1 with the global named (not a checkpoint).
"""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from adversarial import (
    Build,
    Call,
    G,
    Raw,
    armed,
    asm,
    assert_one_line_error,
    inject,
    member_name,
    ops,
    patch_central,
    payload_objects,
    payload_ops,
    rewrite_zip,
    run_cli,
    stream_bounds,
    system_call,
    tensor,
    time_limit,
    torch_zip,
    wait_for,
    write,
)

from ckptlab import read_meta
from ckptlab.cli import main as cli_main
from ckptlab.errors import FormatError
from ckptlab.formats.limits import DEFAULT_LIMITS, Limits
from ckptlab.model import CheckpointMeta

torch = pytest.importorskip("torch")

PAYLOADS = ["system", "exec", "popen"]


def read_armed(path: Path) -> CheckpointMeta:
    with time_limit(20), armed() as calls:
        meta = read_meta(path)
    assert calls == []
    return meta


def assert_unsafe(meta: CheckpointMeta, qualname: str, tensors: list[str], marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert meta.safety.safe is False
    assert qualname in meta.safety.unsafe_globals, meta.safety.unsafe_globals
    assert any(qualname in f for f in meta.safety.findings)
    names = [t.name for t in meta.tensors]
    for t in tensors:
        assert t in names, names
    doc = meta.to_json()
    assert doc["safety"]["safe"] is False
    json.dumps(doc, allow_nan=False)


def assert_cli_exit_0_unsafe(path: Path, qualname: str, capsys: pytest.CaptureFixture[str]) -> None:
    with armed() as calls:
        rc = cli_main(["inspect", str(path), "--json"])
    out, err = capsys.readouterr()
    assert calls == [] and rc == 0 and err == ""
    doc = json.loads(out)
    assert doc["safety"]["safe"] is False and qualname in doc["safety"]["unsafe_globals"]
    with armed():
        assert cli_main(["inspect", str(path)]) == 0  # the text view flags it too
    assert "UNSAFE" in capsys.readouterr().out


# ================================================================ containers


@pytest.fixture(scope="module")
def torchscript_bytes() -> bytes:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * 2.5

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Net()), buf)
    return buf.getvalue()


class Ctx:
    """What a container builder gets: where to write, the payload object and its opcodes."""

    def __init__(self, tmp: Path, obj: Any, torchscript: bytes, dcp: Path) -> None:
        self.tmp, self.obj, self.torchscript, self.dcp = tmp, obj, torchscript, dcp

    @property
    def ops(self) -> Any:
        return payload_ops(self.obj)


def _zip_state(ctx: Ctx) -> Path:
    p = ctx.tmp / "model.pt"
    torch.save({"w": torch.zeros(2, 3), "b": torch.ones(3), "evil": ctx.obj}, p)
    return p


def _zip_rewritten_data_pkl(ctx: Ctx) -> Path:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2, 3)}, buf)
    z = buf.getvalue()
    name = member_name(z, "/data.pkl")
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        pkl = zf.read(name)
    return write(ctx.tmp / "model.pt", rewrite_zip(z, {name: inject(pkl, ctx.ops)}))


def _legacy(ctx: Ctx) -> Path:
    p = ctx.tmp / "model.bin"
    torch.save({"w": torch.zeros(2, 3), "evil": ctx.obj}, p, _use_new_zipfile_serialization=False)
    return p


def _legacy_sys_info(ctx: Ctx) -> Path:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2, 3)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    start, end = stream_bounds(data, 3)[2]  # magic, protocol, sys info
    return write(ctx.tmp / "model.bin", data[:start] + inject(data[start:end], ctx.ops) + data[end:])


def _nested_deep(ctx: Ctx) -> Path:
    p = ctx.tmp / "ckpt.pt"
    state = {
        "model": {"enc": {"layers": [{"w": torch.zeros(2), "cfg": {"x": [1, (2, {"deeper": [ctx.obj]})]}}]}},
        "epoch": 3,
    }
    torch.save(state, p)
    return p


def _torchscript(member: str) -> Callable[[Ctx], Path]:
    def build(ctx: Ctx) -> Path:
        z = ctx.torchscript
        name = member_name(z, "/" + member)
        with zipfile.ZipFile(io.BytesIO(z)) as zf:
            pkl = zf.read(name)
        return write(ctx.tmp / "scripted.pt", rewrite_zip(z, {name: inject(pkl, ctx.ops)}))

    return build


def _dcp_metadata(ctx: Ctx) -> Path:
    d = shutil.copytree(ctx.dcp, ctx.tmp / "dcp")
    md = d / ".metadata"
    md.write_bytes(inject(md.read_bytes(), ctx.ops))
    return d


def _hf_training_args(ctx: Ctx) -> Path:
    from safetensors.torch import save_file

    d = ctx.tmp / "checkpoint-10"
    d.mkdir()
    save_file({"w": torch.zeros(2, 3)}, str(d / "model.safetensors"))
    torch.save({"learning_rate": 0.1, "evil": ctx.obj}, d / "training_args.bin")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 10, "epoch": 1.0, "log_history": []}))
    return d


def _sharded_torch(ctx: Ctx) -> Path:
    d = ctx.tmp / "sharded"
    d.mkdir()
    torch.save({"a": torch.zeros(2)}, d / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(3), "evil": ctx.obj}, d / "pytorch_model-00002-of-00002.bin")
    wm = {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}
    (d / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 20}, "weight_map": wm})
    )
    return d


# id -> (builder, tensors that must still be listed, the format read_meta reports)
CONTAINERS: dict[str, tuple[Callable[[Ctx], Path], list[str], str]] = {
    "torch-zip": (_zip_state, ["w", "b"], "torch-zip"),
    "torch-zip-rewritten-data.pkl": (_zip_rewritten_data_pkl, ["w"], "torch-zip"),
    "torch-legacy": (_legacy, ["w"], "torch-legacy"),
    "torch-legacy-sys-info": (_legacy_sys_info, ["w"], "torch-legacy"),
    "nested-deep-in-state-dict": (_nested_deep, ["enc.layers.0.w"], "torch-zip"),
    "torchscript-data.pkl": (_torchscript("data.pkl"), ["lin.weight", "lin.bias"], "torchscript"),
    "torchscript-constants.pkl": (_torchscript("constants.pkl"), ["lin.weight", "lin.bias"], "torchscript"),
    "dcp-metadata": (_dcp_metadata, ["w"], "torch-dcp"),
    "hf-checkpoint-training_args.bin": (_hf_training_args, ["w"], "safetensors"),
    "sharded-torch-shard": (_sharded_torch, ["a", "b"], "torch-sharded"),
}


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("container", list(CONTAINERS))
def test_payload_in_container_is_reported_never_run(
    tmp_path: Path,
    torchscript_bytes: bytes,
    dcp_small: Path,
    capsys: pytest.CaptureFixture[str],
    container: str,
    payload: str,
) -> None:
    marker = tmp_path / "MARKER"
    obj, qualname = payload_objects(marker)[payload]
    build, tensors, fmt = CONTAINERS[container]
    path = build(Ctx(tmp_path, obj, torchscript_bytes, dcp_small))
    meta = read_armed(path)
    assert meta.format == fmt
    assert_unsafe(meta, qualname, tensors, marker)
    assert_cli_exit_0_unsafe(path, qualname, capsys)
    assert not marker.exists()


def test_hand_written_os_system_everywhere(tmp_path: Path, torchscript_bytes: bytes, dcp_small: Path) -> None:
    """`os.system` spelled as an exploit writes it (GLOBAL 'os system'), spliced into each container."""
    marker = tmp_path / "MARKER"
    call = system_call(f"touch {marker}")

    class HandCtx(Ctx):
        @property
        def ops(self) -> Any:
            return call

    for container in (
        "torch-zip-rewritten-data.pkl",
        "torch-legacy-sys-info",
        "torchscript-data.pkl",
        "dcp-metadata",
    ):
        build, tensors, _ = CONTAINERS[container]
        sub = tmp_path / container
        sub.mkdir()
        meta = read_armed(build(HandCtx(sub, None, torchscript_bytes, dcp_small)))
        assert meta.safety.unsafe_globals == ("os.system",), container
        assert_unsafe(meta, "os.system", tensors, marker)


# ================================================================ raw pickles: not a checkpoint, global named


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_raw_pickle_error_names_the_global(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: str, protocol: int
) -> None:
    marker = tmp_path / "MARKER"
    obj, qualname = payload_objects(marker)[payload]
    path = write(tmp_path / "evil.pkl", pickle.dumps(obj, protocol=protocol))
    with armed() as calls, pytest.raises(FormatError) as ei:
        read_meta(path)
    assert calls == [] and not marker.exists()
    # reported as Python 3 resolves it, whatever the protocol spelled (`__builtin__.exec` -> builtins.exec)
    assert ei.value.cause.endswith(f"it references unsafe globals {qualname}"), ei.value.cause
    with armed():
        assert cli_main(["inspect", str(path), "--json"]) == 1
    out, err = capsys.readouterr()
    assert qualname in assert_one_line_error(out, err, path)
    assert not marker.exists()


def test_raw_hand_written_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = write(tmp_path / "evil.pkl", asm(system_call(f"touch {marker}")))
    with armed(), pytest.raises(FormatError) as ei:
        read_meta(path)
    assert ei.value.cause == (
        "not a PyTorch checkpoint: a plain pickle (no legacy magic number); "
        "it references unsafe globals os.system"
    )
    assert not marker.exists()


def test_cli_subprocess_unsafe_checkpoint_exit_0_and_raw_pickle_exit_1(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    obj, qualname = payload_objects(marker)["system"]
    ckpt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2, 3), "evil": obj}, ckpt)
    proc = run_cli("inspect", str(ckpt), "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["safety"]["safe"] is False and doc["safety"]["unsafe_globals"] == [qualname]
    assert [t["name"] for t in doc["tensors"]] == ["w"]
    raw = write(tmp_path / "evil.pkl", pickle.dumps(obj, protocol=4))
    proc = run_cli("inspect", str(raw))
    assert proc.returncode == 1
    assert qualname in assert_one_line_error(proc.stdout, proc.stderr, raw)
    assert not marker.exists()


# ================================================================ controls: the payloads are live


def _control_loads(path: Path) -> None:
    if path.is_dir() and (path / ".metadata").exists():  # what torch's FileSystemReader.read_metadata does
        pickle.loads((path / ".metadata").read_bytes())
    elif path.is_dir():
        for f in sorted(path.glob("*.bin")):
            torch.load(f, weights_only=False)
    elif path.suffix == ".pkl":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize(
    "container",
    [
        "raw",
        "torch-zip",
        "torch-legacy",
        "torch-legacy-sys-info",
        "dcp-metadata",
        "hf-checkpoint-training_args.bin",
    ],
)
def test_control_payload_runs_when_unpickled(
    tmp_path: Path, torchscript_bytes: bytes, dcp_small: Path, container: str, payload: str
) -> None:
    marker = tmp_path / "CONTROL_MARKER"
    obj, _ = payload_objects(marker)[payload]
    if container == "raw":
        path = write(tmp_path / "evil.pkl", pickle.dumps(obj, protocol=4))
    else:
        path = CONTAINERS[container][0](Ctx(tmp_path, obj, torchscript_bytes, dcp_small))
    if container.startswith("hf-"):
        path = path / "training_args.bin"
    assert not marker.exists()
    _control_loads(path)
    assert wait_for(marker), "the payload did not run: the ckptlab tests would prove nothing"


# ================================================================ benign checkpoints stay safe


def _train_state() -> dict[str, Any]:
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    return {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 3,
        "global_step": 30,
        "loss": 0.25,
    }


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_real_training_checkpoint_is_safe(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(_train_state(), path, _use_new_zipfile_serialization=layout == "zip")
    meta = read_armed(path)
    assert meta.safety.safe and meta.safety.unsafe_globals == () and meta.safety.findings == ()
    assert meta.n_tensors == 9 and meta.has_optimizer and meta.has_scheduler
    assert meta.step == 30 and meta.epoch == 3 and meta.metrics == {"loss": 0.25}


def test_rng_states_are_safe(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "rng.pt"
    state = {
        "model": {"w": torch.zeros(2)},
        "rng_state": {
            "numpy": np.random.get_state(),
            "numpy_generator": np.random.default_rng(0).bit_generator.state,
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
        },
        "np_scalar": np.float32(1.5),
        "np_array": np.arange(3),
    }
    torch.save(state, path)
    meta = read_armed(path)
    assert meta.safety.safe, meta.safety.unsafe_globals
    assert meta.has_rng_state and [t.name for t in meta.tensors] == ["w"]


def test_plain_torchscript_and_dcp_are_safe(
    torchscript_bytes: bytes, dcp_small: Path, tmp_path: Path
) -> None:
    ts = read_armed(write(tmp_path / "scripted.pt", torchscript_bytes))
    assert ts.format == "torchscript" and ts.safety.safe
    assert read_armed(dcp_small).safety.safe


# ================================================================ archives torch and zipfile read differently


def _evil_and_good(marker: Path) -> tuple[bytes, bytes]:
    good = asm({"w": tensor("0", 6, (2, 3))})
    evil = asm({"w": tensor("0", 6, (2, 3)), "x": system_call(f"touch {marker}")})
    return evil, good


def _dup_zip(first: tuple[str, bytes], second: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for n, d in [
            first,
            second,
            ("archive/data/0", bytes(24)),
            ("archive/byteorder", b"little"),
            ("archive/version", b"3\n"),
        ]:
            zf.writestr(n, d)
    return buf.getvalue()


DIFFERENTIAL = {
    # zipfile.getinfo() returns the LAST duplicate, torch's miniz reader the FIRST
    "duplicate-data.pkl": (
        lambda evil, good: _dup_zip(("archive/data.pkl", evil), ("archive/data.pkl", good)),
        "ambiguous zip archive: member 'archive/data.pkl' appears twice",
    ),
    # miniz matches names case-insensitively: torch loads DATA.PKL, zipfile finds data.pkl
    "case-colliding-data.pkl": (
        lambda evil, good: _dup_zip(("archive/DATA.PKL", evil), ("archive/data.pkl", good)),
        "ambiguous zip archive: members 'archive/DATA.PKL' and 'archive/data.pkl' differ only in case",
    ),
}


@pytest.mark.parametrize("case", list(DIFFERENTIAL))
def test_ambiguous_archive_is_refused(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "MARKER"
    build, cause = DIFFERENTIAL[case]
    path = write(tmp_path / "model.pt", build(*_evil_and_good(marker)))
    with armed(), pytest.raises(FormatError) as ei:
        read_meta(path)
    # the refusal also names the hidden copy's payload: torch would run it
    assert ei.value.cause == f"{cause}; it references unsafe globals os.system" and not marker.exists()


@pytest.mark.parametrize("case", list(DIFFERENTIAL))
def test_control_torch_loads_the_hidden_copy(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "CONTROL_MARKER"
    path = write(tmp_path / "model.pt", DIFFERENTIAL[case][0](*_evil_and_good(marker)))
    torch.load(path, weights_only=False)
    assert marker.exists(), "torch no longer loads the first/case-folded copy: the refusal may be relaxed"


# ================================================================ payloads behind refusals and odd parts


def _crc_damaged(z: bytes, member: str) -> bytes:
    """`member` with a zero CRC-32 in its local header and its central directory entry."""
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        h = zf.getinfo(member).header_offset
    return patch_central(z[: h + 14] + b"\0\0\0\0" + z[h + 18 :], member, 16, b"\0\0\0\0")


def _refused_zip(kind: str, marker: Path) -> bytes:
    obj, _ = payload_objects(marker)["system"]
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2, 3), "evil": obj}, buf)
    z = buf.getvalue()
    name = member_name(z, "/data.pkl")
    return rewrite_zip(z, compress=[name]) if kind == "deflated" else _crc_damaged(z, name)


@pytest.mark.parametrize("kind", ["deflated", "bad-crc"])
def test_control_torch_loads_refused_data_pkl(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "CONTROL_MARKER"
    torch.load(write(tmp_path / "m.pt", _refused_zip(kind, marker)), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["deflated", "bad-crc"])
def test_refused_data_pkl_error_names_unsafe_globals(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "MARKER"
    path = write(tmp_path / "m.pt", _refused_zip(kind, marker))
    with armed(), pytest.raises(FormatError) as ei:
        read_meta(path)
    assert "posix.system" in ei.value.cause and not marker.exists()


@pytest.mark.parametrize("payload", ["exec", "popen"])
def test_protocol_2_globals_reported_by_their_python_3_name(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "MARKER"
    obj, qualname = payload_objects(marker)[payload]
    meta = read_armed(_zip_state(Ctx(tmp_path, obj, b"", tmp_path)))
    assert qualname in meta.safety.unsafe_globals


def _hf_plain_pickle(tmp_path: Path, part: str, marker: Path) -> Path:
    from safetensors.torch import save_file

    d = tmp_path / "checkpoint-10"
    d.mkdir()
    save_file({"w": torch.zeros(2, 3)}, str(d / "model.safetensors"))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
    obj, _ = payload_objects(marker)["system"]
    write(d / part, pickle.dumps(obj, protocol=4))
    return d


@pytest.mark.parametrize("part", ["training_args.bin", "optimizer.pt"])
def test_control_torch_load_runs_plain_pickle_part(tmp_path: Path, part: str) -> None:
    marker = tmp_path / "CONTROL_MARKER"
    d = _hf_plain_pickle(tmp_path, part, marker)
    with pytest.raises(Exception):  # noqa: B017 - the payload runs before torch notices it is no checkpoint
        torch.load(d / part, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("part", ["training_args.bin", "optimizer.pt"])
def test_hf_dir_with_plain_pickle_part_is_unsafe(tmp_path: Path, part: str) -> None:
    marker = tmp_path / "MARKER"
    meta = read_armed(_hf_plain_pickle(tmp_path, part, marker))
    assert not marker.exists()
    assert meta.safety.safe is False and "posix.system" in meta.safety.unsafe_globals


def _dcp_with_evil_item(tmp_path: Path, marker: Path) -> Path:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    obj, _ = payload_objects(marker)["system"]
    d = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {"w": torch.zeros(2, 3)}, "step": 3, "extra": obj}, checkpoint_id=str(d))
    return d


def test_control_dcp_load_runs_bytes_item(tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    marker = tmp_path / "CONTROL_MARKER"
    d = _dcp_with_evil_item(tmp_path, marker)
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"model": {"w": torch.empty(2, 3)}, "step": 0, "extra": None}, checkpoint_id=str(d))
    assert marker.exists()  # DefaultLoadPlanner.load_bytes: torch.load(value, weights_only=False)


def test_dcp_malicious_bytes_item_is_unsafe(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    meta = read_armed(_dcp_with_evil_item(tmp_path, marker))
    assert not marker.exists()
    assert meta.safety.safe is False and "posix.system" in meta.safety.unsafe_globals


def test_a_pickle_cannot_alter_the_shared_stand_ins(tmp_path: Path) -> None:
    """BUILD with slot state on a global would setattr on its (process-wide) stand-in class: refused, and a
    benign file read afterwards in the same process is read exactly as before."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2, 3)}, good)
    before = read_meta(good).to_json()
    # GLOBAL torch._utils._rebuild_tensor_v2; BUILD (None, {"_handler": None, "_global": "x"}); then a dict
    evil = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00"
        b"N}q\x01(X\x08\x00\x00\x00_handlerq\x02NX\x07\x00\x00\x00_globalq\x03X\x01\x00\x00\x00xq\x04u\x86b"
        b"0}."
    )
    path = write(tmp_path / "evil.pt", torch_zip(evil, {}))
    with pytest.raises(FormatError, match="pickle tries to set the state of a global"):
        read_meta(path)
    assert read_meta(good).to_json() == before


# HF Trainer's training_args.bin: TrainingArguments rebuilt empty (NEWOBJ) with its fields set (BUILD), enums
# looked up by value. What Trainer writes, from transformers 4.57 / 5.23 (the globals of real files).
_ARGS = G("transformers.training_args", "TrainingArguments")
_ENUM = G("transformers.trainer_utils", "SchedulerType")
_AS_WRITTEN = Build(
    Raw(ops(_ARGS) + pickle.EMPTY_TUPLE + pickle.NEWOBJ),
    {"learning_rate": 3e-4, "lr_scheduler_type": Call(_ENUM, ("cosine",))},
)


@pytest.mark.parametrize("walk", ["C", "interpreter"])
def test_training_args_bin_is_reported_and_shown(tmp_path: Path, walk: str) -> None:
    """Loading training_args.bin takes weights_only=False: its classes are reported like any others (an
    allowance for them, even one checked at each use, left calls a real unpickler makes through instance
    dicts and through methods of the objects it passes to allowlisted callables). What it says is shown."""
    limits = Limits(max_fast_pickle_bytes=0) if walk == "interpreter" else DEFAULT_LIMITS
    data = torch_zip(asm(_AS_WRITTEN), {}, prefix="training_args")
    meta = read_meta(write(tmp_path / "training_args.bin", data), limits)
    assert meta.safety.unsafe_globals == (
        "transformers.training_args.TrainingArguments",
        "transformers.trainer_utils.SchedulerType",
    )
    assert meta.metadata["training_args"] == {"learning_rate": 3e-4, "lr_scheduler_type": "cosine"}
    assert meta.entries[0].summary == "TrainingArguments: lr=0.0003"


def test_a_call_hidden_in_rebuild_from_type_v2_is_refused(tmp_path: Path) -> None:
    """torch's _rebuild_from_type_v2(func, type, args, state) calls func(*args): only its tensor rebuilds
    may be that func, or the call would happen where no unpickler sees it."""
    rebuild = G("torch._tensor", "_rebuild_from_type_v2")
    hidden = Call(rebuild, (G("builtins", "dict"), G("torch", "Tensor"), (), {}))
    path = write(tmp_path / "model.pt", torch_zip(asm({"w": hidden}), {}))
    with pytest.raises(
        FormatError, match=r"_rebuild_from_type_v2 calls builtins\.dict, not a tensor rebuild"
    ):
        read_meta(path)


@pytest.mark.parametrize("walk", ["C", "interpreter"])
def test_build_on_a_global_is_refused(tmp_path: Path, walk: str) -> None:
    """BUILD on a class or function would set its attributes for the whole process (a real load of this
    rewrites _rebuild_parameter's defaults); both walks refuse it."""
    limits = Limits(max_fast_pickle_bytes=0) if walk == "interpreter" else DEFAULT_LIMITS
    target = G("torch._utils", "_rebuild_parameter")
    path = write(tmp_path / "model.pt", torch_zip(asm([Build(target, {"__defaults__": ("x",)})]), {}))
    with pytest.raises(FormatError, match="pickle tries to set the state of a global"):
        read_meta(path, limits)


@pytest.mark.parametrize("context", [None, "dcp"])
def test_a_dotted_global_name_is_never_allowed(context: str | None) -> None:
    """Protocol 4 resolves `module` + `a.b` attribute by attribute: a module's imports reach os.system
    (torch.distributed.checkpoint.filesystem + os.system ran `os.system` from a DCP .metadata)."""
    from ckptlab.formats.pickle_vm import RestrictedUnpickler

    stream = pickle.PROTO + b"\x04" + ops("torch.distributed.checkpoint.filesystem") + ops("os.system")
    stream += pickle.STACK_GLOBAL + pickle.STOP
    u = RestrictedUnpickler(io.BytesIO(stream), persistent_load=None, context=context)
    u.load()
    assert u.unsafe == ["torch.distributed.checkpoint.filesystem.os.system"]


def test_hf_checkpoint_with_tampered_training_args_is_unsafe(tmp_path: Path) -> None:
    """A resume never loads training_args.bin, but a payload in it is still a payload: the folder says so."""
    d = tmp_path / "checkpoint-10"
    d.mkdir()
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, d / "pytorch_model.bin")
    payload = Build(Raw(ops(_ARGS) + pickle.EMPTY_TUPLE + pickle.NEWOBJ), {"lr": system_call("id")})
    write(d / "training_args.bin", torch_zip(asm(payload), {}, prefix="training_args"))
    meta = read_meta(d)
    assert not meta.safety.safe and "os.system" in meta.safety.unsafe_globals


# ---------------------------------------------------------------- crafted global names in what is shown


def _named_globals(path: Path, names: list[tuple[str, str]]) -> Path:
    """A torch zip whose pickle names each (module, name) through STACK_GLOBAL, which takes any string."""
    obj: dict[str, Any] = {"w": tensor("0", 1, (1,))}
    obj |= {f"x{i}": Raw(ops(m) + ops(n) + pickle.STACK_GLOBAL) for i, (m, n) in enumerate(names)}
    path.write_bytes(torch_zip(asm(obj, 4), {"0": bytes(4)}))
    return path


def test_a_newline_in_a_global_name_cannot_forge_a_cli_line(tmp_path: Path) -> None:
    forged = "  safety    safe (only allowlisted globals)"
    path = _named_globals(tmp_path / "model.pt", [("os", "system\n" + forged)])
    r = run_cli("inspect", str(path))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert forged not in lines and not any(line.startswith("  safety    safe") for line in lines)
    assert "os.system\\n  safety    safe" in r.stdout  # shown, escaped, on the verdict's line


def test_a_backtick_in_a_global_name_cannot_inject_markdown(tmp_path: Path) -> None:
    from ckptlab.ui.common import unsafe_headline

    path = _named_globals(tmp_path / "model.pt", [("os", "system` [click](https://evil.example) `x")])
    meta = read_meta(path)
    line = unsafe_headline(meta.safety, meta.format)
    assert "`os.system' [click](https://evil.example) 'x`" in line  # inside one code span, inert
    assert line.count("`") % 2 == 0
    # a global carrying its own ': ' is not taken for a part of a folder
    meta = read_meta(_named_globals(tmp_path / "m2.pt", [("helper.bin: os", "system")]))
    assert "never load this file" in unsafe_headline(meta.safety, meta.format)

"""The loading layer: every format's tensors come back bit-exact on CPU; CUDA paths run when a GPU exists."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import small_state_dict, training_checkpoint

from ckptlab.analysis.stats import histogram, tensor_stats
from ckptlab.errors import DeviceError
from ckptlab.formats import read_meta
from ckptlab.loading import available_devices, iter_chunks, iter_tensors, load_tensor, resolve_device

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.itemsize == 1 and a.dtype.is_floating_point:  # fp8: compare bit patterns
        return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    return torch.equal(a.cpu(), b.cpu())


@pytest.mark.parametrize(
    "fixture", ["zip_pt", "legacy_pt", "safetensors_file", "sharded_dir", "sharded_torch_dir"]
)
def test_every_tensor_bit_exact(fixture: str, request: pytest.FixtureRequest) -> None:
    meta = read_meta(request.getfixturevalue(fixture))
    ref = small_state_dict()
    for name, t in iter_tensors(meta, device="cpu"):
        assert t.device.type == "cpu"
        assert _same(t, ref[name]), name


def test_torchscript_and_dcp_and_hf(torchscript_file: Path, dcp_dir: Path, hf_dir: Path) -> None:
    ts = torch.jit.load(str(torchscript_file))
    meta = read_meta(torchscript_file)
    assert _same(load_tensor(meta, "fc.weight", "cpu"), ts.fc.weight.detach())
    ref = training_checkpoint()["model_state_dict"]
    for path in (dcp_dir, hf_dir):
        meta = read_meta(path)
        for t in meta.tensors:
            assert _same(load_tensor(meta, t.name, "cpu"), ref[t.name]), (path, t.name)


def test_optimizer_state_tensors_load(train_pt: Path) -> None:
    meta = read_meta(train_pt)
    ref = training_checkpoint()["optimizer_state_dict"]["state"][0]["exp_avg"]
    assert _same(load_tensor(meta, "optimizer_state_dict.state.0.exp_avg", "cpu"), ref)


@pytest.mark.parametrize("fixture", ["zip_pt", "safetensors_file"])
def test_chunks_cover_the_tensor(fixture: str, request: pytest.FixtureRequest) -> None:
    meta = read_meta(request.getfixturevalue(fixture))
    ref = small_state_dict()["encoder.0.weight"]
    chunks = list(iter_chunks(meta, "encoder.0.weight", "cpu", chunk_bytes=24))  # 6 floats, or 1 row of 4
    assert len(chunks) > 1
    assert torch.equal(torch.cat(chunks), ref.reshape(-1))


def test_strided_view_chunks(zip_pt: Path) -> None:
    meta = read_meta(zip_pt)
    chunks = list(iter_chunks(meta, "proj.weight", "cpu", chunk_bytes=8))
    assert torch.equal(torch.cat(chunks), small_state_dict()["proj.weight"].reshape(-1))


def test_resolve_device_on_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert available_devices() == ["auto", "cpu"]
    with pytest.raises(
        DeviceError, match="'cuda' requested but CUDA is not available; use --device cpu or auto"
    ):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_stats_match_torch(zip_pt: Path) -> None:
    meta = read_meta(zip_pt)
    ref = small_state_dict()["encoder.0.weight"].double()
    s = tensor_stats(meta, "encoder.0.weight", "cpu", chunk_bytes=16)  # forces several chunks
    assert s.numel == 32 and s.device == "cpu"
    assert s.min == pytest.approx(float(ref.min())) and s.max == pytest.approx(float(ref.max()))
    assert s.mean == pytest.approx(float(ref.mean()))
    assert s.std == pytest.approx(float(ref.std()), rel=1e-9)
    assert s.norm == pytest.approx(float(ref.norm()))
    assert (s.nan_count, s.inf_count, s.zero_count) == (0, 0, 0)
    h = histogram(meta, "encoder.0.weight", "cpu", bins=8, stats=s)
    assert sum(h.counts) == 32 and len(h.edges) == 9
    assert h.edges[0] == s.min and h.edges[-1] == s.max


def test_stats_count_nan_inf(tmp_path: Path) -> None:
    p = tmp_path / "bad.pt"
    torch.save({"w": torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0, 3.0])}, p)
    s = tensor_stats(read_meta(p), "w", "cpu")
    assert (s.nan_count, s.inf_count, s.zero_count) == (1, 2, 1)
    assert (s.min, s.max) == (0.0, 3.0)
    assert s.mean == pytest.approx(4 / 3)
    assert s.to_json()["min"] == 0.0


def test_stats_low_precision(zip_pt: Path) -> None:
    s = tensor_stats(read_meta(zip_pt), "head.scale", "cpu")
    assert (s.min, s.max, s.dtype) == (0.5, 1.5, "float8_e4m3fn")
    assert s.norm == pytest.approx(math.sqrt(0.25 + 2.25))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("fixture", ["zip_pt", "legacy_pt", "safetensors_file", "dcp_dir"])
def test_load_onto_cuda(fixture: str, request: pytest.FixtureRequest) -> None:
    meta = read_meta(request.getfixturevalue(fixture))
    for t in meta.tensors:
        x = load_tensor(meta, t.name, "cuda")
        assert x.device.type == "cuda"
        assert _same(x.cpu(), load_tensor(meta, t.name, "cpu"))
    assert resolve_device("auto").type == "cuda"


@pytest.mark.gpu
@needs_cuda
def test_stats_on_cuda_match_cpu(zip_pt: Path) -> None:
    meta = read_meta(zip_pt)
    a = tensor_stats(meta, "encoder.0.weight", "cuda")
    b = tensor_stats(meta, "encoder.0.weight", "cpu")
    assert a.device.startswith("cuda")
    for k in ("min", "max", "mean", "std", "norm"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-6)

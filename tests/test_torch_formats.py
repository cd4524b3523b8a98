"""Reader tests on real torch files: zip, legacy, CUDA-saved, TorchScript, Lightning, nn.Module."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
from conftest import EXPECTED, EXPECTED_PARAMS, small_state_dict

import ckptlab
from ckptlab.formats import detect_file, read_meta

torch = pytest.importorskip("torch")


def _shapes(meta: ckptlab.CheckpointMeta) -> dict[str, tuple[tuple[int, ...], str]]:
    return {t.name: (t.shape, t.dtype) for t in meta.tensors}


@pytest.mark.parametrize("fixture,fmt", [("zip_pt", "torch-zip"), ("legacy_pt", "torch-legacy")])
def test_state_dict_exact(fixture: str, fmt: str, request: pytest.FixtureRequest) -> None:
    meta = read_meta(request.getfixturevalue(fixture))
    assert meta.format == fmt
    assert _shapes(meta) == EXPECTED
    assert [t.name for t in meta.tensors] == list(EXPECTED)  # file order preserved
    assert meta.n_tensors == 8
    assert meta.n_params == EXPECTED_PARAMS
    assert meta.dtypes == {"float32": 126, "bfloat16": 8, "float8_e4m3fn": 2, "int64": 1}
    assert meta.tensor("head.scale").nbytes == 2
    assert meta.tensor("encoder.norm.weight").nbytes == 16
    assert list(meta.tied.values()) == [("embed.weight", "head.weight")]
    assert meta.safety.safe and meta.safety.unsafe_globals == ()
    assert (meta.step, meta.epoch, meta.has_optimizer, meta.has_scheduler) == (None, None, False, False)
    assert meta.metadata["saved_on"] == ["cpu"]


def test_training_checkpoint_fields(train_pt: Path) -> None:
    meta = read_meta(train_pt)
    assert meta.format == "torch-zip"
    assert [t.name for t in meta.tensors] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert meta.n_params == 4 * 8 + 8 + 8 * 2 + 2
    assert meta.epoch == 3 and meta.step == 300
    assert meta.metrics == {"loss": 0.25, "val_acc": 0.875}
    assert (meta.has_optimizer, meta.has_scheduler, meta.has_rng_state) == (True, True, True)
    assert meta.metadata["model_key"] == "model_state_dict"
    assert meta.metadata["arch"] == "mlp"
    kinds = {e.name: e.kind for e in meta.entries}
    assert kinds == {
        "epoch": "int",
        "global_step": "int",
        "optimizer_state_dict": "optimizer",
        "scheduler_state_dict": "scheduler",
        "loss": "float",
        "val_acc": "float",
        "rng_state": "tensor",
        "arch": "str",
    }
    opt = next(e for e in meta.entries if e.name == "optimizer_state_dict")
    assert opt.summary.startswith("1 param group over 4 params, lr=0.000125; state for 4 params (12 tensors")
    # optimizer exp_avg/exp_avg_sq/step and the RNG state are other tensors, not model weights
    assert len(meta.other_tensors) == 13
    assert meta.safety.safe


def test_lightning_checkpoint(lightning_ckpt: Path) -> None:
    meta = read_meta(lightning_ckpt)
    assert meta.framework == "lightning"
    assert [t.name for t in meta.tensors] == [
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
    ]
    assert (meta.epoch, meta.step) == (2, 300)
    assert meta.metrics == {"best_model_score": 0.125, "current_score": 0.125, "val_loss": 0.125}
    assert meta.has_optimizer and meta.has_scheduler and not meta.has_rng_state
    assert meta.metadata["lightning_version"] == "2.4.0"
    assert meta.metadata["hyper_parameters"] == {"lr": 0.001, "hidden": 8}
    assert meta.metadata["monitor"] == "val_loss"
    assert meta.safety.safe


def test_deepspeed_model_states(tmp_path: Path) -> None:
    # DeepSpeed's global_step<N>/mp_rank_00_model_states.pt: the weights under "module", the step as
    # "global_steps", optimizer state in the zero_*_optim_states.pt files beside it
    sd = torch.nn.Linear(4, 3).state_dict()
    ck = {"module": sd, "buffer_names": [], "optimizer": None, "lr_scheduler": {"last_epoch": 40},
          "global_steps": 40, "global_samples": 640, "skipped_steps": 0, "ds_version": "0.14.0"}  # fmt: skip
    path = tmp_path / "global_step40" / "mp_rank_00_model_states.pt"
    path.parent.mkdir()
    torch.save(ck, path)
    meta = read_meta(path)
    assert [t.name for t in meta.tensors] == ["weight", "bias"] and meta.step == 40
    assert meta.safety.safe


def test_archive_prefix_is_any_name(tmp_path: Path) -> None:
    # torch names the archive folder after the file stem; a renamed file keeps the old folder name
    p = tmp_path / "weird name.v2.pt"
    torch.save({"w": torch.ones(3)}, p)
    renamed = tmp_path / "other.bin"
    p.rename(renamed)
    names = zipfile.ZipFile(renamed).namelist()
    assert names[0] == "weird name.v2/data.pkl"
    meta = read_meta(renamed)
    assert meta.format == "torch-zip" and _shapes(meta) == {"w": ((3,), "float32")}


def test_saved_from_cuda_opens_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files saved from CUDA tensors record location 'cuda:0'; they must read and load on a CPU box."""
    import torch.serialization as ser

    from ckptlab.loading import load_tensor

    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    zp, lp = tmp_path / "cuda_zip.pt", tmp_path / "cuda_legacy.pt"
    torch.save(sd, zp)
    torch.save(sd, lp, _use_new_zipfile_serialization=False)
    monkeypatch.undo()
    for p, fmt in ((zp, "torch-zip"), (lp, "torch-legacy")):
        meta = read_meta(p)
        assert meta.format == fmt
        assert meta.metadata["saved_on"] == ["cuda:0"]
        assert torch.equal(load_tensor(meta, "w", "cpu"), sd["w"])


def test_torchscript_listed_never_executed(torchscript_file: Path) -> None:
    meta = read_meta(torchscript_file)
    assert meta.format == "torchscript"
    assert _shapes(meta) == {
        "buf": ((2,), "float32"),
        "fc.weight": ((2, 3), "float32"),
        "fc.bias": ((2,), "float32"),
    }
    # __torch__.<module>.<class>; TorchScript mangles repeated scripting as ___torch_mangle_N
    assert meta.metadata["torchscript_class"].startswith("conftest.")
    assert meta.metadata["torchscript_class"].endswith(".Net")
    assert meta.metadata["code_files"] == 2
    assert meta.safety.safe  # __torch__ class names are TorchScript's own, not importable Python


def test_pickled_module_reports_classes(tmp_path: Path) -> None:
    """torch.save(model) pickles classes: tensors are still listed, the classes are reported unsafe."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    p = tmp_path / "full_model.pt"
    torch.save(model, p)
    meta = read_meta(p)
    assert [t.name for t in meta.tensors] == ["0.weight", "0.bias"]
    assert not meta.safety.safe
    assert "torch.nn.modules.container.Sequential" in meta.safety.unsafe_globals
    assert "torch.nn.modules.linear.Linear" in meta.safety.unsafe_globals


def test_numpy_rng_state_is_safe(tmp_path: Path) -> None:
    import random

    import numpy as np

    p = tmp_path / "rng_state.pth"
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}, p)
    meta = read_meta(p)
    assert meta.safety.safe, meta.safety.unsafe_globals
    assert [e.name for e in meta.entries] == ["python", "numpy", "cpu"]
    assert meta.has_rng_state and meta.n_tensors == 0  # an RNG file holds no model weights


def test_accelerate_random_states_file(tmp_path: Path) -> None:
    """Accelerate's random_states_0.pkl on its own: RNG state, not a model; its `step` is the
    gradient-accumulation counter, not a training step."""
    import random

    import numpy as np

    p = tmp_path / "random_states_0.pkl"
    states = {"step": 0, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state()}
    states |= {"torch_manual_seed": torch.get_rng_state(), "torch_cuda_manual_seed": [torch.get_rng_state()]}
    torch.save(states, p)
    meta = read_meta(p)
    assert meta.n_tensors == 0 and meta.has_rng_state and meta.step is None
    assert meta.framework == "accelerate" and meta.safety.safe
    assert len(meta.other_tensors) == 2


@pytest.mark.parametrize("legacy", [False, True])
def test_numpy_scalars_are_values(tmp_path: Path, legacy: bool) -> None:
    """A metric computed with numpy pickles as `multiarray.scalar(dtype, raw bytes)`: decoded to its value
    (a metric, a step), in either byte order, never through numpy."""
    import numpy as np

    p = tmp_path / "ckpt.pt"
    doc = {
        "model": small_state_dict(),
        "global_step": np.int64(1200),
        "val_loss": np.float64(0.25),
        "acc": np.float32(0.5),
        "big_endian": np.array([1.5], dtype=">f8")[0],
        "flag": np.bool_(True),
        "name": np.str_("run-1"),
    }
    torch.save(doc, p, _use_new_zipfile_serialization=not legacy)
    meta = read_meta(p)
    assert meta.safety.safe
    assert meta.step == 1200
    assert meta.metrics == {"val_loss": 0.25, "acc": 0.5, "big_endian": 1.5}
    kinds = {e.name: (e.kind, e.summary) for e in meta.entries}
    assert kinds["val_loss"] == ("numpy.float64", "0.25")
    assert kinds["flag"] == ("numpy.bool", "True")
    assert kinds["name"][0] == "object"  # a numpy string is not decoded: reported as the object it is


def test_detect_by_content_not_extension(zip_pt: Path, legacy_pt: Path, safetensors_file: Path) -> None:
    swapped = {zip_pt: "x.safetensors", legacy_pt: "y.h5", safetensors_file: "z.pt"}
    for src, name in swapped.items():
        dst = src.with_name(name)
        dst.write_bytes(src.read_bytes())
        assert read_meta(dst).format == read_meta(src).format
    assert detect_file(zip_pt) == "zip" and detect_file(legacy_pt) == "pickle"
    assert ckptlab.detect(zip_pt) == "torch-zip"


def test_metadata_path_does_not_import_torch(zip_pt: Path, safetensors_file: Path, legacy_pt: Path) -> None:
    import subprocess

    code = (
        "import sys, ckptlab\n"
        f"for p in {[str(zip_pt), str(safetensors_file), str(legacy_pt)]!r}: ckptlab.read_meta(p)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_state_dict_helper_is_what_we_think() -> None:
    sd = small_state_dict()
    assert sd["head.weight"].untyped_storage().data_ptr() == sd["embed.weight"].untyped_storage().data_ptr()
    assert not sd["proj.weight"].is_contiguous()


def test_damaged_scalar_storage_header_names_the_file(tmp_path: Path) -> None:
    """A metric's one-element storage is read for its value: a damaged local header there is an error that
    names the file (it was raised with an empty path, which read_meta leaves as it is)."""
    p = tmp_path / "metric.pt"
    torch.save({"model": {"w": torch.zeros(2, 3)}, "epoch": torch.tensor(7), "note": "x"}, p)
    z = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        storages = [i for i in zf.infolist() if "/data/" in i.filename and i.file_size == 8]
    assert len(storages) == 1  # the epoch's int64 (the weights' storage is 24 bytes)
    z[storages[0].header_offset] ^= 0xFF  # the local header's signature
    p.write_bytes(bytes(z))
    with pytest.raises(ckptlab.FormatError) as e:
        read_meta(p)
    assert e.value.path == str(p)
    assert str(p) in str(e.value) and "local header" in str(e.value)

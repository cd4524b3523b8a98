"""safetensors (plain and sharded), sharded torch, HF Trainer checkpoint dirs and DCP dirs."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import pytest
from adversarial import ReduceTo
from conftest import EXPECTED, training_checkpoint, write_sharded_safetensors
from ui_fixtures import backdate

from ckptlab.cli import render_inspect
from ckptlab.errors import FormatError, IncompleteError
from ckptlab.formats import read_meta
from ckptlab.formats.safetensors_reader import read_safetensors
from ckptlab.index.scan import scan
from ckptlab.index.store import Store

torch = pytest.importorskip("torch")

EXPECTED_ST = {k: v for k, v in EXPECTED.items() if k != "head.weight"}


def test_safetensors_exact(safetensors_file: Path) -> None:
    meta = read_meta(safetensors_file)
    assert meta.format == "safetensors" and meta.layout == "file"
    assert {t.name: (t.shape, t.dtype) for t in meta.tensors} == EXPECTED_ST
    assert meta.n_params == 40 + 32 + 8 + 8 + 2 + 6 + 1
    assert meta.metadata == {"format": "pt", "step": "1200"}
    assert meta.step == 1200
    assert meta.safety.safe and meta.files == (str(safetensors_file),)


def _st_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_all_reference_dtypes(tmp_path: Path) -> None:
    codes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}  # fmt: skip
    header, off = {}, 0
    for code, size in codes.items():
        header[f"t_{code}"] = {"dtype": code, "shape": [2], "data_offsets": [off, off + 2 * size]}
        off += 2 * size
    p = tmp_path / "dtypes.safetensors"
    p.write_bytes(_st_bytes(header, b"\0" * off))
    got = {t.name: t.dtype for t in read_safetensors(p).tensors}
    assert got["t_F8_E4M3"] == "float8_e4m3fn" and got["t_BF16"] == "bfloat16" and got["t_BOOL"] == "bool"
    assert got["t_U64"] == "uint64" and len(got) == len(codes)


def test_safetensors_duplicate_key_reported(tmp_path: Path) -> None:
    entry = b'{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    raw = b'{"a": ' + entry + b', "a": ' + entry + b"}"
    p = tmp_path / "dup.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(FormatError, match="duplicate key 'a' in safetensors header"):
        read_meta(p)


def test_sharded_safetensors(sharded_dir: Path) -> None:
    idx = sharded_dir / "model.safetensors.index.json"
    for target in (idx, sharded_dir):  # the index file or its directory
        meta = read_meta(target)
        assert meta.format == "safetensors-sharded" and meta.layout == "sharded"
        assert {t.name: (t.shape, t.dtype) for t in meta.tensors} == EXPECTED_ST
        assert meta.metadata["shards"] == 2
        assert len(meta.files) == 3 and meta.files[0] == str(idx)
        assert meta.warnings == ()
        assert meta.size_bytes == sum(Path(f).stat().st_size for f in meta.files)


def test_sharded_missing_shard_is_incomplete(sharded_dir: Path) -> None:
    (sharded_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        IncompleteError, match=r"1 of 2 shards listed in the index are missing: model-00002-of-00002"
    ):
        read_meta(sharded_dir / "model.safetensors.index.json")


def test_sharded_torch(sharded_torch_dir: Path) -> None:
    meta = read_meta(sharded_torch_dir / "pytorch_model.bin.index.json")
    assert meta.format == "torch-sharded"
    assert [t.name for t in meta.tensors] == list(EXPECTED)
    assert meta.safety.safe
    # each shard numbers its storages from "0": equal keys in two shards are not tied weights
    assert meta.tied == {}


def test_sharded_torch_keeps_ties_within_a_shard(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    emb = torch.zeros(4, 2)
    torch.save({"a.weight": torch.ones(2)}, tmp_path / "m-1.bin")
    torch.save({"wte.weight": emb, "lm_head.weight": emb}, tmp_path / "m-2.bin")  # tied, as GPT-2 saves them
    wm = {"a.weight": "m-1.bin", "wte.weight": "m-2.bin", "lm_head.weight": "m-2.bin"}
    (tmp_path / "m.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    meta = read_meta(tmp_path / "m.bin.index.json")
    assert list(meta.tied.values()) == [("wte.weight", "lm_head.weight")]
    tied = [line for line in render_inspect(meta).splitlines() if line.startswith("  tied")]
    assert tied == ["  tied      wte.weight = lm_head.weight"]


def test_sharded_torch_with_shards_in_folders(tmp_path: Path) -> None:
    # the weight map names shards by relative path; two shards of the same file name in two folders number
    # their storages alike, and are still not tied
    torch = pytest.importorskip("torch")
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        torch.save({f"{sub}.w": torch.ones(2)}, tmp_path / sub / "model.bin")
    wm = {"x.w": "x/model.bin", "y.w": "y/model.bin"}
    (tmp_path / "model.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    meta = read_meta(tmp_path / "model.bin.index.json")
    assert [t.name for t in meta.tensors] == ["x.w", "y.w"] and meta.tied == {}


def test_hf_checkpoint_dir(hf_dir: Path) -> None:
    meta = read_meta(hf_dir)
    assert meta.path == str(hf_dir)
    assert meta.format == "safetensors" and meta.layout == "hf-checkpoint" and meta.framework == "hf-trainer"
    assert [t.name for t in meta.tensors] == [
        "0.bias",
        "0.weight",
        "2.bias",
        "2.weight",
    ]  # safetensors sorts keys
    assert (meta.step, meta.epoch) == (500, 1.5)
    assert (meta.has_optimizer, meta.has_scheduler, meta.has_rng_state) == (True, True, True)
    assert meta.metrics == {"loss": 0.8, "learning_rate": 4e-05, "eval_loss": 0.9, "eval_accuracy": 0.7,
                            "best_metric": 0.42}  # fmt: skip
    assert meta.metadata["max_steps"] == 1000
    assert meta.metadata["model_config"] == {"model_type": "mlp", "architectures": ["MLP"]}
    names = sorted(Path(f).name for f in meta.files)
    assert names == ["config.json", "model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt",
                     "trainer_state.json"]  # fmt: skip
    assert {e.name: e.kind for e in meta.entries}["optimizer.pt"] == "optimizer"
    alone = read_meta(hf_dir / "optimizer.pt")  # a standalone optimizer file holds no model weights
    assert alone.has_optimizer and alone.n_tensors == 0 and len(alone.other_tensors) == 12
    assert alone.entries[0].kind == "optimizer"
    assert meta.safety.safe


def test_hf_checkpoint_unreadable_parts_scanned_once(hf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable optimizer.pt is scanned for globals once (by read_file, whose error carries the result);
    what it finds, and a part with nothing found, are reported as before."""
    import ckptlab.formats.globals_scan as gs
    import ckptlab.formats.multifile as mf

    (hf_dir / "optimizer.pt").write_bytes(b"\x80\x02cos\nsystem\nq\x00.")  # a pickle, not a torch file
    (hf_dir / "scheduler.pt").write_bytes(b"\x80\x02K\x01.")  # nothing unsafe, not a torch file either
    scanned: list[str] = []
    real = gs.unsafe_globals_in_file

    def counting(path: Path, limits: object) -> list[str]:
        scanned.append(path.name)
        return real(path, limits)  # type: ignore[arg-type]

    monkeypatch.setattr(gs, "unsafe_globals_in_file", counting)
    monkeypatch.setattr(mf, "unsafe_globals_in_file", counting)
    meta = read_meta(hf_dir)
    assert sorted(scanned) == ["optimizer.pt", "scheduler.pt"]
    assert meta.safety.unsafe_globals == ("os.system",)
    assert meta.safety.findings == ("optimizer.pt: unreadable part references os.system",)
    assert meta.safety.unverified == ("scheduler.pt",)
    kinds = {e.name: e.kind for e in meta.entries}
    assert kinds["optimizer.pt"] == kinds["scheduler.pt"] == "unreadable"
    assert not meta.has_optimizer and not meta.has_scheduler


def test_dcp_directory(dcp_dir: Path) -> None:
    meta = read_meta(dcp_dir)
    assert meta.format == "torch-dcp" and meta.layout == "dcp"
    assert {t.name: t.shape for t in meta.tensors} == {"0.weight": (8, 4), "0.bias": (8,), "2.weight": (2, 8),
                                                       "2.bias": (2,)}  # fmt: skip
    assert meta.step == 300
    assert meta.safety.safe
    assert [Path(f).name for f in meta.files] == [".metadata", "__0_0.distcp"]


def _save_dcp(state: dict, d: Path) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(d))


def test_dcp_app_state_nesting(tmp_path: Path) -> None:
    """PyTorch's DCP tutorial saves `{"app": AppState(model, optimizer)}`: the weights sit at `app.model.*`
    beside the optimizer at `app.optim.*` (found by its `param_groups`), scalars beside them."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched = {"last_epoch": 1, "base_lrs": [0.01]}
    app = {"model": model.state_dict(), "optim": opt.state_dict(), "scheduler": sched, "loss": 0.5}
    _save_dcp({"app": app}, tmp_path / "app")
    meta = read_meta(tmp_path / "app")
    assert {t.name: t.shape for t in meta.tensors} == {"0.weight": (8, 4), "0.bias": (8,), "2.weight": (2, 8),
                                                       "2.bias": (2,)}  # fmt: skip
    assert len(meta.other_tensors) == 12 and all(t.name.startswith("app.optim.") for t in meta.other_tensors)
    assert meta.has_optimizer and meta.has_scheduler and meta.metadata["model_key"] == "app.model"
    # a nested metric keeps its full name, as its entry and a `val.loss` beside it would
    assert meta.metrics == {"app.loss": 0.5}
    kinds = {e.name: (e.kind, e.summary) for e in meta.entries}
    assert kinds["app.optim"][0] == "optimizer" and kinds["app.optim"][1].endswith("lr=0.01")
    assert kinds["app"][0] == "items"  # the scheduler's and the loss's items, in one line


def test_dcp_bare_model_names_kept(tmp_path: Path) -> None:
    """No optimizer beside it: a nested module called `net` is the model's own name, never stripped."""
    sd = {"encoder.net.weight": torch.zeros(2, 2), "encoder.net.bias": torch.zeros(2)}
    _save_dcp(sd, tmp_path / "bare")
    meta = read_meta(tmp_path / "bare")
    assert sorted(t.name for t in meta.tensors) == ["encoder.net.bias", "encoder.net.weight"]
    assert not meta.has_optimizer and meta.other_tensors == ()


@pytest.mark.parametrize("wrap", [False, True], ids=["flat", "under_model_key"])
def test_dcp_module_named_param_groups_is_no_optimizer(tmp_path: Path, wrap: bool) -> None:
    """A module called `param_groups` holds tensors; an optimizer's param groups are pickled values."""
    sd = {"encoder.param_groups.weight": torch.zeros(4, 4), "encoder.param_groups.bias": torch.zeros(4),
          "head.weight": torch.zeros(2, 4)}  # fmt: skip
    _save_dcp({"model": sd, "step": 3} if wrap else sd, tmp_path / "m")
    meta = read_meta(tmp_path / "m")
    assert [t.name for t in meta.tensors] == list(sd)
    assert not meta.has_optimizer and meta.other_tensors == ()
    assert meta.metadata.get("model_key") == ("model" if wrap else None)


def test_dcp_metrics_are_results_not_settings(tmp_path: Path) -> None:
    """Nested items count as metrics by their own name, keyed by their full name; a scheduler's, an
    optimizer's or a config's numbers are settings; top-level items are read as torch files' top keys."""
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    plateau.step(0.7)  # its state now has `best=0.7`: the monitored value, not this checkpoint's score
    state = {
        "app": {"model": model.state_dict(), "optim": opt.state_dict(), "scheduler": plateau.state_dict()},
        "train": {"loss": 0.5, "lr": 0.01},
        "val": {"loss": 0.9, "accuracy": 1},
        "config": {"dropout": 0.1, "loss_scale": 2.0},
        "gamma": 0.25,  # a top-level float, as a torch file's top key
        "errors": 3,  # an int named like a metric
        "tokens": 1000,  # an int that is not
        "seed": 0,
        "step": 12,
    }
    _save_dcp(state, tmp_path / "app")
    meta = read_meta(tmp_path / "app")
    assert meta.metrics == {"train.loss": 0.5, "val.loss": 0.9, "val.accuracy": 1.0, "gamma": 0.25,
                            "errors": 3.0}  # fmt: skip
    assert meta.step == 12 and meta.has_optimizer and meta.has_scheduler


def test_dcp_missing_data_file(dcp_dir: Path) -> None:
    (dcp_dir / "__0_0.distcp").unlink()
    with pytest.raises(IncompleteError, match=r"data files listed in \.metadata are missing: __0_0\.distcp"):
        read_meta(dcp_dir)


def test_plain_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="directory is not a checkpoint"):
        read_meta(tmp_path)


def test_a_save_pretrained_folder_is_its_weights_file(tmp_path: Path, safetensors_file: Path) -> None:
    # what `model.save_pretrained(dir)` writes: config.json and one weights file (safetensors preferred)
    d = tmp_path / "finetuned"
    d.mkdir()
    (d / "model.safetensors").write_bytes(safetensors_file.read_bytes())
    torch.save({"w": torch.ones(2)}, d / "pytorch_model.bin")
    (d / "config.json").write_text(json.dumps({"model_type": "mlp", "architectures": ["MLP"], "x": 1}))
    (d / "generation_config.json").write_text("{}")
    meta = read_meta(d)
    assert meta.path == str(d / "model.safetensors") and meta.format == "safetensors"
    assert {t.name: (t.shape, t.dtype) for t in meta.tensors} == EXPECTED_ST
    assert meta.metadata["model_config"] == {"model_type": "mlp", "architectures": ["MLP"]}
    (d / "model.safetensors").unlink()
    (d / "config.json").unlink()
    bin_only = read_meta(d)
    assert bin_only.path == str(d / "pytorch_model.bin") and "model_config" not in bin_only.metadata


def test_a_sharded_save_pretrained_folder_has_its_config(tmp_path: Path) -> None:
    # save_pretrained(max_shard_size=...) writes an index, its shards and config.json (transformers 5: dtype)
    d = tmp_path / "export"
    d.mkdir()
    write_sharded_safetensors(d)
    config = {"model_type": "mlp", "architectures": ["MLP"], "dtype": "bfloat16"}
    (d / "config.json").write_text(json.dumps({**config, "hidden_size": 8}))
    meta = read_meta(d)
    assert meta.format == "safetensors-sharded"
    assert meta.metadata["model_config"] == config


def test_a_peft_adapter_folder_says_what_it_adapts(tmp_path: Path, safetensors_file: Path) -> None:
    # PEFT's save_pretrained: adapter_model.safetensors + adapter_config.json (as peft 0.21 writes it)
    d = tmp_path / "lora"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(safetensors_file.read_bytes())
    cfg = {"peft_type": "LORA", "base_model_name_or_path": "org/base", "r": 8, "lora_alpha": 16,
           "target_modules": ["q_proj", "v_proj"], "task_type": None, "inference_mode": True}  # fmt: skip
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    meta = read_meta(d)
    assert meta.path == str(d / "adapter_model.safetensors")
    assert meta.metadata["adapter_config"] == {
        "peft_type": "LORA", "base_model_name_or_path": "org/base", "r": 8, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
    }  # fmt: skip


def test_every_part_a_resume_unpickles_is_checked(hf_dir: Path) -> None:
    # HF Trainer also saves scaler.pt (AMP); a file of any torch suffix in the folder is read too
    torch.save({"scale": torch.tensor(65536.0), "growth_factor": 2.0}, hf_dir / "scaler.pt")
    torch.save({"evil": ReduceTo(os.system, "echo pwned")}, hf_dir / "extra_state.bin")
    meta = read_meta(hf_dir)
    kinds = {e.name: e.kind for e in meta.entries}
    assert kinds["scaler.pt"] == "grad_scaler" and kinds["extra_state.bin"] == "part"
    assert not meta.safety.safe and meta.safety.unsafe_globals == ("posix.system",)
    assert meta.framework == "hf-trainer"


def test_accelerate_save_state_folder(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    d = tmp_path / "project" / "checkpoints" / "checkpoint_3"  # Accelerate's automatic naming
    d.mkdir(parents=True)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    save_file(model.state_dict(), str(d / "model.safetensors"))
    torch.save(opt.state_dict(), d / "optimizer.bin")
    torch.save(sched.state_dict(), d / "scheduler.bin")
    torch.save({"step": 0, "torch_manual_seed": torch.get_rng_state()}, d / "random_states_0.pkl")
    torch.save({"scale": torch.tensor(1024.0)}, d / "scaler.pt")
    meta = read_meta(d)
    assert meta.layout == "hf-checkpoint" and meta.framework == "accelerate"
    assert (meta.has_optimizer, meta.has_scheduler, meta.has_rng_state) == (True, True, True)
    assert [t.name for t in meta.tensors] == ["bias", "weight"]
    assert {e.name: e.kind for e in meta.entries} == {
        "model.safetensors": "weights",
        "optimizer.bin": "optimizer",
        "random_states_0.pkl": "rng_state",
        "scaler.pt": "grad_scaler",
        "scheduler.bin": "scheduler",
    }
    assert meta.safety.safe and len(meta.files) == 5
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        (row,) = scan([tmp_path / "project"], store).entries  # one row, its files are parts
    assert (row.layout, row.run, row.status) == ("hf-checkpoint", str(tmp_path / "project"), "ok")


def test_trainer_state_with_nan_is_read(hf_dir: Path) -> None:
    # Python's json (which HF uses) writes NaN / Infinity, which strict JSON parsers refuse
    state = json.loads((hf_dir / "trainer_state.json").read_text())
    state["log_history"].append({"loss": float("nan"), "grad_norm": float("inf"), "step": 501})
    (hf_dir / "trainer_state.json").write_text(json.dumps(state))
    assert "NaN" in (hf_dir / "trainer_state.json").read_text()
    meta = read_meta(hf_dir)
    assert math.isnan(meta.metrics["loss"]) and meta.metrics["grad_norm"] == math.inf
    assert meta.step == 500


def _deepspeed_tag(d: Path, step: int = 500) -> Path:
    """What HF's Trainer under DeepSpeed adds to checkpoint-N: the engine's own tag folder."""
    tag = d / f"global_step{step}"
    tag.mkdir()
    sd = {k: v.half() for k, v in training_checkpoint()["model_state_dict"].items()}
    states = {"module": sd, "global_steps": step, "ds_version": "0.14.0"}
    torch.save(states, tag / "mp_rank_00_model_states.pt")
    flat = torch.zeros(58)
    torch.save({"optimizer_state_dict": {"fp32_flat_groups": [flat]}, "ds_version": "0.14.0"},
               tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")  # fmt: skip
    (d / "latest").write_text(f"global_step{step}")
    (d / "zero_to_fp32.py").write_text("# DeepSpeed's conversion script\n")
    return tag


def test_hf_checkpoint_with_deepspeed_tag_folder(hf_dir: Path, tmp_path: Path) -> None:
    tag = _deepspeed_tag(hf_dir)
    meta = read_meta(hf_dir)
    kinds = {e.name: e.kind for e in meta.entries}
    assert kinds["global_step500/mp_rank_00_model_states.pt"] == "model_states"
    assert kinds["global_step500/zero_pp_rank_0_mp_rank_00_optim_states.pt"] == "optimizer"
    assert [t.name for t in meta.tensors] == ["0.bias", "0.weight", "2.bias", "2.weight"]  # model.safetensors
    every = sorted(p for p in hf_dir.rglob("*") if p.is_file())
    assert meta.files == tuple(str(p) for p in every)  # the tag folder's bytes count: they are on disk too
    assert meta.size_bytes == sum(p.stat().st_size for p in every)
    assert meta.safety.safe
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        (row,) = scan([hf_dir.parent], store).entries
    assert row.layout == "hf-checkpoint" and row.size_bytes == meta.size_bytes
    assert {f[0] for f in row.files} == set(meta.files)
    # a tampered engine file is a part like any other
    evil = {"module": {}, "evil": ReduceTo(os.system, "echo pwned")}
    torch.save(evil, tag / "mp_rank_00_model_states.pt")
    assert read_meta(hf_dir).safety.unsafe_globals == ("posix.system",)


def test_zero3_checkpoint_without_gathered_weights(hf_dir: Path) -> None:
    # ZeRO-3 without stage3_gather_16bit_weights_on_model_save: no model.safetensors, the module is in the tag
    (hf_dir / "model.safetensors").unlink()
    _deepspeed_tag(hf_dir)
    meta = read_meta(hf_dir)
    assert meta.layout == "hf-checkpoint" and meta.step == 500
    assert meta.metadata["weights"] == "global_step500/mp_rank_00_model_states.pt"
    assert {t.dtype for t in meta.tensors} == {"float16"} and len(meta.tensors) == 4


def test_zero3_weights_come_from_the_latest_tag(hf_dir: Path) -> None:
    (hf_dir / "model.safetensors").unlink()
    _deepspeed_tag(hf_dir, step=10)
    _deepspeed_tag(hf_dir, step=20)  # writes `latest` = global_step20
    assert read_meta(hf_dir).metadata["weights"] == "global_step20/mp_rank_00_model_states.pt"
    (hf_dir / "latest").write_text("global_step10")
    assert read_meta(hf_dir).metadata["weights"] == "global_step10/mp_rank_00_model_states.pt"
    (hf_dir / "latest").unlink()  # then the highest step, by number
    assert read_meta(hf_dir).metadata["weights"] == "global_step20/mp_rank_00_model_states.pt"


def test_a_huge_integer_in_the_trainer_log_is_no_number(hf_dir: Path) -> None:
    state = json.loads((hf_dir / "trainer_state.json").read_text())
    state["log_history"].append({"loss": 10**400, "grad_norm": 2.0, "step": 501})
    (hf_dir / "trainer_state.json").write_text(json.dumps(state))
    meta = read_meta(hf_dir)
    assert meta.metrics["loss"] == 0.8 and meta.metrics["grad_norm"] == 2.0


def test_an_unexpected_reader_error_is_one_line_naming_the_file(
    safetensors_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ckptlab.formats.safetensors_reader as st

    monkeypatch.setattr(st, "_fast_parse", lambda *a: 1 / 0)
    with pytest.raises(FormatError) as ei:
        read_meta(safetensors_file)
    assert ei.value.path == str(safetensors_file)
    assert ei.value.cause == "unexpected ZeroDivisionError while reading (division by zero); please report it"


def test_fsdp_sharded_state_dict_checkpoint(tmp_path: Path) -> None:
    # HF Trainer under FSDP with SHARDED_STATE_DICT (Accelerate's save_fsdp_model / save_fsdp_optimizer):
    # the model and the optimizer are DCP folders inside checkpoint-N, next to the Trainer's own files
    import warnings

    import torch.distributed.checkpoint as dcp

    ck = training_checkpoint()
    d = tmp_path / "out" / "checkpoint-40"
    d.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": ck["model_state_dict"]}, checkpoint_id=str(d / "pytorch_model_fsdp_0"))
        dcp.save({"optimizer": ck["optimizer_state_dict"]}, checkpoint_id=str(d / "optimizer_0"))
    torch.save(ck["scheduler_state_dict"], d / "scheduler.pt")
    torch.save({"cpu": torch.get_rng_state()}, d / "rng_state_0.pth")
    torch.save({"output_dir": "out"}, d / "training_args.bin")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 40, "epoch": 1.0, "log_history": []}))
    meta = read_meta(d)
    assert meta.layout == "hf-checkpoint" and meta.framework == "hf-trainer" and meta.step == 40
    assert meta.metadata["weights"] == "pytorch_model_fsdp_0" and meta.format == "torch-dcp"
    assert [t.name for t in meta.tensors] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # Adam's exp_avg / exp_avg_sq / step of the 4 parameters, and the CPU RNG state
    assert len(meta.other_tensors) == 12 + 1
    kinds = {e.name: (e.kind, e.summary) for e in meta.entries}
    assert kinds["optimizer_0"] == ("optimizer", "torch-dcp, 12 tensors")
    assert kinds["scheduler.pt"][0] == "scheduler"
    assert (meta.has_optimizer, meta.has_scheduler, meta.has_rng_state) == (True, True, True)
    every = sorted(p for p in d.rglob("*") if p.is_file())
    assert meta.files == tuple(str(p) for p in every) and meta.size_bytes == sum(
        p.stat().st_size for p in every
    )
    assert meta.safety.safe
    backdate(tmp_path)
    with Store(tmp_path / "db.sqlite") as store:
        (row,) = scan([tmp_path / "out"], store).entries  # one row: no folder of it listed on its own
    assert (row.layout, row.status, row.size_bytes) == ("hf-checkpoint", "ok", meta.size_bytes)
    # a DCP folder whose .metadata links out of the scanned folder is not read (a resume would read it)
    elsewhere = tmp_path / "elsewhere"
    (d / "optimizer_0").rename(elsewhere)
    (d / "optimizer_0").mkdir()
    os.symlink(elsewhere / ".metadata", d / "optimizer_0" / ".metadata")
    bounded = read_meta(d, within=str(tmp_path / "out"))
    assert {e.name: e.kind for e in bounded.entries}["optimizer_0"] == "not read"
    assert bounded.safety.unverified == ("optimizer_0",) and not bounded.safety.safe

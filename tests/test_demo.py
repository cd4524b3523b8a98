"""The built-in demo: one real build per module, checked file by file and through ckptlab's own readers."""

from __future__ import annotations

import csv
import io
import itertools
import json
import pickletools
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ckptlab import read_meta  # noqa: E402
from ckptlab.demo import MARKER, RUNS, build_demo, default_demo_dir, ensure_demo, is_complete  # noqa: E402

EPOCHS = 6
STEPS_PER_EPOCH = 32  # 2048 samples / batch 64
N_PARAMS = 64 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10  # 167178
LAYER_KEYS = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
HF_FILES = [
    "config.json",
    "model.safetensors",
    "optimizer.pt",
    "rng_state.pth",
    "scheduler.pt",
    "trainer_state.json",
    "training_args.bin",
]
HF_STEPS = [64, 128, 192]
DCP_STEPS = [96, 192]
TRANSFORMERS_GLOBALS = [
    "transformers.training_args.TrainingArguments",
    "transformers.trainer_utils.IntervalStrategy",
    "transformers.trainer_utils.SchedulerType",
    "transformers.training_args.OptimizerNames",
]


def meta_or_skip(path: Path):  # type: ignore[no-untyped-def]
    """read_meta, skipping (with the reason) only where the reader for that layout is not there yet."""
    try:
        return read_meta(path)
    except (ImportError, NotImplementedError) as e:
        pytest.skip(f"reader not available yet for {path.name}: {type(e).__name__}: {e}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # through ensure_demo, so the build-aside-then-rename path is exercised by the real build
    messages: list[str] = []
    root = ensure_demo(tmp_path_factory.mktemp("data") / "demo", progress=messages.append)
    assert messages[0] == "importing torch" and messages[-1].startswith("demo built in")
    return root


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _keras_name(epoch: int, val_loss: float) -> str:
    return f"weights.{epoch:02d}-{val_loss:.2f}.h5"


def _plain(demo: Path, e: int) -> dict:
    return torch.load(demo / "plain-pytorch" / f"checkpoint_epoch_{e}.pth", weights_only=True)


def test_tree_is_exact(demo: Path) -> None:
    files = _files(demo)
    keras = {f for f in files if f.startswith("keras-run/")}
    expected = (
        {MARKER}
        | {f"plain-pytorch/checkpoint_epoch_{e}.pth" for e in range(EPOCHS)}
        | {"plain-pytorch/best.pt", "plain-pytorch/exports/model_legacy.pt"}
        | {
            f"lightning-run/checkpoints/epoch={e}-step={(e + 1) * STEPS_PER_EPOCH}.ckpt"
            for e in range(EPOCHS)
        }
        | {"lightning-run/checkpoints/last.ckpt"}
        | {
            "lightning-run/lightning_logs/version_0/metrics.csv",
            "lightning-run/lightning_logs/version_0/hparams.yaml",
        }
        | {f"hf-run/checkpoint-{s}/{f}" for s in HF_STEPS for f in HF_FILES}
        | {"hf-run/model.safetensors", "hf-run/config.json"}
        | {
            "sharded-export/model-00001-of-00002.safetensors",
            "sharded-export/model-00002-of-00002.safetensors",
            "sharded-export/model.safetensors.index.json",
        }
        | {f"dcp-run/step_{s}/{f}" for s in DCP_STEPS for f in (".metadata", "__0_0.distcp")}
        | keras
    )
    assert files == expected
    assert sorted(p.name for p in demo.iterdir() if p.is_dir()) == sorted(RUNS)
    assert len(keras) == EPOCHS
    assert sorted(k[len("keras-run/weights.") : len("keras-run/weights.") + 2] for k in keras) == [
        f"{e:02d}" for e in range(1, EPOCHS + 1)
    ]
    assert not [p for p in demo.parent.iterdir() if p.name != "demo"]  # no temp dirs left beside it
    assert json.loads((demo / MARKER).read_text()) == {"demo_version": 1, "epochs": EPOCHS, "seed": 0}


def test_checkpoints_look_real_in_size(demo: Path) -> None:
    size = (demo / "plain-pytorch" / "checkpoint_epoch_0.pth").stat().st_size
    assert 1_900_000 < size < 2_100_000  # weights + two Adam moments of 167K float32 params
    assert N_PARAMS * 4 < (demo / "hf-run" / "model.safetensors").stat().st_size < N_PARAMS * 4 + 1024


def test_plain_run_really_trains(demo: Path) -> None:
    ckpts = [_plain(demo, e) for e in range(EPOCHS)]
    losses = [c["loss"] for c in ckpts]
    assert all(a > b for a, b in itertools.pairwise(losses)), losses
    assert losses[0] > 1.5 and losses[-1] < 0.5
    assert [c["epoch"] for c in ckpts] == list(range(EPOCHS))
    assert ckpts[-1]["val_acc"] > ckpts[0]["val_acc"]
    c = ckpts[0]
    assert set(c) == {
        "epoch",
        "model_state_dict",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "loss",
        "val_loss",
        "val_acc",
        "rng_state",
    }
    assert list(c["model_state_dict"]) == LAYER_KEYS
    assert sum(t.numel() for t in c["model_state_dict"].values()) == N_PARAMS
    assert c["rng_state"].dtype == torch.uint8 and c["rng_state"].shape == torch.get_rng_state().shape
    assert [c["scheduler_state_dict"]["last_epoch"] for c in ckpts] == list(range(1, EPOCHS + 1))
    # the weights really change between epochs
    assert not torch.equal(ckpts[0]["model_state_dict"]["0.weight"], ckpts[1]["model_state_dict"]["0.weight"])

    best = torch.load(demo / "plain-pytorch" / "best.pt", weights_only=True)
    best_epoch = min(range(EPOCHS), key=lambda e: ckpts[e]["val_loss"])
    assert best["epoch"] == best_epoch
    assert best_epoch < EPOCHS - 1  # this run overfits: the best epoch is not the last, as in real life
    assert torch.equal(
        best["model_state_dict"]["2.weight"], ckpts[best_epoch]["model_state_dict"]["2.weight"]
    )

    legacy = torch.load(demo / "plain-pytorch" / "exports" / "model_legacy.pt", weights_only=True)
    assert all(torch.equal(legacy[k], ckpts[-1]["model_state_dict"][k]) for k in LAYER_KEYS)


def test_plain_run_read_meta(demo: Path) -> None:
    for e in range(EPOCHS):
        c = _plain(demo, e)
        m = read_meta(demo / "plain-pytorch" / f"checkpoint_epoch_{e}.pth")
        assert (m.format, m.framework, m.epoch, m.step) == ("torch-zip", "pytorch", e, None)
        assert (m.has_optimizer, m.has_scheduler, m.has_rng_state) == (True, True, True)
        assert dict(m.metrics) == {"loss": c["loss"], "val_loss": c["val_loss"], "val_acc": c["val_acc"]}
        assert (m.n_tensors, m.n_params) == (6, N_PARAMS)
        assert m.safety.safe
    best = read_meta(demo / "plain-pytorch" / "best.pt")
    assert (
        best.format == "torch-zip"
        and best.epoch == torch.load(demo / "plain-pytorch/best.pt", weights_only=True)["epoch"]
    )
    legacy = read_meta(demo / "plain-pytorch" / "exports" / "model_legacy.pt")
    assert (legacy.format, legacy.n_tensors, legacy.n_params, legacy.has_optimizer) == (
        "torch-legacy",
        6,
        N_PARAMS,
        False,
    )
    assert [t.name for t in legacy.tensors] == LAYER_KEYS


def test_lightning_checkpoint_dict(demo: Path) -> None:
    ckpt_dir = demo / "lightning-run" / "checkpoints"
    c = torch.load(ckpt_dir / "epoch=2-step=96.ckpt", weights_only=True)
    assert list(c) == [
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
        "loops",
        "callbacks",
        "optimizer_states",
        "lr_schedulers",
        "hparams_name",
        "hyper_parameters",
    ]
    assert (c["epoch"], c["global_step"], c["pytorch-lightning_version"]) == (2, 96, "2.4.0")
    assert list(c["state_dict"]) == [f"model.{k}" for k in LAYER_KEYS]
    assert c["hparams_name"] == "kwargs" and c["hyper_parameters"]["hidden"] == [512, 256]
    assert c["loops"]["fit_loop"]["epoch_loop.state_dict"] == {"_batches_that_stepped": 96}
    (key,) = c["callbacks"]
    assert key == (
        "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
        "'every_n_epochs': 1, 'train_time_interval': None}"
    )
    state = c["callbacks"][key]
    assert list(state) == [
        "monitor",
        "best_model_score",
        "best_model_path",
        "current_score",
        "dirpath",
        "best_k_models",
        "kth_best_model_path",
        "kth_value",
        "last_model_path",
    ]
    assert state["dirpath"] == "lightning-run/checkpoints"
    assert list(state["best_k_models"]) == [
        f"lightning-run/checkpoints/epoch={e}-step={32 * (e + 1)}.ckpt" for e in range(3)
    ]
    assert state["best_model_score"].shape == () and state["current_score"].shape == ()
    assert state["best_model_score"] == min(state["best_k_models"].values())
    assert (
        state["last_model_path"] == "lightning-run/checkpoints/last.ckpt"
    )  # last.ckpt of the previous epoch
    assert len(c["optimizer_states"]) == 1 and len(c["lr_schedulers"]) == 1

    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (EPOCHS - 1, EPOCHS * STEPS_PER_EPOCH)
    assert len(last["callbacks"][key]["best_k_models"]) == EPOCHS


def test_lightning_read_meta(demo: Path) -> None:
    ckpt_dir = demo / "lightning-run" / "checkpoints"
    val_losses = []
    for e in range(EPOCHS):
        step = (e + 1) * STEPS_PER_EPOCH
        m = read_meta(ckpt_dir / f"epoch={e}-step={step}.ckpt")
        assert (m.format, m.framework, m.epoch, m.step) == ("torch-zip", "lightning", e, step)
        assert (m.has_optimizer, m.has_scheduler) == (True, True)
        val_losses.append(m.metrics["val_loss"])
        assert m.metrics["current_score"] == m.metrics["val_loss"]
        assert m.metrics["best_model_score"] == min(val_losses)
        assert m.metadata["lightning_version"] == "2.4.0"
        assert m.metadata["hyper_parameters"]["lr"] == 0.001
        assert [t.name for t in m.tensors] == [f"model.{k}" for k in LAYER_KEYS]
        assert m.safety.safe
    last = read_meta(ckpt_dir / "last.ckpt")
    assert (last.step, last.epoch, last.metrics["best_model_score"]) == (192, 5, min(val_losses))


def test_lightning_csv_logger(demo: Path) -> None:
    log_dir = demo / "lightning-run" / "lightning_logs" / "version_0"
    with open(log_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        header = f.readline().strip()
    assert header == "epoch,step,train_loss,val_acc,val_loss"  # CSVLogger sorts its columns
    train = [r for r in rows if r["train_loss"]]
    val = [r for r in rows if r["val_loss"]]
    assert (
        len(train) == EPOCHS * STEPS_PER_EPOCH // 10
        and len(val) == EPOCHS
        and len(rows) == len(train) + len(val)
    )
    assert [int(r["step"]) for r in train[:4]] == [9, 19, 29, 39]
    assert [(r["epoch"], r["step"], r["train_loss"]) for r in val[:2]] == [("0", "31", ""), ("1", "63", "")]
    assert all(r["val_acc"] == "" for r in train)
    first = torch.load(demo / "lightning-run/checkpoints/epoch=0-step=32.ckpt", weights_only=True)
    state = next(iter(first["callbacks"].values()))
    assert float(val[0]["val_loss"]) == pytest.approx(float(state["current_score"]), rel=1e-6)
    assert (
        (log_dir / "hparams.yaml")
        .read_text()
        .startswith("batch_size: 64\ngamma: 0.5\nhidden:\n- 512\n- 256\n")
    )


def test_hf_checkpoint_files(demo: Path) -> None:
    ckpt = demo / "hf-run" / "checkpoint-128"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert {
        "best_metric",
        "best_model_checkpoint",
        "epoch",
        "eval_steps",
        "global_step",
        "is_hyper_param_search",
        "is_local_process_zero",
        "is_world_process_zero",
        "log_history",
        "logging_steps",
        "max_steps",
        "num_train_epochs",
        "save_steps",
        "total_flos",
        "train_batch_size",
        "trial_name",
        "trial_params",
    } <= set(state)
    assert (state["global_step"], state["epoch"], state["max_steps"], state["save_steps"]) == (
        128,
        4.0,
        192,
        64,
    )
    train_logs = [h for h in state["log_history"] if "loss" in h]
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in train_logs] == list(range(10, 128, 10))
    assert set(train_logs[0]) == {"epoch", "grad_norm", "learning_rate", "loss", "step"}
    assert [h["step"] for h in evals] == [32, 64, 96, 128]
    assert {"eval_accuracy", "eval_runtime", "eval_samples_per_second"} <= set(evals[0])
    best_at_save = min((e for e in evals if e["step"] in (64, 128)), key=lambda e: e["eval_loss"])
    assert state["best_metric"] == best_at_save["eval_loss"]
    assert state["best_model_checkpoint"] == f"hf-run/checkpoint-{best_at_save['step']}"

    weights = read_meta(ckpt / "model.safetensors")
    assert (weights.format, weights.n_params, dict(weights.metadata)) == (
        "safetensors",
        N_PARAMS,
        {"format": "pt"},
    )
    assert sorted(t.name for t in weights.tensors) == sorted(f"mlp.{k}" for k in LAYER_KEYS)
    assert weights.safety.safe

    args = read_meta(ckpt / "training_args.bin")
    assert args.format == "torch-zip" and args.framework == "hf-trainer"
    # loading it takes weights_only=False: its classes are reported; what it says of the run is shown
    assert list(args.safety.unsafe_globals) == TRANSFORMERS_GLOBALS
    assert args.metadata["training_args"]["lr_scheduler_type"] == "linear"
    assert args.entries[0].kind == "training_args" and args.entries[0].summary.startswith(
        "TrainingArguments: lr="
    )
    with zipfile.ZipFile(ckpt / "training_args.bin") as z:
        out = io.StringIO()
        pickletools.dis(z.read("training_args/data.pkl"), out=out)
    assert "GLOBAL     'transformers.training_args TrainingArguments'" in out.getvalue().splitlines()[1]

    rng = read_meta(ckpt / "rng_state.pth")
    assert (
        rng.has_rng_state and rng.safety.safe
    )  # numpy's MT19937 state pickles only allowlisted numpy globals
    for name in ("optimizer.pt", "scheduler.pt"):
        assert read_meta(ckpt / name).safety.safe
    assert [e.name for e in rng.entries] == ["python", "numpy", "cpu"]
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "demo-mlp" and cfg["hidden_sizes"] == [512, 256]


def test_hf_checkpoint_directories(demo: Path) -> None:
    for step in HF_STEPS:
        m = meta_or_skip(demo / "hf-run" / f"checkpoint-{step}")
        assert (m.layout, m.framework, m.step, m.epoch) == ("hf-checkpoint", "hf-trainer", step, step / 32)
        assert (m.has_optimizer, m.has_scheduler, m.has_rng_state) == (True, True, True)
        assert m.n_params == N_PARAMS
        assert "eval_loss" in m.metrics and "loss" in m.metrics
        assert not m.safety.safe  # training_args.bin pickles a TrainingArguments
        assert "transformers.training_args.TrainingArguments" in m.safety.unsafe_globals
        assert m.metadata["training_args"]["metric_for_best_model"] == "eval_loss"
    final = read_meta(demo / "hf-run" / "model.safetensors")
    last = read_meta(demo / "hf-run" / "checkpoint-192" / "model.safetensors")
    assert final.n_params == N_PARAMS
    assert (demo / "hf-run/model.safetensors").read_bytes() == (
        demo / "hf-run/checkpoint-192/model.safetensors"
    ).read_bytes()
    assert last.tensors == final.tensors


def test_sharded_export(demo: Path) -> None:
    root = demo / "sharded-export"
    index = json.loads((root / "model.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    assert index["metadata"] == {"total_size": N_PARAMS * 4}
    assert index["weight_map"] == {
        "mlp.0.bias": "model-00001-of-00002.safetensors",
        "mlp.0.weight": "model-00001-of-00002.safetensors",
        "mlp.2.bias": "model-00002-of-00002.safetensors",
        "mlp.2.weight": "model-00002-of-00002.safetensors",
        "mlp.4.bias": "model-00002-of-00002.safetensors",
        "mlp.4.weight": "model-00002-of-00002.safetensors",
    }
    shard = read_meta(root / "model-00002-of-00002.safetensors")
    assert shard.metadata == {"format": "pt"} and shard.n_tensors == 4
    m = meta_or_skip(root / "model.safetensors.index.json")
    assert (m.format, m.layout, m.n_params) == ("safetensors-sharded", "sharded", N_PARAMS)
    assert m.safety.safe


def test_keras_h5_layout(demo: Path) -> None:
    h5py = pytest.importorskip("h5py")
    keras_files = sorted((demo / "keras-run").iterdir())
    with h5py.File(keras_files[0], "r") as f:
        assert f.attrs["keras_version"] == "2.15.0" and f.attrs["backend"] == "tensorflow"
        config = json.loads(f.attrs["model_config"])
        assert config["class_name"] == "Sequential"
        assert [layer["class_name"] for layer in config["config"]["layers"]] == [
            "InputLayer",
            "Dense",
            "Dense",
            "Dense",
        ]
        assert json.loads(f.attrs["training_config"])["optimizer_config"]["class_name"] == "Adam"
        mw = f["model_weights"]
        assert [n.decode() for n in mw.attrs["layer_names"]] == ["dense", "dense_1", "dense_2"]
        assert [n.decode() for n in mw["dense"].attrs["weight_names"]] == ["dense/kernel:0", "dense/bias:0"]
        assert mw["dense/dense/kernel:0"].shape == (64, 512)  # Keras kernels are [in, out]
        assert mw["dense_2/dense_2/kernel:0"].shape == (256, 10)
        names = [n.decode() for n in f["optimizer_weights"].attrs["weight_names"]]
        assert names[:4] == ["iteration:0", "learning_rate:0", "m/dense/kernel:0", "v/dense/kernel:0"]
        assert int(f["optimizer_weights/iteration:0"][()]) == STEPS_PER_EPOCH
    # the val_loss in each name is that epoch's: strictly the run's own numbers, 2 decimals
    assert all(p.name.startswith(f"weights.{e + 1:02d}-") for e, p in enumerate(keras_files))


def test_keras_read_meta(demo: Path) -> None:
    for p in sorted((demo / "keras-run").iterdir()):
        m = meta_or_skip(p)
        assert (m.format, m.framework, m.n_params, m.has_optimizer) == ("hdf5", "keras", N_PARAMS, True)
        assert m.metadata["keras_version"] == "2.15.0"
        assert m.safety.safe


def test_dcp_run(demo: Path) -> None:
    for step in DCP_STEPS:
        d = demo / "dcp-run" / f"step_{step}"
        raw = (d / ".metadata").read_bytes()
        assert f"dcp-run/step_{step}".encode() in raw and b"building" not in raw  # relocatable, no temp path
        m = meta_or_skip(d)
        assert (m.format, m.layout, m.step, m.n_params) == ("torch-dcp", "dcp", step, N_PARAMS)
        assert m.has_optimizer
        assert m.safety.safe


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = build_demo(tmp_path / "a", epochs=1, seed=7)
    b = build_demo(tmp_path / "b", epochs=1, seed=7)
    files = sorted(_files(a))
    assert files == sorted(_files(b))
    # the legacy format names storages by memory address: equal tensors, different bytes
    assert [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()] == [
        "plain-pytorch/exports/model_legacy.pt"
    ]
    la = torch.load(a / "plain-pytorch/exports/model_legacy.pt", weights_only=True)
    lb = torch.load(b / "plain-pytorch/exports/model_legacy.pt", weights_only=True)
    assert all(torch.equal(la[k], lb[k]) for k in LAYER_KEYS)
    assert sorted(_files(a / "hf-run")) == ["checkpoint-32/" + f for f in HF_FILES] + [
        "config.json",
        "model.safetensors",
    ]
    c = build_demo(tmp_path / "c", epochs=1, seed=8)
    assert (c / "hf-run/model.safetensors").read_bytes() != (a / "hf-run/model.safetensors").read_bytes()


def test_build_demo_refuses_existing_demo_and_bad_epochs(demo: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError, match="already holds demo files"):
        build_demo(demo)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        build_demo(tmp_path / "x", epochs=0)


def _fake_builder(calls: list[Path], barrier: threading.Barrier | None = None):  # type: ignore[no-untyped-def]
    def fake(root: Path, **_kw: object) -> Path:
        calls.append(root)
        (root / "plain-pytorch").mkdir()
        if barrier is not None:
            barrier.wait(timeout=10)  # both builders finish before either renames
        (root / MARKER).write_text(json.dumps({"demo_version": 1}))
        return root

    return fake


def test_ensure_demo_builds_once(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr("ckptlab.demo.build_demo", _fake_builder(calls))
    assert ensure_demo(demo) == demo
    assert calls == []


def test_ensure_demo_replaces_a_half_built_or_old_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr("ckptlab.demo.build_demo", _fake_builder(calls))
    root = tmp_path / "demo"
    (root / "plain-pytorch").mkdir(parents=True)
    (root / "plain-pytorch" / "checkpoint_epoch_0.pth").write_bytes(b"PK")  # interrupted: no marker
    assert ensure_demo(root) == root and is_complete(root)
    assert not (root / "plain-pytorch" / "checkpoint_epoch_0.pth").exists()
    (root / MARKER).write_text(json.dumps({"demo_version": 0}))  # an older layout
    assert not is_complete(root)
    ensure_demo(root)
    assert is_complete(root) and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # temp and stale dirs cleaned up


def test_ensure_demo_two_racing_builders_end_with_one_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr("ckptlab.demo.build_demo", _fake_builder(calls, threading.Barrier(2)))
    root = tmp_path / "demo"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo(root))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results == [root, root] and len(calls) == 2 and len(set(calls)) == 2
    assert is_complete(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_default_demo_dir() -> None:
    d = default_demo_dir()
    assert d.name == "demo" and "ckptlab" in d.parent.as_posix().lower()


def test_imports_stay_light() -> None:
    code = (
        "import sys, ckptlab; assert 'ckptlab.demo' not in sys.modules; "
        "import ckptlab.demo; assert 'torch' not in sys.modules, 'ckptlab.demo imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

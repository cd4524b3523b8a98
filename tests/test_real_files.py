"""Checkpoints written by the real frameworks (tests/data/real, see its README.md), read by ckptlab and held
against what the frameworks themselves reported when they wrote them (tests/data/real/truth.json).

Every other fixture of the suite imitates a framework's layout with torch/h5py; these files are the
frameworks' own bytes, so a layout a framework changes, or one the imitations got wrong, shows up here.
No framework is imported: the files and their truth are committed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from ui_fixtures import backdate

from ckptlab import read_meta
from ckptlab.index.scan import scan
from ckptlab.index.store import Store

REAL = Path(__file__).parent / "data" / "real"
TRUTH: dict[str, dict[str, Any]] = json.loads((REAL / "truth.json").read_text())["checkpoints"]

_LIGHTNING = ("torch-zip", "file", "lightning")
_HF_ARGS_V5 = (
    "transformers.training_args.TrainingArguments", "transformers.trainer_utils.SchedulerType",
    "transformers.training_args.OptimizerNames", "transformers.trainer_utils.IntervalStrategy",
    "transformers.trainer_utils.SaveStrategy", "transformers.trainer_utils.HubStrategy",
    "transformers.trainer_pt_utils.AcceleratorConfig", "accelerate.state.PartialState",
    "accelerate.utils.dataclasses.DistributedType",
)  # fmt: skip
_HF_ARGS_V4 = (
    "transformers.training_args.TrainingArguments", "transformers.trainer_utils.IntervalStrategy",
    "transformers.trainer_utils.SchedulerType", "transformers.trainer_utils.SaveStrategy",
    "transformers.trainer_pt_utils.AcceleratorConfig", "transformers.training_args.OptimizerNames",
    "transformers.trainer_utils.HubStrategy", "accelerate.state.PartialState",
    "accelerate.utils.dataclasses.DistributedType",
)  # fmt: skip
# checkpoint (relative to REAL) -> (format, layout, framework, unsafe globals): how ckptlab classifies it.
# What it holds (tensors, step, epoch, metrics, parts) is asserted from truth.json.
CASES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # training_args.bin pickles TrainingArguments and its fields: loading it takes weights_only=False
    "hf/checkpoint-12": ("safetensors", "hf-checkpoint", "hf-trainer", _HF_ARGS_V5),
    "hf": ("safetensors", "hf-checkpoint", "hf-trainer", _HF_ARGS_V5),  # the output_dir's final save
    "hf_v4/checkpoint-6": ("torch-zip", "hf-checkpoint", "hf-trainer", _HF_ARGS_V4),
    "hf_v4_export_bin_sharded/pytorch_model.bin.index.json": ("torch-sharded", "sharded", "pytorch", ()),
    "lightning/csv/version_0/checkpoints/epoch=2-step=12-val_loss=2.89.ckpt": (*_LIGHTNING, ()),
    "lightning/csv/version_0/checkpoints/epoch=3-step=16-val_loss=2.78.ckpt": (*_LIGHTNING, ()),
    "lightning/csv/version_0/checkpoints/last.ckpt": (*_LIGHTNING, ()),
    "lightning/fixed_dir/best-epoch=1.ckpt": (*_LIGHTNING, ()),
    "lightning/fixed_dir/best-epoch=1-v1.ckpt": (*_LIGHTNING, ()),
    "lightning/fixed_dir/last.ckpt": (*_LIGHTNING, ()),
    "lightning/fixed_dir/last-v1.ckpt": (*_LIGHTNING, ()),
    # save_hyperparameters() pickled a Path, an nn.Module and a Namespace: loading them imports code
    "lightning/hparams_objects/checkpoints/epoch=0-step=4.ckpt": (
        *_LIGHTNING,
        ("pathlib.PosixPath", "torch.nn.modules.loss.MSELoss", "argparse.Namespace"),
    ),
    "keras/model.keras": ("keras", "file", "keras", ()),
    "keras/model.weights.h5": ("hdf5", "file", "keras", ()),
    "keras/legacy.h5": ("hdf5", "file", "keras", ()),
    "keras/weights.03-1.68.weights.h5": ("hdf5", "file", "keras", ()),
    "keras/lambda_model.keras": ("keras", "file", "keras", ("keras.layers.Lambda",)),  # marshalled bytecode
    "keras/custom_layer_model.keras": ("keras", "file", "keras", ("realgen>Scale",)),  # its registered name
    "accelerate/state": ("safetensors", "hf-checkpoint", "accelerate", ()),
    "dcp/app_state": ("torch-dcp", "dcp", "torch-dcp", ()),
    "dcp/raw": ("torch-dcp", "dcp", "torch-dcp", ()),
    "torchscript/scripted.pt": ("torchscript", "file", "torchscript", ()),
    "plain/checkpoint_epoch_1.pth": ("torch-zip", "file", "pytorch", ()),
    "plain/legacy_checkpoint.pt": ("torch-legacy", "file", "pytorch", ()),
    "plain/numpy_metric.pt": ("torch-zip", "file", "pytorch", ()),  # np.float64 metric, numpy RNG state
    "plain/full_model.pt": (  # torch.save(model): the module classes themselves are pickled
        "torch-zip",
        "file",
        "pytorch",
        (
            "torch.nn.modules.container.Sequential",
            "torch.nn.modules.linear.Linear",
            "torch.nn.modules.batchnorm.BatchNorm1d",
            "torch.nn.modules.activation.ReLU",
        ),
    ),
}


def _tensors(truth: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (tuple(shape), dtype) for name, (shape, dtype) in truth["model"]["tensors"].items()}


def test_every_kept_checkpoint_has_a_case() -> None:
    assert set(CASES) == set(TRUTH)


@pytest.mark.parametrize("rel", CASES)
def test_real_checkpoint_matches_framework_truth(rel: str) -> None:
    fmt, layout, framework, unsafe = CASES[rel]
    truth = TRUTH[rel]
    meta = read_meta(REAL / rel)
    assert (meta.format, meta.layout, meta.framework) == (fmt, layout, framework)
    assert {t.name: (t.shape, t.dtype) for t in meta.tensors} == _tensors(truth)
    assert meta.n_params == truth["model"]["n_params"]
    # what the checkpoint records as its step and epoch; Keras and Accelerate record none (their counters
    # are tensor data: truth.json keeps them as optimizer_iterations / optimizer_steps, see the README)
    assert (meta.step, meta.epoch) == (truth["step"], truth["epoch"])
    assert {k: meta.metrics.get(k) for k in truth["metrics"]} == truth["metrics"]
    parts = truth["parts"]
    assert (meta.has_optimizer, meta.has_scheduler, meta.has_rng_state) == (
        parts["optimizer"],
        parts["scheduler"],
        parts["rng_state"],
    )
    assert sorted(meta.safety.unsafe_globals) == sorted(unsafe)
    assert meta.safety.safe == (not unsafe) and meta.safety.unverified == ()
    # what is reported is really referenced by the file's pickles, as pickletools lists them
    assert set(unsafe) <= set(truth.get("pickle_globals", unsafe))
    assert meta.warnings == ()


@pytest.mark.parametrize("rel", [rel for rel, t in TRUTH.items() if "training_args" in t])
def test_hf_training_args_are_read(rel: str) -> None:
    """training_args.bin (a pickled TrainingArguments, reported unsafe) has its settings shown."""
    args = read_meta(REAL / rel).metadata["training_args"]
    assert {k: args[k] for k in TRUTH[rel]["training_args"]} == TRUTH[rel]["training_args"]


@pytest.mark.parametrize("rel", [rel for rel, t in TRUTH.items() if "keras_weights" in t])
def test_keras_weights_match_the_models_variables(rel: str) -> None:
    """Keras 3 files name weights by layer attribute path (layers/dense/vars/0), not by Variable path
    (tiny_seq/hidden/kernel); the shapes, dtypes and count are still exactly the model's variables."""
    meta = read_meta(REAL / rel)
    variables = sorted((tuple(shape), dtype) for _path, shape, dtype in TRUTH[rel]["keras_weights"])
    assert sorted((t.shape, t.dtype) for t in meta.tensors) == variables


def test_lightning_hyper_parameters_objects_listed_not_rebuilt() -> None:
    rel = "lightning/hparams_objects/checkpoints/epoch=0-step=4.ckpt"
    hp = read_meta(REAL / rel).metadata["hyper_parameters"]
    primitive = {k: v for k, v in TRUTH[rel]["hyper_parameters"].items() if not str(v).startswith("<")}
    assert {k: hp[k] for k in primitive} == primitive
    assert set(hp) == set(TRUTH[rel]["hyper_parameters"])  # the objects are listed, not rebuilt


# (run, checkpoint, status, safe) as the index lists the tree, paths relative to the scanned root
_CSV = "lightning/csv/version_0"
SCAN_ROWS = {
    ("accelerate", "accelerate/state", "ok", True),
    ("dcp", "dcp/app_state", "ok", True),
    ("dcp", "dcp/raw", "ok", True),
    ("hf", "hf", "ok", False),
    ("hf", "hf/checkpoint-12", "ok", False),
    ("hf_v4", "hf_v4/checkpoint-6", "ok", False),
    ("hf_v4_export_bin_sharded", "hf_v4_export_bin_sharded/pytorch_model.bin.index.json", "ok", True),
    ("keras", "keras/custom_layer_model.keras", "ok", False),
    ("keras", "keras/lambda_model.keras", "ok", False),
    ("keras", "keras/legacy.h5", "ok", True),
    ("keras", "keras/model.keras", "ok", True),
    ("keras", "keras/model.weights.h5", "ok", True),
    ("keras", "keras/weights.03-1.68.weights.h5", "ok", True),
    (_CSV, f"{_CSV}/checkpoints/epoch=2-step=12-val_loss=2.89.ckpt", "ok", True),
    (_CSV, f"{_CSV}/checkpoints/epoch=3-step=16-val_loss=2.78.ckpt", "ok", True),
    (_CSV, f"{_CSV}/checkpoints/last.ckpt", "ok", True),
    ("lightning/fixed_dir", "lightning/fixed_dir/best-epoch=1.ckpt", "ok", True),
    ("lightning/fixed_dir", "lightning/fixed_dir/best-epoch=1-v1.ckpt", "ok", True),
    ("lightning/fixed_dir", "lightning/fixed_dir/last.ckpt", "ok", True),
    ("lightning/fixed_dir", "lightning/fixed_dir/last-v1.ckpt", "ok", True),
    ("lightning/hparams_objects", "lightning/hparams_objects/checkpoints/epoch=0-step=4.ckpt", "ok", False),
    ("plain", "plain/checkpoint_epoch_1.pth", "ok", True),
    ("plain", "plain/full_model.pt", "ok", False),
    ("plain", "plain/legacy_checkpoint.pt", "ok", True),
    ("plain", "plain/numpy_metric.pt", "ok", True),
    ("torchscript", "torchscript/scripted.pt", "ok", True),
}


def test_scan_of_the_real_tree(tmp_path: Path) -> None:
    root = tmp_path / "real"
    shutil.copytree(REAL, root)
    backdate(root, seconds=86400.0)  # a fresh copy would look like saves still being written
    with Store(tmp_path / "index.sqlite") as store:
        result = scan([root], store)
    assert result.errors == []

    def rel(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    rows = [(rel(e.run), rel(e.path), e.status, e.safe) for e in result.entries]
    assert len(rows) == len(SCAN_ROWS)  # one row each: an HF checkpoint-N folder is one checkpoint
    assert set(rows) == SCAN_ROWS
    # Lightning's second fit into the same folder wrote X-v1: listed right after the X it duplicates
    fixed = [Path(path).name for run, path, _, _ in rows if run == "lightning/fixed_dir"]
    assert fixed == ["best-epoch=1.ckpt", "best-epoch=1-v1.ckpt", "last.ckpt", "last-v1.ckpt"]
    by_path = {rel(e.path): e for e in result.entries}
    for path, truth in TRUTH.items():
        e = by_path[path]
        named = truth.get("name_values", {})  # what only the file name says (Keras' ModelCheckpoint)
        epoch = truth["epoch"] if truth["epoch"] is not None else named.get("epoch")
        assert (e.step, e.epoch) == (truth["step"], epoch), path
        assert e.n_params == truth["model"]["n_params"], path
    # a folder checkpoint is its own files: the output_dir's final save leaves out its checkpoint-N
    for path in (p for p in TRUTH if (REAL / p).is_dir()):
        own = sum(f.stat().st_size for f in (root / path).iterdir() if f.is_file())
        assert by_path[path].size_bytes == own, path
    # the name carries val_loss as ModelCheckpoint formatted it: {val_loss:.2f}
    weights = TRUTH["keras/weights.03-1.68.weights.h5"]["name_values"]
    assert by_path["keras/weights.03-1.68.weights.h5"].metrics == {"val_loss": round(weights["val_loss"], 2)}

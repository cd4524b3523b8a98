"""ckptlab.layouts: parameter tables of (input, expected), no files, exact values; plus the doctests."""

from __future__ import annotations

import doctest
import importlib
import math
import pkgutil
import random
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import ckptlab.layouts
import ckptlab.runlogs
from ckptlab.layouts import (
    CHECKPOINT_SUFFIXES,
    TEMPLATES,
    NameInfo,
    debris_reason,
    in_run_order,
    looks_like_checkpoint_name,
    natural_key,
    order_key,
    parse_name,
    run_dir,
    run_dir_of_parent,
    sort_checkpoints,
    stage,
)
from ckptlab.runlogs import latest_metrics, parse_lightning_metrics_csv, parse_trainer_state

# `doctest.testmod` finds only what a module defines, not what it re-exports, so the `ckptlab.layouts`
# package's doctests are run module by module; every module is found, none can be left out of a list.
LAYOUTS_MODULES = [
    importlib.import_module(f"ckptlab.layouts.{m.name}")
    for m in pkgutil.iter_modules(ckptlab.layouts.__path__)
]


@pytest.mark.parametrize(
    "modules,at_least", [(LAYOUTS_MODULES, 25), ([ckptlab.runlogs], 5)], ids=["layouts", "runlogs"]
)
def test_doctests(modules: list[ModuleType], at_least: int) -> None:
    results = {m.__name__: doctest.testmod(m, optionflags=doctest.ELLIPSIS) for m in modules}
    assert all(r.attempted > 0 for r in results.values()), {n: r.attempted for n, r in results.items()}
    assert sum(r.attempted for r in results.values()) >= at_least
    assert sum(r.failed for r in results.values()) == 0


# ---------------------------------------------------------------------------------------------- parse_name

# name -> (step, epoch, metrics, is_last, version, template)
NAMES = [
    # Lightning ModelCheckpoint
    ("epoch=2-step=300.ckpt", (300, 2, {}, False, None, "lightning")),
    ("epoch=2-step=300-val_loss=0.12.ckpt", (300, 2, {"val_loss": 0.12}, False, None, "lightning")),
    ("epoch=02-val_acc=0.9500.ckpt", (None, 2, {"val_acc": 0.95}, False, None, "lightning")),
    ("epoch=2-step=300-v1.ckpt", (300, 2, {}, False, 1, "lightning")),
    ("epoch=2-step=300-val_loss=0.12-v12.ckpt", (300, 2, {"val_loss": 0.12}, False, 12, "lightning")),
    ("last.ckpt", (None, None, {}, True, None, "last")),
    ("last-v1.ckpt", (None, None, {}, True, 1, "last")),
    ("last-v1", (None, None, {}, True, 1, "last")),
    ("epoch=0-val_loss=-1.5e-03.ckpt", (None, 0, {"val_loss": -0.0015}, False, None, "lightning")),
    ("epoch=0-val_loss=1E+02.ckpt", (None, 0, {"val_loss": 100.0}, False, None, "lightning")),
    ("epoch=1-val_loss=inf.ckpt", (None, 1, {"val_loss": math.inf}, False, None, "lightning")),
    ("epoch=1-val_loss=-inf-step=5.ckpt", (5, 1, {"val_loss": -math.inf}, False, None, "lightning")),
    ("mnist-epoch=02-val_loss=0.12.ckpt", (None, 2, {"val_loss": 0.12}, False, None, "lightning")),
    ("epoch=3-val/loss=0.5.ckpt", (None, 3, {"val/loss": 0.5}, False, None, "lightning")),
    ("step=10-nlq_R1@0.3=23.51.ckpt", (10, None, {"nlq_R1@0.3": 23.51}, False, None, "lightning")),
    ("epoch=3-last.ckpt", (None, 3, {}, True, None, "lightning")),
    ("epoch=2-step=300", (300, 2, {}, False, None, "lightning")),  # a directory, or a stem
    ("epoch=2.5-loss=1.ckpt", (None, None, {"epoch": 2.5, "loss": 1.0}, False, None, "lightning")),
    ("global_step=300-epoch=1.ckpt", (300, 1, {}, False, None, "lightning")),
    ("model_epoch=3.pt", (None, 3, {}, False, None, "lightning")),
    ("step_100-val_loss=0.5.pt", (100, None, {"val_loss": 0.5}, False, None, "lightning")),
    (
        "megatron_gpt--val_loss=2.84-step=1000-consumed_samples=64000.0-last.ckpt",  # NeMo
        (1000, None, {"val_loss": 2.84, "consumed_samples": 64000.0}, True, None, "lightning"),
    ),
    ("epoch=2-step=300-val_loss=0.12.pt.bak", (300, 2, {}, False, None, "lightning")),  # unknown suffix
    # HF Trainer
    ("checkpoint-300", (300, None, {}, False, None, "hf")),
    ("checkpoint-300/", (300, None, {}, False, None, "hf")),
    ("tmp-checkpoint-300", (None, None, {}, False, None, None)),
    ("checkpoint-300.pt", (None, None, {}, False, None, None)),  # a file: epoch or step? unknown
    # plain scripts
    ("checkpoint_epoch_4.pth", (None, 4, {}, False, None, "epoch")),
    ("checkpoint_4.pth", (None, None, {}, False, None, None)),
    ("epoch_3.pt", (None, 3, {}, False, None, "epoch")),
    ("epoch3.pt", (None, 3, {}, False, None, "epoch")),
    ("Epoch-3.pt", (None, 3, {}, False, None, "epoch")),
    ("ep3", (None, 3, {}, False, None, "epoch")),
    ("model_ep12.pth", (None, 12, {}, False, None, "epoch")),
    ("deep3.pt", (None, None, {}, False, None, None)),
    ("rep3.pt", (None, None, {}, False, None, None)),
    ("ep3x.pt", (None, None, {}, False, None, None)),
    ("keep_1.pt", (None, None, {}, False, None, None)),
    ("epoch_3_step_1200.pt", (1200, 3, {}, False, None, "step")),
    ("checkpoint.pth.tar", (None, None, {}, False, None, None)),
    ("model_best.pth.tar", (None, None, {}, False, None, "best")),
    ("best.pt", (None, None, {}, False, None, "best")),
    ("best_model.pt", (None, None, {}, False, None, "best")),
    ("checkpoint_best.pt", (None, None, {}, False, None, "best")),
    ("checkpoint_last.pt", (None, None, {}, True, None, "last")),
    ("last.pt", (None, None, {}, True, None, "last")),
    ("last_layer_frozen.pt", (None, None, {}, False, None, None)),
    # Keras ModelCheckpoint (epoch as written, 1-based)
    ("weights.02-0.60.h5", (None, 2, {"val_loss": 0.60}, False, None, "keras")),
    ("model.05-0.31.keras", (None, 5, {"val_loss": 0.31}, False, None, "keras")),
    ("weights.10-1.23.weights.h5", (None, 10, {"val_loss": 1.23}, False, None, "keras")),
    ("weights.03.h5", (None, 3, {}, False, None, "keras")),
    ("weights.03.hdf5", (None, 3, {}, False, None, "keras")),
    ("weights.02--0.60.h5", (None, 2, {"val_loss": -0.60}, False, None, "keras")),
    ("weights.03.pt", (None, None, {}, False, None, None)),  # not a Keras suffix
    # DeepSpeed, Megatron, DCP, Orbax, TF
    ("step_500", (500, None, {}, False, None, "step")),
    ("step-500", (500, None, {}, False, None, "step")),
    ("step500", (500, None, {}, False, None, "step")),
    ("global_step500", (500, None, {}, False, None, "global_step")),
    ("global_step_500", (500, None, {}, False, None, "global_step")),
    ("iter_0001000", (1000, None, {}, False, None, "iter")),
    ("iteration_20", (20, None, {}, False, None, "iter")),
    ("ckpt-1000", (1000, None, {}, False, None, "ckpt")),
    ("ckpt-1000.index", (1000, None, {}, False, None, "ckpt")),
    ("ckpt-1000.data-00000-of-00001", (1000, None, {}, False, None, "ckpt")),
    ("model.ckpt-1000.index", (1000, None, {}, False, None, "ckpt")),  # TF1 Saver
    ("model.ckpt-1000.meta", (1000, None, {}, False, None, "ckpt")),
    ("1000", (1000, None, {}, False, None, "numeric")),
    ("1000.pt", (None, None, {}, False, None, None)),
    ("1000.orbax-checkpoint-tmp-1712", (None, None, {}, False, None, None)),
    # not checkpoint names
    ("model.safetensors", (None, None, {}, False, None, None)),
    ("pytorch_model.bin", (None, None, {}, False, None, None)),
    ("model-00001-of-00002.safetensors", (None, None, {}, False, None, None)),
    ("model.safetensors.index.json", (None, None, {}, False, None, None)),
    ("model-v2.safetensors", (None, None, {}, False, None, None)),  # not a Lightning version
    ("anything-v3.ckpt", (None, None, {}, False, None, None)),  # a release name, not a Lightning version
    ("qwen2.5", (None, None, {}, False, None, None)),  # Keras names need a Keras suffix
    ("weights.02-0.60", (None, None, {}, False, None, None)),
    ("", (None, None, {}, False, None, None)),
]


@pytest.mark.parametrize(("name", "expected"), NAMES, ids=[n or "<empty>" for n, _ in NAMES])
def test_parse_name(name: str, expected: tuple) -> None:
    info = parse_name(name)
    assert (info.step, info.epoch, dict(info.metrics), info.is_last, info.version, info.template) == expected
    assert info.template is None or info.template in TEMPLATES


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("epoch=1-val_loss=nan.ckpt", "nan"),
        ("epoch=1-val_loss=NaN-step=3.ckpt", "nan"),
        ("weights.01-nan.h5", "nan"),
    ],
)
def test_parse_name_keeps_nan(name: str, value: str) -> None:
    (metric,) = parse_name(name).metrics.values()
    assert math.isnan(metric)


def test_name_info_is_frozen_and_hashable() -> None:
    info = parse_name("epoch=2-step=300-val_loss=0.12.ckpt")
    assert info == parse_name("epoch=2-step=300-val_loss=0.12.ckpt")
    assert hash(info) == hash(parse_name("epoch=2-step=300-val_loss=0.12.ckpt"))
    assert info != parse_name("epoch=2-step=300-val_loss=0.13.ckpt")
    assert len({info, parse_name("last.ckpt"), parse_name("last.ckpt")}) == 2
    with pytest.raises(AttributeError):
        info.step = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.metrics["val_loss"] = 1.0  # type: ignore[index]
    assert NameInfo() == parse_name("model.safetensors")


# ------------------------------------------------------------------------------------------------ sorting

SORTS = [
    (
        ["checkpoint-100", "checkpoint-99", "checkpoint-9"],
        ["checkpoint-9", "checkpoint-99", "checkpoint-100"],
    ),
    (["epoch=10", "epoch=9", "epoch=1"], ["epoch=1", "epoch=9", "epoch=10"]),
    (["b10", "a2", "a10", "b2"], ["a2", "a10", "b2", "b10"]),
    (["x", "10", "2", "x1"], ["2", "10", "x", "x1"]),
    (["A1", "a1", "a01"], ["A1", "a01", "a1"]),  # numerically equal: ties broken by the string itself
    (["", "-", "_"], ["", "-", "_"]),
    # Lightning writes `X-v1` when `X` exists: the newer save, right after `X` (as text `-` < `.`)
    (
        ["last-v1.ckpt", "best-epoch=1-v1.ckpt", "last.ckpt", "best-epoch=1.ckpt"],
        ["best-epoch=1.ckpt", "best-epoch=1-v1.ckpt", "last.ckpt", "last-v1.ckpt"],
    ),
    (
        ["epoch=1-v10.ckpt", "epoch=1-v2.ckpt", "epoch=1.ckpt", "epoch=1_x.ckpt", "epoch=1-v1.CKPT"],
        ["epoch=1.ckpt", "epoch=1-v1.CKPT", "epoch=1-v2.ckpt", "epoch=1-v10.ckpt", "epoch=1_x.ckpt"],
    ),
    # not Lightning-shaped (`parse_name` gives no version): plain text order
    (["model.safetensors", "model-v2.safetensors"], ["model-v2.safetensors", "model.safetensors"]),
]


@pytest.mark.parametrize(("names", "expected"), SORTS)
def test_natural_key(names: list[str], expected: list[str]) -> None:
    assert sorted(names, key=natural_key) == expected


SORT_CHECKPOINTS = [
    (
        ["last.ckpt", "epoch=10-step=110.ckpt", "epoch=9-step=100.ckpt", "epoch=9-step=100-v1.ckpt"],
        ["epoch=9-step=100.ckpt", "epoch=9-step=100-v1.ckpt", "epoch=10-step=110.ckpt", "last.ckpt"],
    ),
    (["out/checkpoint-1000", "out/checkpoint-200/"], ["out/checkpoint-200/", "out/checkpoint-1000"]),
    (
        ["weights.10-0.50.h5", "weights.09-0.70.h5", "weights.1-0.9.h5"],
        ["weights.1-0.9.h5", "weights.09-0.70.h5", "weights.10-0.50.h5"],
    ),
    (
        ["best.pt", "epoch_2.pt", "step_5.pt"],
        ["step_5.pt", "epoch_2.pt", "best.pt"],
    ),  # step first, unknown last
    ([Path("r/step_20"), Path("r/step_3")], [Path("r/step_3"), Path("r/step_20")]),
    (["/r/last-v1.ckpt", "/r/last.ckpt"], ["/r/last.ckpt", "/r/last-v1.ckpt"]),  # whole paths too
]


@pytest.mark.parametrize(("items", "expected"), SORT_CHECKPOINTS)
def test_sort_checkpoints(items: list, expected: list) -> None:
    assert sort_checkpoints(items) == expected


def test_in_run_order_puts_lightning_versions_after_the_name_they_duplicate() -> None:
    """The index's listings (scan, `ls`, the app): a real Lightning `dirpath` run where every save is at the
    same step and epoch, so the names alone decide."""
    names = ["best-epoch=1-v1.ckpt", "best-epoch=1.ckpt", "last-v1.ckpt", "last.ckpt"]
    es = [SimpleNamespace(path=f"/r/fixed_dir/{n}", run="/r/fixed_dir", step=8, epoch=1) for n in names]
    assert [e.path.rsplit("/", 1)[1] for e in in_run_order(es)] == [
        "best-epoch=1.ckpt",
        "best-epoch=1-v1.ckpt",
        "last.ckpt",
        "last-v1.ckpt",
    ]


def test_sort_checkpoints_with_key() -> None:
    rows = [("b", 5, None), ("a", None, 1), ("c", 5, 0), ("d", 1, 9)]
    ordered = sort_checkpoints(rows, key=lambda r: (r[1], r[2], r[0]))
    assert [r[0] for r in ordered] == ["d", "c", "b", "a"]
    assert order_key(None, None, "x") > order_key(10**9, None, "x") > order_key(10**9, 5, "x")


# -------------------------------------------------------------------------------------------------- stage


def test_stage_content_first_then_name() -> None:
    # the name fills only what the content leaves out, and says which fields it gave
    s = stage("/runs/a/epoch=2-step=300-val_loss=0.12.ckpt", None, None, {"loss": 0.5})
    assert (s.step, s.epoch) == (300, 2)
    assert dict(s.metrics) == {"val_loss": 0.12, "loss": 0.5}
    assert s.from_name == {"step", "epoch", "val_loss"}
    s = stage("/runs/a/epoch=2-step=300-val_loss=0.12.ckpt", 301, 3, {"val_loss": 0.2})
    assert (s.step, s.epoch, dict(s.metrics), s.from_name) == (301, 3, {"val_loss": 0.2}, frozenset())
    # a directory checkpoint's name, with or without the trailing slash
    assert stage("/runs/hf/checkpoint-64/", None, 1.5, {}).step == 64
    assert stage("/runs/hf/checkpoint-64", None, None, {}).from_name == {"step"}
    # a name that says nothing
    s = stage("/runs/model.safetensors", None, None, {})
    assert (s.step, s.epoch, dict(s.metrics), s.from_name) == (None, None, {}, frozenset())


# ------------------------------------------------------------------------------------------------- debris

NOW = 1_000_000.0
OLD = NOW - 3600.0
# (name, kwargs) -> reason
DEBRIS = [
    ("tmp-checkpoint-300", {"size": None}, "in-progress save (tmp-checkpoint-*)"),
    ("1000.orbax-checkpoint-tmp-1712", {"size": None}, "in-progress save (*.orbax-checkpoint-tmp-*)"),
    ("default.orbax-checkpoint-tmp-3", {"size": None}, "in-progress save (*.orbax-checkpoint-tmp-*)"),
    (".lr_find_47ce0246-bfd5.ckpt", {"size": 10}, "leftover Lightning tuner checkpoint (.lr_find_*.ckpt)"),
    (
        ".scale_batch_size_0a1b.ckpt",
        {"size": 10},
        "leftover Lightning tuner checkpoint (.scale_batch_size_*.ckpt)",
    ),
    (".metadata.tmp", {"size": 10}, "temporary file (*.tmp)"),
    ("model.safetensors.TMP", {"size": 10}, "temporary file (*.tmp)"),
    ("a1b2c3.incomplete", {"size": 10}, "incomplete download (*.incomplete)"),
    ("model.pt.part", {"size": 10}, "partial download (*.part)"),
    ("model.pt.partial", {"size": 10}, "partial download (*.part)"),
    ("model.safetensors", {"size": 0}, "zero-byte file"),
    (
        "model.safetensors",
        {"size": 10, "mtime": NOW - 2.0},
        "modified 2.0 s ago (may still be being written)",
    ),
    ("model.safetensors", {"size": 10, "mtime": NOW}, "modified 0.0 s ago (may still be being written)"),
    (
        "model.safetensors",
        {"size": 10, "mtime": NOW + 1.5},
        "modified 1.5 s in the future (clock skew? may still be being written)",
    ),
    (
        "model.safetensors",
        {"size": 10, "mtime": NOW - 20.0, "settle_seconds": 30.0},
        "modified 20.0 s ago (may still be being written)",
    ),
    (
        "last.ckpt",
        {"size": None, "mtime": None, "is_symlink": True, "target_exists": False},
        "dangling symlink",
    ),
    (
        "last.ckpt",
        {"size": None, "is_symlink": True, "target_exists": False, "link_target": "epoch=2-step=300.ckpt"},
        "dangling symlink -> epoch=2-step=300.ckpt",
    ),
    # not debris
    ("model.safetensors", {"size": 10}, None),
    ("model.safetensors", {"size": 10, "mtime": NOW - 5.0}, None),  # exactly settle_seconds old
    ("model.safetensors", {"size": 10, "mtime": NOW - 2.0, "settle_seconds": 0.0}, None),
    ("model.safetensors", {"size": 10, "mtime": NOW + 3600.0}, None),  # far future: not "being written"
    ("model.safetensors", {"size": None, "mtime": None}, None),
    ("last.ckpt", {"size": 10, "is_symlink": True, "target_exists": True}, None),
    ("checkpoint-300", {"size": None}, None),
    ("orbax.checkpoint", {"size": 0}, None),  # Orbax's empty marker file
    ("epoch=2-step=300.ckpt", {"size": 10}, None),
    ("lr_find.ckpt", {"size": 10}, None),
]


@pytest.mark.parametrize(("name", "kwargs", "expected"), DEBRIS)
def test_debris_reason(name: str, kwargs: dict, expected: str | None) -> None:
    kwargs = {"mtime": OLD, **kwargs}
    assert debris_reason(name, now=NOW, **kwargs) == expected


# --------------------------------------------------------------------------------------------------- runs

RUNS = [
    ("lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt", "lightning_logs/version_0"),
    ("run/checkpoints/x.ckpt", "run"),
    ("run/checkpoints/last.ckpt", "run"),
    ("checkpoints/x.ckpt", "."),
    ("run/checkpoints/epoch=0-val/loss=0.1.ckpt", "run"),  # Lightning's `/` subfolder
    ("sweep/lr=0.1/model.pt", "sweep/lr=0.1"),  # a Hydra-style `=` folder is a run
    ("out/checkpoint-300", "out"),
    ("out/checkpoint-300/model.safetensors", "out"),
    ("/abs/out/checkpoint-300", "/abs/out"),
    ("runs/x/step_100", "runs/x"),
    ("runs/x/step_100/__0_0.distcp", "runs/x"),
    ("ds/global_step500", "ds"),
    ("ds/global_step500/mp_rank_00_model_states.pt", "ds"),
    ("out/checkpoint-500/global_step500", "out"),
    ("mega/iter_0001000/mp_rank_00/model_optim_rng.pt", "mega"),
    ("acc/epoch_3/model.safetensors", "acc"),
    ("orbax/1000", "orbax"),
    ("data/2024/model.pt", "data/2024"),  # a number folder is not climbed out of
    ("plain/checkpoint_epoch_4.pth", "plain"),
    ("model.pt", "."),
    ("keras-run/weights.02-0.60.h5", "keras-run"),
    ("out/checkpoints/checkpoint-300", "out"),  # HF output_dir="checkpoints"
]


@pytest.mark.parametrize(("path", "expected"), RUNS)
def test_run_dir(path: str, expected: str) -> None:
    assert run_dir(Path(path)) == Path(expected)
    assert run_dir(path) == Path(expected)
    # the scanner's form: by the parent directory, as a string (memoised per directory)
    assert run_dir_of_parent(str(Path(path).parent)) == str(Path(expected))


# --------------------------------------------------------------------------------------------- pre-filter

PREFILTER = [
    *((f"x{suffix}", True) for suffix in CHECKPOINT_SUFFIXES),
    ("MODEL.SAFETENSORS", True),
    ("weights.10-1.23.weights.h5", True),
    ("model_best.pth.tar", True),
    (".metadata", True),
    ("__0_0.distcp", True),
    ("model.safetensors.index.json", True),
    ("pytorch_model.bin.index.json", True),
    ("trainer_state.json", True),
    ("model_final", True),  # no suffix: let content detection decide
    ("latest", True),
    ("model.npz", True),  # unknown suffix: let content detection decide
    ("config.json", False),
    ("training_args.json", False),
    ("metrics.csv", False),
    ("hparams.yaml", False),
    ("README.md", False),
    ("train.py", False),
    ("loss.png", False),
    ("events.out.tfevents.1712.host.1.0", False),
    (".DS_Store", False),
    ("data.tar.gz", False),
]


@pytest.mark.parametrize(("name", "expected"), PREFILTER)
def test_looks_like_checkpoint_name(name: str, expected: bool) -> None:
    assert looks_like_checkpoint_name(name) is expected


# --------------------------------------------------------------------------------------------- trainer state

HF_STATE = {
    "best_metric": 0.41,
    "best_model_checkpoint": "out/checkpoint-64",
    "epoch": 2.0,
    "eval_steps": 32,
    "global_step": 64,
    "log_history": [
        {"epoch": 0.3125, "grad_norm": 1.25, "learning_rate": 0.0009, "loss": 1.1, "step": 10},
        {"epoch": 1.0, "eval_accuracy": 0.8, "eval_loss": 0.5, "eval_runtime": 0.02, "step": 32},
        {"epoch": 2.0, "eval_accuracy": 0.85, "eval_loss": 0.41, "eval_runtime": 0.02, "step": 64},
        {"epoch": 2.0, "step": 64, "total_flos": 1e9, "train_loss": 0.7, "train_runtime": 3.5},
    ],
    "logging_steps": 10,
    "max_steps": 64,
    "num_train_epochs": 2,
    "save_steps": 64,
    "trial_name": None,
}


def test_parse_trainer_state() -> None:
    s = parse_trainer_state(HF_STATE)
    assert (s.global_step, s.epoch, s.max_steps, s.num_train_epochs) == (64, 2.0, 64, 2.0)
    assert (s.save_steps, s.eval_steps, s.logging_steps, s.best_global_step) == (64, 32, 10, None)
    assert (s.best_metric, s.best_model_checkpoint) == (0.41, "out/checkpoint-64")
    assert [(r.step, r.epoch, r.kind) for r in s.log_history] == [
        (10, 0.3125, "train"),
        (32, 1.0, "eval"),
        (64, 2.0, "eval"),
        (64, 2.0, "summary"),
    ]
    assert dict(s.log_history[0].metrics) == {"grad_norm": 1.25, "learning_rate": 0.0009, "loss": 1.1}
    assert dict(s.log_history[3].metrics) == {"total_flos": 1e9, "train_loss": 0.7, "train_runtime": 3.5}
    assert [r.step for r in s.train_rows] == [10]
    assert [r.step for r in s.eval_rows] == [32, 64]
    assert s.series("eval_loss") == ((32, 0.5), (64, 0.41))
    assert s.series("missing") == ()
    hash(s)


ODD_STATES = [
    (None, (None, None, None, None, 0)),
    ([], (None, None, None, None, 0)),
    ({}, (None, None, None, None, 0)),
    (
        {"global_step": "64", "epoch": "2", "best_metric": None, "log_history": "x"},
        (None, None, None, None, 0),
    ),
    ({"global_step": True, "best_metric": False, "best_model_checkpoint": 3}, (None, None, None, None, 0)),
    ({"global_step": 64.0, "epoch": 2, "best_metric": 1}, (64, 2.0, 1.0, None, 0)),
    (
        {"global_step": 64.5, "log_history": [None, 3, {}, {"step": "x", "loss": "y"}]},
        (None, None, None, None, 2),
    ),
]


@pytest.mark.parametrize(("doc", "expected"), ODD_STATES)
def test_parse_trainer_state_is_tolerant(doc: object, expected: tuple) -> None:
    s = parse_trainer_state(doc)
    assert (s.global_step, s.epoch, s.best_metric, s.best_model_checkpoint, len(s.log_history)) == expected


def test_parse_trainer_state_odd_rows() -> None:
    s = parse_trainer_state(
        {"log_history": [{}, {"step": "x", "loss": "y", "flag": True, "nested": {"a": 1}, "lr": 0.1}]}
    )
    assert [(r.step, r.epoch, r.kind, dict(r.metrics)) for r in s.log_history] == [
        (None, None, "other", {}),
        (None, None, "other", {"lr": 0.1}),
    ]


def _latest_from_rows(doc: object) -> dict[str, float]:
    """What latest_metrics stands for: every train/eval LogRow's metrics, later rows winning."""
    out: dict[str, float] = {}
    for row in parse_trainer_state(doc).log_history:
        if row.kind in ("train", "eval"):
            out.update({k: v for k, v in row.metrics.items() if not k.endswith(("_runtime", "_per_second"))})
    return out


def test_latest_metrics_is_what_the_rows_give() -> None:
    assert latest_metrics(HF_STATE) == _latest_from_rows(HF_STATE) == {
        "grad_norm": 1.25, "learning_rate": 0.0009, "loss": 1.1, "eval_loss": 0.41, "eval_accuracy": 0.85
    }  # fmt: skip
    assert parse_trainer_state(HF_STATE, history=False).log_history == ()
    rng = random.Random(7)
    rows = [
        lambda i: {
            "loss": rng.random(),
            "grad_norm": rng.random(),
            "learning_rate": 1e-4,
            "epoch": i,
            "step": i,
        },
        lambda i: {"eval_loss": rng.random(), "eval_acc": 0.5, "eval_runtime": 1.0, "epoch": i, "step": i},
        lambda i: {"train_runtime": 1.0, "train_loss": 0.5, "total_flos": 1e9, "step": i},
        lambda i: {"grad_norm": rng.random(), "step": i, "extra": rng.random()},
        lambda i: {"loss": rng.choice([None, "x", True, 3]), "eval_x": 1, "step": i},  # odd values, mixed
        lambda i: rng.choice(["junk", 5, None, {"step": i}, {}]),
    ]
    for _ in range(500):
        log = [rng.choice(rows)(i) for i in range(rng.randint(0, 40))]
        doc = {"log_history": log}
        assert latest_metrics(doc) == _latest_from_rows(doc), log
        assert list(latest_metrics(doc)) == list(_latest_from_rows(doc)), log  # the same order, too
    assert latest_metrics({"log_history": "x"}) == latest_metrics(None) == {}
    # JSON allows integers no float can hold: not a number, not a crash
    huge = {"log_history": [{"loss": 10**400, "step": 1}, {"loss": 0.5, "grad_norm": 10**400, "step": 2}]}
    assert latest_metrics(huge) == _latest_from_rows(huge) == {"loss": 0.5}


# ------------------------------------------------------------------------------------------- metrics.csv

CSV = [
    (
        "epoch,step,train_loss,val_acc,val_loss\n0,9,0.52,,\n0,31,,0.75,0.45\n1,41,0.3,,\n",
        [
            {"epoch": 0, "step": 9, "train_loss": 0.52},
            {"epoch": 0, "step": 31, "val_acc": 0.75, "val_loss": 0.45},
            {"epoch": 1, "step": 41, "train_loss": 0.3},
        ],
    ),
    ("", []),
    ("epoch,step\n", []),
    ("epoch,step,loss\n,,\n", []),
    ("epoch,step,loss\r\n1,2,3\r\n", [{"epoch": 1, "step": 2, "loss": 3.0}]),
    ("epoch,step,loss\n1.0,2.0,x\n", [{"epoch": 1, "step": 2}]),  # integral floats; non-numbers dropped
    ("epoch,step,loss\n0.5,2,1e-3\n", [{"step": 2, "loss": 0.001}]),  # a fractional epoch is dropped
    ("epoch,step,loss\n1,2\n3,4,5,6\n", [{"epoch": 1, "step": 2}, {"epoch": 3, "step": 4, "loss": 5.0}]),
    (" epoch , step , loss \n 1 , 2 , 3 \n", [{"epoch": 1, "step": 2, "loss": 3.0}]),
    ('epoch,step,loss\n1,2,3\n"4,5\n', [{"epoch": 1, "step": 2, "loss": 3.0}]),  # unterminated quote
]


@pytest.mark.parametrize(("text", "expected"), CSV)
def test_parse_lightning_metrics_csv(text: str, expected: list) -> None:
    assert parse_lightning_metrics_csv(text) == expected


def test_parse_lightning_metrics_csv_nan() -> None:
    (row,) = parse_lightning_metrics_csv("epoch,step,val_loss\n0,1,nan\n")
    assert (row["epoch"], row["step"]) == (0, 1)
    assert math.isnan(row["val_loss"])

"""Builders of HDF5 / Keras checkpoint files in the exact layouts the real writers produce.

Layouts were checked against files saved by Keras 3.15 (torch backend): `model.save("x.keras")`,
`model.save_weights("x.weights.h5")`, and the legacy `model.save("x.h5")` writer, which keeps tf.keras 2's
structure (root attrs, `model_weights/<layer>/<weight_name>`, `optimizer_weights`). Keras 2 weight names
carry the `:0` suffix that tf.keras 2 writes. No keras import: the tests must not depend on it.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

KERAS2_MODEL_WEIGHTS = {  # weight name -> shape, in layer_names/weight_names order
    "dense/kernel:0": (4, 3),
    "dense/bias:0": (3,),
    "dense_1/kernel:0": (3, 2),
    "dense_1/bias:0": (2,),
}
# creation order (the weight_names attribute); HDF5's alphabetical order would differ
KERAS2_OPTIMIZER_WEIGHTS = {
    "Adam/iter:0": ((), "i8"),
    "Adam/dense/kernel/m:0": ((4, 3), "f4"),
    "Adam/dense/bias/m:0": ((3,), "f4"),
    "Adam/dense/kernel/v:0": ((4, 3), "f4"),
    "Adam/dense/bias/v:0": ((3,), "f4"),
}


CORRUPT_HDF5 = b"\x89HDF\r\n\x1a\n" + b"\x07" * 600  # a superblock libhdf5 rejects after parsing some of it


def values(shape: tuple[int, ...], dtype: str = "f4", start: float = 0) -> np.ndarray:
    """Deterministic distinct values, so byte comparisons catch offset mistakes."""
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(n, dtype="f8") + start).astype(dtype).reshape(shape)


def _names(names: list[str]) -> np.ndarray:
    """How tf.keras stores name lists: a fixed-length bytes array (an empty list becomes float64 [])."""
    return np.asarray([n.encode("utf8") for n in names])


def dense(name: str, units: int, **extra: Any) -> dict[str, Any]:
    cfg = {"name": name, "trainable": True, "units": units, "activation": "linear", "use_bias": True}
    return {"module": "keras.layers", "class_name": "Dense", "config": cfg, "registered_name": None, **extra}


def keras2_lambda(name: str) -> dict[str, Any]:
    """A tf.keras 2 Lambda layer: marshalled bytecode; its inner `module` is a config field, not an import."""
    cfg = {
        "name": name,
        "function": ["4wEAAAAAAAAA", None, None],
        "function_type": "lambda",
        "module": "__main__",
    }
    return {"class_name": "Lambda", "config": cfg}


def sequential_config(layers: list[dict[str, Any]] | None = None, name: str = "sequential") -> dict[str, Any]:
    if layers is None:
        input_layer = {
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "dense_input"},
        }
        layers = [input_layer, dense("dense", 3), dense("dense_1", 2)]
    return {"class_name": "Sequential", "config": {"name": name, "layers": layers}}


def nested_lambda_config() -> dict[str, Any]:
    """A Functional model whose Lambdas hide in a nested Sequential, TimeDistributed and Bidirectional."""
    inner = sequential_config(
        [{"class_name": "TimeDistributed", "config": {"name": "td", "layer": keras2_lambda("scale_by_2")}}],
        name="inner",
    )
    bidi = {
        "class_name": "Bidirectional",
        "config": {
            "name": "bidi",
            "layer": {"class_name": "LSTM", "config": {"name": "lstm", "units": 2}},
            "backward_layer": keras2_lambda("backward_hack"),
        },
    }
    return {
        "class_name": "Functional",
        "config": {"name": "model", "layers": [inner, bidi, dense("head", 2)]},
    }


def training_config() -> dict[str, Any]:
    """tf.keras 2.11+ wording, including its 'Custom>Adam' quirk for the built-in Adam."""
    metric = {"class_name": "MeanMetricWrapper", "config": {"name": "mae", "fn": "mean_absolute_error"}}
    return {
        "loss": "mse",
        "metrics": [[metric]],
        "weighted_metrics": None,
        "loss_weights": None,
        "optimizer_config": {"class_name": "Custom>Adam", "config": {"name": "Adam", "learning_rate": 0.001}},
    }


def _keras2_layers(g: h5py.Group) -> None:
    """Layer groups as tf.keras 2 writes them: dense, a weightless dropout, top_level_model_weights."""
    g.attrs["layer_names"] = _names(["dense", "dropout", "dense_1"])
    for i, (wname, shape) in enumerate(KERAS2_MODEL_WEIGHTS.items()):
        layer = wname.split("/")[0]
        lg = g.require_group(layer)
        lg.create_dataset(wname, data=values(shape, start=100 * i))
    for layer in ("dense", "dense_1"):
        g[layer].attrs["weight_names"] = _names(
            [w for w in KERAS2_MODEL_WEIGHTS if w.startswith(layer + "/")]
        )
    g.create_group("dropout").attrs["weight_names"] = _names([])
    g.create_group("top_level_model_weights").attrs["weight_names"] = _names([])


def write_keras2_model(
    path: Path, model_config: dict[str, Any] | None = None, optimizer: bool = True, **root_attrs: Any
) -> None:
    """tf.keras 2 `model.save("x.h5")`."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(model_config or sequential_config()).encode("utf8")
        f.attrs["training_config"] = json.dumps(training_config()).encode("utf8")
        for k, v in root_attrs.items():
            f.attrs[k] = v
        mw = f.create_group("model_weights")
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = "2.15.0"
        _keras2_layers(mw)
        if optimizer:
            ow = f.create_group("optimizer_weights")
            ow.attrs["weight_names"] = _names(list(KERAS2_OPTIMIZER_WEIGHTS))
            for wname, (shape, dtype) in KERAS2_OPTIMIZER_WEIGHTS.items():
                ow.create_dataset(wname, data=values(shape, dtype))


def write_keras2_weights(path: Path) -> None:
    """tf.keras 2 `model.save_weights("x.h5")`: the layer groups sit at the root."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.15.0"
        _keras2_layers(f)


# Keras 3: one group per layer (named by attribute path, not layer name), variables numbered under vars/
KERAS3_WEIGHTS = {
    "layers/dense/vars/0": (4, 3),
    "layers/dense/vars/1": (3,),
    "layers/dense_1/vars/0": (3, 2),
    "layers/dense_1/vars/1": (2,),
}
N_KERAS3_OPTIMIZER_VARS = 12  # iteration, learning_rate, then m/v per weight: more than 10, to test order


def write_keras3_weights(target: Path | io.BytesIO, optimizer: bool = True) -> None:
    """Keras 3 `model.save_weights("x.weights.h5")`, also the `model.weights.h5` inside a `.keras`."""
    with h5py.File(target, "w") as f:
        f.create_group("vars").attrs["name"] = "sequential"
        for i, (path, shape) in enumerate(KERAS3_WEIGHTS.items()):
            f.create_dataset(path, data=values(shape, start=10 * i))
        f["layers/dense/vars"].attrs["name"] = "dense"
        f["layers/dense_1/vars"].attrs["name"] = "out"
        f.create_group("layers/lambda/vars").attrs["name"] = "lam"  # a layer without variables
        if optimizer:
            og = f.create_group("optimizer/vars")
            og.attrs["name"] = "adam"
            og.create_dataset("0", data=np.int32(3))
            for i in range(1, N_KERAS3_OPTIMIZER_VARS):
                og.create_dataset(str(i), data=values((3,), start=i))


def keras3_config(layers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """config.json of a compiled Sequential, as Keras 3 writes it (modules, registered names, compile)."""
    cfg = sequential_config(layers or [dense("dense", 3), dense("out", 2)])
    cfg["module"] = "keras"
    cfg["registered_name"] = None
    cfg["compile_config"] = {
        "optimizer": {
            "module": "keras.optimizers",
            "class_name": "Adam",
            "config": {"name": "adam", "learning_rate": 0.001},
            "registered_name": None,
        },
        "loss": "mse",
        "metrics": ["mae"],
    }
    return cfg


KERAS3_METADATA = {"keras_version": "3.5.0", "date_saved": "2024-09-01@12:00:00"}


def write_dot_keras(
    path: Path,
    config: dict[str, Any] | None = None,
    compress: int = zipfile.ZIP_STORED,
    weights: bool = True,
) -> None:
    """Keras 3 `model.save("x.keras")`: a zip (stored, as Keras writes it) of two JSONs and the weights."""
    bio = io.BytesIO()
    write_keras3_weights(bio)
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("metadata.json", json.dumps(KERAS3_METADATA))
        zf.writestr("config.json", json.dumps(config or keras3_config()))
        if weights:
            zf.writestr("model.weights.h5", bio.getvalue())


def write_generic(path: Path, userblock: int = 0) -> dict[str, np.ndarray]:
    """A hand-written HDF5 checkpoint: nested groups, gzip chunks, strings, big-endian, links."""
    data = {
        "encoder/layer0/weight": values((3, 4)),
        "encoder/layer0/bias": values((4,), "f8", start=0.5),
        "encoder/layer10/weight": values((2, 2), "f2"),
        "encoder/layer2/weight": values((2, 3), ">i4", start=7),
        "decoder/big": values((50, 20), start=1),
        "mask": np.array([True, False, True]),
        "count": np.int64(42),
    }
    with h5py.File(path, "w", userblock_size=userblock or None) as f:
        for name, arr in data.items():
            if name == "decoder/big":
                f.create_dataset(name, data=arr, chunks=(10, 20), compression="gzip")
            else:
                f.create_dataset(name, data=arr)
        f["meta/names"] = ["alpha", "beta", "gamma"]  # variable-length strings
        f["meta/table"] = np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])
        f["tied"] = f["encoder/layer0/weight"]  # a second hard link to the same dataset
        f["alias"] = h5py.SoftLink("/encoder/layer0/bias")
        f.attrs["step"] = 1200
        f.attrs["epoch"] = 3
        f.attrs["val_loss"] = 0.25
        f.attrs["note"] = "hand-made"
    return data


# A stand-in for libhdf5 dying on one file of a batch: the real worker, started the way the pool starts it,
# except that its metadata walk segfaults on a file named boom*, hangs on one named slow*, and raises an
# unforeseen error on oops*. It replaces the last two lines of the worker's bootstrap (`launch._BOOTSTRAP`).
_SERVE = "from hdf5_worker.serve import main\nsys.exit(main())\n"
_FLAKY_SERVE = """\
import os, signal, time
from hdf5_worker import serve
real_meta = serve.read_meta

def flaky_meta(item, req):
    if "boom" in item["path"]:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "slow" in item["path"]:
        time.sleep(30)
    if "oops" in item["path"]:
        raise RuntimeError("unforeseen")
    return real_meta(item, req)

serve.read_meta = flaky_meta
sys.exit(serve.main())
"""


def worker_argv_ending_with(tail: str) -> list[str]:
    """The worker's command line as the pool starts it, with `tail` in place of the bootstrap's last two
    lines (which start serving)."""
    from ckptlab.formats.hdf5_client import launch

    argv = launch.worker_argv()
    assert argv[2].endswith(_SERVE), "the worker bootstrap changed: update _SERVE"
    return [argv[0], "-c", argv[2][: -len(_SERVE)] + tail, *argv[3:]]


def use_flaky_worker(monkeypatch: Any) -> None:
    """Make the h5py client start the flaky stand-in above instead of the real worker."""
    from ckptlab.formats.hdf5_client import pool

    flaky = worker_argv_ending_with(_FLAKY_SERVE)
    monkeypatch.setattr(pool, "worker_argv", lambda: flaky)

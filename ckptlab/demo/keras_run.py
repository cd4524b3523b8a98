"""A Keras-2-shaped run written with h5py (no TensorFlow).

`ModelCheckpoint("weights.{epoch:02d}-{val_loss:.2f}.h5")` saves the full model each epoch in the legacy
HDF5 layout that `model.save("x.h5")` produces.

Layout (Keras 2.15, `legacy/saving/hdf5_format.py`): root attrs `keras_version`, `backend` (str) and
`model_config`, `training_config` (JSON bytes); `model_weights/` with attrs `layer_names`, `backend`,
`keras_version` and one group per layer whose `weight_names` attr lists datasets `dense/kernel:0`, ...;
`optimizer_weights/` likewise. Kernels are [in, out], the transpose of a torch Linear weight; Keras' Adam
moments are the same numbers as torch's `exp_avg` / `exp_avg_sq`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .training import HPARAMS, Dataset, EpochInfo, Hparams, Run

KERAS_VERSION = "2.15.0"
EPSILON = 1e-7  # Keras' Adam default
Weight = tuple[str, np.ndarray]


def _layer_names(hp: Hparams) -> list[str]:
    return ["dense" if i == 0 else f"dense_{i}" for i in range(len(hp.hidden) + 1)]


def _dense_config(
    name: str, units: int, activation: str, batch_input_shape: list[Any] | None
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": name, "trainable": True, "dtype": "float32"}
    if batch_input_shape is not None:
        cfg["batch_input_shape"] = batch_input_shape
    init = {"module": "keras.initializers", "config": {"seed": None}, "registered_name": None}
    cfg |= {
        "units": units,
        "activation": activation,
        "use_bias": True,
        "kernel_initializer": {**init, "class_name": "GlorotUniform"},
        "bias_initializer": {
            "module": "keras.initializers",
            "class_name": "Zeros",
            "config": {},
            "registered_name": None,
        },
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }
    return {"module": "keras.layers", "class_name": "Dense", "config": cfg, "registered_name": None}


def model_config(hp: Hparams) -> dict[str, Any]:
    names = _layer_names(hp)
    shape = [None, hp.in_features]
    layers: list[dict[str, Any]] = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "registered_name": None,
            "config": {
                "batch_input_shape": shape,
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": "dense_input",
            },
        }
    ]
    units = [*hp.hidden, hp.num_classes]
    for i, (name, u) in enumerate(zip(names, units, strict=True)):
        act = "softmax" if i == len(units) - 1 else "relu"
        layers.append(_dense_config(name, u, act, shape if i == 0 else None))
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def training_config(hp: Hparams) -> dict[str, Any]:
    return {
        "loss": "sparse_categorical_crossentropy",
        "metrics": [
            [
                {
                    "module": "keras.metrics",
                    "class_name": "SparseCategoricalAccuracy",
                    "config": {"name": "accuracy", "dtype": "float32"},
                    "registered_name": None,
                }
            ]
        ],
        "weighted_metrics": None,
        "loss_weights": None,
        "optimizer_config": {
            "module": "keras.optimizers",
            "class_name": "Adam",
            "config": {
                "name": "Adam",
                "weight_decay": None,
                "clipnorm": None,
                "global_clipnorm": None,
                "clipvalue": None,
                "use_ema": False,
                "ema_momentum": 0.99,
                "ema_overwrite_frequency": None,
                "jit_compile": False,
                "is_legacy_optimizer": False,
                "learning_rate": hp.lr,
                "beta_1": 0.9,
                "beta_2": 0.999,
                "epsilon": EPSILON,
                "amsgrad": False,
            },
            "registered_name": None,
        },
    }


def _keras_weights(run: Run) -> tuple[list[tuple[str, list[Weight]]], list[Weight]]:
    """Per layer (name, [(weight name, array)]) and the optimizer's weights, in Keras' order."""
    linears = [m for m in run.model if hasattr(m, "weight")]
    state = run.optimizer.state
    steps = int(state[linears[0].weight]["step"]) if linears[0].weight in state else 0
    layers: list[tuple[str, list[Weight]]] = []
    opt: list[Weight] = [
        ("iteration:0", np.array(steps, dtype=np.int64)),
        ("learning_rate:0", np.array(run.lr, dtype=np.float32)),
    ]
    for name, lin in zip(_layer_names(run.hp), linears, strict=True):
        params = [("kernel", lin.weight, True), ("bias", lin.bias, False)]
        layers.append((name, [(f"{name}/{w}:0", _np(p, t)) for w, p, t in params]))
        for w, p, t in params:  # Keras' Adam builds m then v for each variable in turn
            for slot, key in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                if key in state.get(p, {}):
                    opt.append((f"{slot}/{name}/{w}:0", _np(state[p][key], t)))
    return layers, opt


def _np(t: Any, transpose: bool) -> np.ndarray:
    a = t.detach().numpy()
    return np.ascontiguousarray(a.T if transpose else a)


def _names_attr(names: list[str]) -> np.ndarray:
    return np.array([n.encode("utf8") for n in names])  # Keras stores these as fixed-length bytes


def save_keras_h5(path: Path, run: Run) -> None:
    import h5py

    layers, opt = _keras_weights(run)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = KERAS_VERSION
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(model_config(run.hp)).encode("utf8")
        f.attrs["training_config"] = json.dumps(training_config(run.hp)).encode("utf8")
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = _names_attr([name for name, _ in layers])
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = KERAS_VERSION
        for name, weights in layers:
            g = mw.create_group(name)
            g.attrs["weight_names"] = _names_attr([w for w, _ in weights])
            for w, a in weights:
                g.create_dataset(w, data=a)
        ow = f.create_group("optimizer_weights")
        ow.attrs["weight_names"] = _names_attr([w for w, _ in opt])
        for w, a in opt:
            ow.create_dataset(w, data=a)


def keras_filename(epoch: int, val_loss: float) -> str:
    """Keras formats its template with the 1-based epoch: `weights.{epoch:02d}-{val_loss:.2f}.h5`."""
    return f"weights.{epoch + 1:02d}-{val_loss:.2f}.h5"


def write_keras(out: Path, data: Dataset, epochs: int, seed: int) -> Run:
    out.mkdir(parents=True)

    def on_epoch(run: Run, ep: EpochInfo) -> None:
        save_keras_h5(out / keras_filename(ep.epoch, ep.val_loss), run)

    run = Run(data, epochs, seed, schedule="constant", eps=EPSILON, hp=HPARAMS)
    run.train(on_epoch=on_epoch)
    return run

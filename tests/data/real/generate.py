#!/usr/bin/env python
"""Regenerate tests/data/real: checkpoints written by the real frameworks, and the ground truth they report.

Run from the repository root, once per environment (see README.md in this folder for the versions):

    KERAS_BACKEND=torch python tests/data/real/generate.py /tmp/realgen-work --dest tests/data/real
    python tests/data/real/generate.py /tmp/realgen-work4 --only hf --dest tests/data/real  # transformers 4

Each section trains a tiny model on the CPU (seconds, fixed seeds) in WORK, records what the framework itself
reports (state dicts, trainer state, callback scores, Keras weights) for the files kept, then copies those
files to DEST and merges their truth into DEST/truth.json. Sections: plain, torchscript, dcp, accelerate,
keras, lightning, hf (transformers 5 writes hf/, transformers 4 writes hf_v4/ and hf_v4_export_bin_sharded/).
Not a test module: pytest does not collect it and nothing in the suite imports a framework.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickletools
import platform
import random
import shutil
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_DISABLED"):
    os.environ.setdefault(_var, "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402  (after the environment: keras reads KERAS_BACKEND on import)
import torch  # noqa: E402
from torch import nn  # noqa: E402

SEED = 1234
TRUTH: dict[str, dict[str, Any]] = {}  # checkpoint path relative to DEST -> what the framework reported
COPY: list[str] = []  # paths relative to WORK (= relative to DEST) copied as they are
VERSIONS: dict[str, str] = {}


def seed_all(s: int = SEED) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


# --------------------------------------------------------------------------- ground-truth helpers


def model_truth(sd: dict[str, Any]) -> dict[str, Any]:
    """name -> [shape, dtype] of every tensor of a state dict, and their element count."""
    tensors = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()}
    return {"n_params": sum(int(v.numel()) for v in sd.values()), "tensors": tensors}


def pickle_globals(path: Path) -> list[str]:
    """Every global the pickles of a file reference (torch zip or legacy), read by pickletools: nothing is
    imported or built. A STACK_GLOBAL takes the two strings pushed before it, possibly from the memo."""

    def scan(stream: io.BufferedIOBase) -> set[str]:
        out: set[str] = set()
        memo: dict[int, str | None] = {}
        pushed: list[str | None] = []  # what each op pushed, strings only: enough to name a global
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                pushed.append(arg)
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif op.name == "GLOBAL":
                out.add(arg.replace(" ", "."))
                pushed.append(None)
            elif op.name == "STACK_GLOBAL":
                out.add(f"{pushed[-2]}.{pushed[-1]}")
                pushed.append(None)
            else:
                pushed.append(None)
        return out

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return sorted(
                set().union(*(scan(io.BytesIO(z.read(n))) for n in z.namelist() if n.endswith(".pkl")))
            )
    found: set[str] = set()
    with open(path, "rb") as f:  # legacy: magic, protocol, sys info, the object, storage keys; then raw bytes
        for _ in range(5):
            found |= scan(f)
    return sorted(found)


def keep(rel: str, **truth: Any) -> None:
    TRUTH[rel] = truth
    COPY.append(rel)


# --------------------------------------------------------------------------- Hugging Face Trainer


def gen_hf(work: Path) -> None:
    import transformers
    from safetensors import safe_open
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    v4 = int(transformers.__version__.split(".")[0]) < 5
    VERSIONS["transformers 4" if v4 else "transformers"] = transformers.__version__
    cfg = BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )

    class DS(torch.utils.data.Dataset):
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(0, 32, (n, 12), generator=g)
            self.y = (self.x[:, 0] > 15).long()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {
                "input_ids": self.x[i],
                "attention_mask": torch.ones(12, dtype=torch.long),
                "labels": self.y[i],
            }

    saved: dict[int, dict[str, Any]] = {}

    def state_truth(state: Any) -> dict[str, Any]:
        def latest(key: str) -> float | None:
            return next((row[key] for row in reversed(state.log_history) if key in row), None)

        metrics = {k: latest(k) for k in ("loss", "eval_loss")} | {"best_metric": state.best_metric}
        return {
            "step": state.global_step,
            "epoch": state.epoch,
            "metrics": {k: v for k, v in metrics.items() if v is not None},
        }

    class Record(TrainerCallback):  # the Trainer's own state as each checkpoint-N was written
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            saved[state.global_step] = state_truth(state)

    def folder_truth(d: Path, args: Any, state: dict[str, Any], writer: str) -> dict[str, Any]:
        if (d / "model.safetensors").exists():
            with safe_open(d / "model.safetensors", "pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not a dict)
        else:
            sd = torch.load(d / "pytorch_model.bin", weights_only=True)
        pickles = sorted(p for p in d.iterdir() if p.suffix in (".pt", ".pth", ".bin"))
        return {
            "writer": writer,
            "model": model_truth(sd),
            **state,
            "parts": {
                "optimizer": (d / "optimizer.pt").exists(),
                "scheduler": (d / "scheduler.pt").exists(),
                "rng_state": (d / "rng_state.pth").exists(),
            },
            "training_args": {
                k: getattr(args, k)
                for k in ("learning_rate", "per_device_train_batch_size", "seed", "lr_scheduler_type")
            },
            "pickle_globals": sorted(set().union(*(pickle_globals(p) for p in pickles))),
        }

    seed_all()
    if not v4:
        # save_total_limit=1 with load_best_model_at_end keeps the best and the latest: here one folder
        run = work / "hf"
        args = TrainingArguments(
            output_dir=str(run),
            max_steps=12,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=16,
            learning_rate=3e-2,
            save_strategy="steps",
            save_steps=4,
            eval_strategy="steps",
            eval_steps=4,
            logging_steps=2,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            report_to=[],
            seed=SEED,
            use_cpu=True,
            dataloader_num_workers=0,
            lr_scheduler_type="linear",
            warmup_steps=2,
        )
        trainer = Trainer(
            model=BertForSequenceClassification(cfg),
            args=args,
            train_dataset=DS(48, 1),
            eval_dataset=DS(32, 2),
            callbacks=[Record()],
        )
        trainer.train()
        trainer.save_model()  # the output_dir's final save, next to its checkpoint-N folders
        trainer.save_state()
        tv = f"transformers {transformers.__version__}"
        for d in sorted(run.glob("checkpoint-*")):
            step = int(d.name.split("-")[1])
            keep(f"hf/{d.name}", **folder_truth(d, args, saved[step], f"{tv} Trainer.train() (save_steps=4)"))
        keep(
            "hf",
            **folder_truth(
                run,
                args,
                state_truth(trainer.state),
                f"{tv} Trainer.save_model() + save_state() after train()",
            ),
        )
        return
    # transformers 4: save_safetensors=False writes pytorch_model.bin; save_only_model leaves out the
    # optimizer, scheduler and RNG state; save_total_limit=1 leaves the last checkpoint-N only
    run = work / "hf_v4"
    args = TrainingArguments(
        output_dir=str(run),
        num_train_epochs=2,
        per_device_train_batch_size=16,
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        save_safetensors=False,
        logging_steps=1,
        report_to=[],
        seed=SEED,
        use_cpu=True,
        learning_rate=1e-3,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(cfg), args=args, train_dataset=DS(48, 1), callbacks=[Record()]
    )
    trainer.train()
    tv = f"transformers {transformers.__version__}"
    for d in sorted(run.glob("checkpoint-*")):
        step = int(d.name.split("-")[1])
        keep(
            f"hf_v4/{d.name}",
            **folder_truth(
                d, args, saved[step], f"{tv} Trainer.train() (save_only_model, save_safetensors=False)"
            ),
        )
    export = work / "hf_v4_export_bin_sharded"
    trainer.model.save_pretrained(export, safe_serialization=False, max_shard_size="4KB")
    index = json.loads((export / "pytorch_model.bin.index.json").read_text())
    sd: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        sd.update(torch.load(export / shard, weights_only=True))
    keep(
        "hf_v4_export_bin_sharded/pytorch_model.bin.index.json",
        writer=f"{tv} save_pretrained(safe_serialization=False, max_shard_size='4KB')",
        model=model_truth(sd),
        shards=len(set(index["weight_map"].values())),
        step=None,
        epoch=None,
        metrics={},
        parts={"optimizer": False, "scheduler": False, "rng_state": False},
    )
    COPY.extend(
        f"{export.name}/{p.name}" for p in export.iterdir() if p.name != "pytorch_model.bin.index.json"
    )


# --------------------------------------------------------------------------- Lightning


def gen_lightning(work: Path) -> None:
    from argparse import Namespace

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    VERSIONS["lightning"] = L.__version__

    class Tiny(L.LightningModule):
        def __init__(
            self, in_dim: int = 8, hidden: int = 16, lr: float = 1e-2, gamma: float = 0.5, note: str = "tiny"
        ) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.bn = nn.BatchNorm1d(hidden)  # buffers: running_mean/var, num_batches_tracked (int64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net[2](self.net[1](self.bn(self.net[0](x))))

        def training_step(self, b: Any, i: int) -> torch.Tensor:
            loss = nn.functional.mse_loss(self(b[0]), b[1])
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, b: Any, i: int) -> None:
            self.log("val_loss", nn.functional.mse_loss(self(b[0]), b[1]))

        def configure_optimizers(self) -> dict[str, Any]:
            opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            sch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=self.hparams.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": "epoch"}}

    def loaders(seed: int) -> tuple[Any, Any]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 8, generator=g)
        ds = torch.utils.data.TensorDataset(x, x[:, :1] * 2 + 0.1 * torch.randn(64, 1, generator=g))
        return (
            torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False),
            torch.utils.data.DataLoader(ds, batch_size=32),
        )

    quiet = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}
    root = work / "lightning"
    # run A: CSVLogger + ModelCheckpoint(top_k=2, save_last=True): version_0/{checkpoints,metrics.csv,hparams}
    seed_all()
    L.seed_everything(SEED, workers=True)
    ck = ModelCheckpoint(
        monitor="val_loss", save_top_k=2, save_last=True, filename="{epoch}-{step}-{val_loss:.2f}"
    )
    L.Trainer(
        max_epochs=4,
        default_root_dir=str(root),
        logger=CSVLogger(save_dir=str(root), name="csv"),
        callbacks=[ck],
        log_every_n_steps=1,
        deterministic=True,
        **quiet,
    ).fit(Tiny(), *loaders(1))
    COPY.extend(["lightning/csv/version_0/metrics.csv", "lightning/csv/version_0/hparams.yaml"])
    # run B: two fits into one explicit dirpath: the second writes best-epoch=1-v1.ckpt and last-v1.ckpt
    for i in range(2):
        seed_all(SEED + i)
        ckb = ModelCheckpoint(
            dirpath=str(root / "fixed_dir"),
            monitor="val_loss",
            save_top_k=1,
            save_last=True,
            filename="best-{epoch}",
        )
        L.Trainer(
            max_epochs=2,
            default_root_dir=str(work / "lightning_root"),
            logger=False,
            callbacks=[ckb],
            **quiet,
        ).fit(Tiny(note=f"fit{i}"), *loaders(1 + i))

    # run C: hyper-parameters holding objects (a Path, an nn.Module, a Namespace), as real code does
    class TinyH(Tiny):
        def __init__(
            self,
            data_dir: Path = Path("/data/x"),
            loss_fn: nn.Module | None = None,
            args: Namespace | None = None,
            **kw: Any,
        ) -> None:
            super().__init__(**kw)
            self.save_hyperparameters()
            self.loss_fn = loss_fn

    seed_all()
    cke = ModelCheckpoint(
        dirpath=str(root / "hparams_objects" / "checkpoints"), save_top_k=1, monitor="val_loss"
    )
    L.Trainer(
        max_epochs=1, default_root_dir=str(root / "hparams_objects"), logger=False, callbacks=[cke], **quiet
    ).fit(TinyH(loss_fn=nn.MSELoss(), args=Namespace(batch_size=16, tag="e")), *loaders(1))

    for p in sorted(root.rglob("*.ckpt")):
        c = torch.load(p, weights_only=False, map_location="cpu")
        state = next(v for k, v in c["callbacks"].items() if k.startswith("ModelCheckpoint"))
        keep(
            str(p.relative_to(work)),
            writer=f"lightning {L.__version__} ModelCheckpoint",
            model=model_truth(c["state_dict"]),
            step=c["global_step"],
            epoch=c["epoch"],
            metrics={
                "val_loss": float(state["current_score"]),
                "best_model_score": float(state["best_model_score"]),
            },
            parts={
                "optimizer": bool(c["optimizer_states"]),
                "scheduler": bool(c["lr_schedulers"]),
                "rng_state": False,
            },
            hyper_parameters={
                k: v if isinstance(v, (int, float, str)) else f"<{type(v).__qualname__}>"
                for k, v in c["hyper_parameters"].items()
            },
            pickle_globals=pickle_globals(p),
        )


# --------------------------------------------------------------------------- Keras 3 (torch backend)


def gen_keras(work: Path) -> None:
    import h5py
    import keras

    VERSIONS["keras"] = keras.__version__
    d = work / "keras"
    d.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(SEED)
    x = np.random.RandomState(0).randn(64, 8).astype("float32")
    y = (x[:, :1] * 2).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1, name="out"),
        ],
        name="tiny_seq",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    cb = keras.callbacks.ModelCheckpoint(
        str(d / "weights.{epoch:02d}-{val_loss:.2f}.weights.h5"), save_weights_only=True
    )
    hist = model.fit(x, y, validation_split=0.25, epochs=3, batch_size=16, callbacks=[cb], verbose=0)
    model.save(d / "model.keras")
    model.save_weights(d / "model.weights.h5")
    model.save(d / "legacy.h5")  # Keras 2's whole-model HDF5 layout, still written for a .h5 name

    keras.utils.set_random_seed(SEED)
    lm = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda v: v * 2.0, name="double"), keras.layers.Dense(2)]
    )
    lm.save(d / "lambda_model.keras")

    @keras.saving.register_keras_serializable(package="realgen")
    class Scale(keras.layers.Layer):  # a registered custom layer: loading it imports this code
        def __init__(self, factor: float = 3.0, **kw: Any) -> None:
            super().__init__(**kw)
            self.factor = factor

        def call(self, v: Any) -> Any:
            return v * self.factor

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "factor": self.factor}

    cm = keras.Sequential([keras.Input((4,)), Scale(name="scale"), keras.layers.Dense(2)])
    cm.save(d / "custom_layer_model.keras")

    def as_stored(f: h5py.File) -> tuple[dict[str, Any], bool]:
        """The model weights under the names the file gives them (Keras 3 names a weight by its layer's
        attribute path, layers/dense/vars/0; the Keras 2 layout lists Variable paths in weight_names), and
        whether the file holds optimizer variables."""
        out: dict[str, Any] = {}
        if "model_weights" in f:
            for layer in f["model_weights"].attrs["layer_names"]:
                g = f["model_weights"][layer]
                for name in g.attrs["weight_names"]:
                    out[name] = [list(g[name].shape), str(g[name].dtype)]
            return out, len(f.get("optimizer_weights", ())) > 0
        f["layers"].visititems(
            lambda n, o: (
                out.__setitem__(f"layers/{n}", [list(o.shape), str(o.dtype)])
                if isinstance(o, h5py.Dataset)
                else None
            )
        )
        return out, len(f.get("optimizer", ())) > 0

    def file_truth(p: Path, m: Any, **extra: Any) -> dict[str, Any]:
        if p.suffix == ".keras":
            with zipfile.ZipFile(p) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
                tensors, has_opt = as_stored(f)
        else:
            with h5py.File(p) as f:
                tensors, has_opt = as_stored(f)
        weights = [[w.path, list(w.shape), str(w.dtype)] for w in m.weights]
        return {
            "writer": f"keras {keras.__version__} ({keras.backend.backend()} backend)",
            "model": {"n_params": int(m.count_params()), "tensors": tensors},
            "keras_weights": weights,
            "parts": {"optimizer": has_opt, "scheduler": False, "rng_state": False},
            "layer_classes": [type(layer).__name__ for layer in m.layers],
            **extra,
        }

    # the optimizer's iteration counter is the step Keras resumes from: a value in the file, not a header
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    val_loss = hist.history["val_loss"]
    for name in ("model.keras", "model.weights.h5", "legacy.h5"):
        keep(
            f"keras/{name}",
            **file_truth(d / name, model, optimizer_iterations=iterations, step=None, epoch=None, metrics={}),
        )
    last = sorted(d.glob("weights.*.weights.h5"))[-1]  # ModelCheckpoint wrote one a epoch: keep the last
    # ModelCheckpoint puts the epoch (1-based: epochs done) and val_loss only in the name it formats
    keep(
        f"keras/{last.name}",
        **file_truth(
            last,
            model,
            optimizer_iterations=iterations,
            step=None,
            epoch=None,
            metrics={},
            name_values={"epoch": len(val_loss), "val_loss": val_loss[-1]},
        ),
    )
    keep(
        "keras/lambda_model.keras",
        **file_truth(d / "lambda_model.keras", lm, step=None, epoch=None, metrics={}),
    )
    keep(
        "keras/custom_layer_model.keras",
        **file_truth(
            d / "custom_layer_model.keras",
            cm,
            step=None,
            epoch=None,
            metrics={},
            registered_name=keras.saving.get_registered_name(Scale),
        ),
    )


# --------------------------------------------------------------------------- Accelerate


def gen_accelerate(work: Path) -> None:
    import accelerate
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from safetensors import safe_open

    VERSIONS["accelerate"] = accelerate.__version__
    set_seed(SEED)

    class Counter:  # registered for checkpointing: save_state pickles its state as custom_checkpoint_0.pkl
        def __init__(self) -> None:
            self.n = 0

        def state_dict(self) -> dict[str, int]:
            return {"n": self.n}

        def load_state_dict(self, s: dict[str, int]) -> None:
            self.n = s["n"]

    acc = Accelerator(cpu=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    ds = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))
    model, opt, dl, sch = acc.prepare(
        model, opt, torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True), sch
    )
    counter = Counter()
    acc.register_for_checkpointing(counter)
    for _epoch in range(2):
        for x, yb in dl:
            acc.backward(nn.functional.cross_entropy(model(x), yb))
            opt.step()
            sch.step()
            opt.zero_grad()
            counter.n += 1
    d = work / "accelerate" / "state"
    acc.save_state(str(d))
    with safe_open(d / "model.safetensors", "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not a dict)
    # accelerate records no training step of its own: random_states_0.pkl's "step" is its gradient
    # accumulation counter (0 without accumulate()); the 8 optimizer steps live in the optimizer state
    keep(
        "accelerate/state",
        writer=f"accelerate {accelerate.__version__} Accelerator.save_state(dir)",
        model=model_truth(sd),
        step=None,
        epoch=None,
        metrics={},
        optimizer_steps=counter.n,
        parts={
            "optimizer": (d / "optimizer.bin").exists(),
            "scheduler": (d / "scheduler.bin").exists(),
            "rng_state": (d / "random_states_0.pkl").exists(),
        },
        files=sorted(p.name for p in d.iterdir()),
        pickle_globals=sorted(
            set().union(*(pickle_globals(p) for p in d.iterdir() if p.suffix != ".safetensors"))
        ),
    )


# --------------------------------------------------------------------------- torch.distributed.checkpoint


def gen_dcp(work: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.stateful import Stateful

    seed_all()
    d = work / "dcp"
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    # raw state dicts: the optimizer's state keyed by integer param ids
    dcp.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": 3,
            "extra": {"loss": float(loss)},
        },
        checkpoint_id=str(d / "raw"),
    )

    class AppState(Stateful):  # the DCP tutorial's pattern: {"app": AppState(model, optimizer)}
        def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            self.model, self.optimizer = model, optimizer

        def state_dict(self) -> dict[str, Any]:
            m, o = get_state_dict(self.model, self.optimizer)
            return {"model": m, "optim": o}

        def load_state_dict(self, sd: dict[str, Any]) -> None:
            pass

    dcp.save({"app": AppState(model, opt)}, checkpoint_id=str(d / "app_state"))
    for sub, prefix, extra in (
        ("raw", "model.", {"step": 3, "metrics": {"extra.loss": float(loss)}}),
        ("app_state", "app.model.", {"step": None, "metrics": {}}),
    ):
        md = FileSystemReader(str(d / sub)).read_metadata().state_dict_metadata
        items = {
            k: [list(v.size), str(v.properties.dtype).removeprefix("torch.")]
            for k, v in md.items()
            if hasattr(v, "size")
        }
        model_items = {k.removeprefix(prefix): v for k, v in items.items() if k.startswith(prefix)}
        keep(
            f"dcp/{sub}",
            writer=f"torch {torch.__version__} torch.distributed.checkpoint.save",
            model={"n_params": sum(int(np.prod(s)) for s, _ in model_items.values()), "tensors": model_items},
            model_prefix=prefix,
            epoch=None,
            parts={
                "optimizer": any(".optim" in k or k.startswith("optim") for k in items),
                "scheduler": False,
                "rng_state": False,
            },
            files=sorted(p.name for p in (d / sub).iterdir()),
            **extra,
        )


# --------------------------------------------------------------------------- TorchScript


def gen_torchscript(work: Path) -> None:
    seed_all()
    d = work / "torchscript"
    d.mkdir(parents=True, exist_ok=True)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.bn = nn.BatchNorm1d(16)
            self.fc2 = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.bn(self.fc1(x))))

    s = torch.jit.script(Net().eval())
    torch.jit.save(s, d / "scripted.pt")
    keep(
        "torchscript/scripted.pt",
        writer=f"torch {torch.__version__} torch.jit.script + torch.jit.save",
        model=model_truth(s.state_dict()),
        step=None,
        epoch=None,
        metrics={},
        parts={"optimizer": False, "scheduler": False, "rng_state": False},
    )


# --------------------------------------------------------------------------- plain PyTorch


def gen_plain(work: Path) -> None:
    seed_all()
    d = work / "plain"
    d.mkdir(parents=True, exist_ok=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    tv = f"torch {torch.__version__}"
    parts = {"optimizer": True, "scheduler": True, "rng_state": False}
    for epoch in range(1, 4):  # the tutorial's loop: a dict with the epoch, the state dicts and the last loss
        for i in range(0, 64, 16):
            loss = nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
            loss.backward()
            opt.step()
            opt.zero_grad()
        sch.step()
        ck = {
            "epoch": epoch,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
            "scheduler_state_dict": sch.state_dict(),
            "loss": loss.item(),
        }
        if epoch == 1:
            torch.save(ck, d / "checkpoint_epoch_1.pth")
            keep(
                "plain/checkpoint_epoch_1.pth",
                writer=f"{tv} torch.save",
                model=model_truth(model.state_dict()),
                step=None,
                epoch=1,
                metrics={"loss": loss.item()},
                parts=parts,
                pickle_globals=pickle_globals(d / "checkpoint_epoch_1.pth"),
            )
    torch.save(ck, d / "legacy_checkpoint.pt", _use_new_zipfile_serialization=False)
    keep(
        "plain/legacy_checkpoint.pt",
        writer=f"{tv} torch.save(_use_new_zipfile_serialization=False)",
        model=model_truth(model.state_dict()),
        step=None,
        epoch=3,
        metrics={"loss": ck["loss"]},
        parts=parts,
        pickle_globals=pickle_globals(d / "legacy_checkpoint.pt"),
    )
    # a metric computed with numpy (np.float64) and numpy's RNG state: common in real training scripts
    torch.save(
        {
            "epoch": 3,
            "model_state_dict": model.state_dict(),
            "val_loss": np.float64(0.25),
            "rng": np.random.get_state(),
        },
        d / "numpy_metric.pt",
    )
    keep(
        "plain/numpy_metric.pt",
        writer=f"{tv} torch.save",
        model=model_truth(model.state_dict()),
        step=None,
        epoch=3,
        metrics={"val_loss": 0.25},
        parts={"optimizer": False, "scheduler": False, "rng_state": True},
        pickle_globals=pickle_globals(d / "numpy_metric.pt"),
    )
    torch.save(model, d / "full_model.pt")  # the whole nn.Module pickled: loading it imports its classes
    keep(
        "plain/full_model.pt",
        writer=f"{tv} torch.save(model)",
        model=model_truth(model.state_dict()),
        step=None,
        epoch=None,
        metrics={},
        parts={"optimizer": False, "scheduler": False, "rng_state": False},
        pickle_globals=pickle_globals(d / "full_model.pt"),
    )


# --------------------------------------------------------------------------- driver

SECTIONS = {
    "plain": gen_plain,
    "torchscript": gen_torchscript,
    "dcp": gen_dcp,
    "accelerate": gen_accelerate,
    "keras": gen_keras,
    "lightning": gen_lightning,
    "hf": gen_hf,
}


def dump(obj: Any, indent: int = 0) -> str:
    """JSON with short lists and objects on one line: a tensor table stays one line a tensor."""
    flat = json.dumps(obj)
    if len(flat) + indent <= 100 or not isinstance(obj, (dict, list)) or not obj:
        return flat
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        inner = [f"{pad}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(inner) + "\n" + " " * indent + "}"
    return "[\n" + ",\n".join(pad + dump(v, indent + 1) for v in obj) + "\n" + " " * indent + "]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="scratch folder the frameworks write into (emptied first)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--dest", type=Path, help="copy the kept files here and merge their truth.json")
    a = ap.parse_args()
    work = a.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    VERSIONS.update(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__)
    for name in a.only.split(","):
        SECTIONS[name](work)
        print(f"[generate] {name}: done", file=sys.stderr)
    if a.dest is None:
        return
    dest = a.dest.resolve()
    tops = {rel.split("/")[0] for rel in COPY}
    for top in tops:  # a section replaces all its files: nothing stale survives a regeneration
        shutil.rmtree(dest / top, ignore_errors=True)
    for rel in COPY:
        src, dst = work / rel, dest / rel
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    tpath = dest / "truth.json"
    old = json.loads(tpath.read_text()) if tpath.exists() else {}
    versions = {**old.get("versions", {}), **VERSIONS}
    checkpoints = {k: v for k, v in old.get("checkpoints", {}).items() if k.split("/")[0] not in tops}
    checkpoints.update(TRUTH)
    doc = {"versions": dict(sorted(versions.items())), "checkpoints": dict(sorted(checkpoints.items()))}
    tpath.write_text(dump(doc) + "\n")


if __name__ == "__main__":
    main()

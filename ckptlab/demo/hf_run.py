"""An HF-Trainer-shaped output directory and a `save_pretrained`-style sharded export, without transformers.

`training_args.bin` is what `Trainer` really writes, `torch.save(self.args)`: a torch zip whose data.pkl
builds a `transformers.training_args.TrainingArguments` (and its enum fields) by reference. ckptlab must
report those globals as unsafe, so the demo writes the same bytes: a pickler that emits GLOBAL opcodes for
stand-in classes, never importing transformers. Timing fields (`eval_runtime`, throughput) are nominal
constants so that one seed gives byte-identical files.
"""

from __future__ import annotations

import json
import pickle
import random
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .training import HPARAMS, Dataset, Hparams, Run, StepInfo

TRANSFORMERS_VERSION = "4.46.3"
LOGGING_STEPS = 10
MAX_SHARD_SIZE = 600 * 10**3  # save_pretrained(max_shard_size="600KB"): HF counts in powers of ten
OUTPUT_DIR = "hf-run"


# --- pickling references to classes we do not have ----------------------------------------------------


class _ForeignPickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """The pure-Python pickler (its save_global can be overridden) that writes stand-in classes by name."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        ref = _FOREIGN.get(id(obj))
        if ref is None:
            super().save_global(obj, name)
            return
        self.write(pickle.GLOBAL + f"{ref[0]}\n{ref[1]}\n".encode())
        self.memoize(obj)


_FOREIGN: dict[int, tuple[str, str]] = {}
_PICKLE_MODULE = types.SimpleNamespace(Pickler=_ForeignPickler, __name__="ckptlab.demo.foreign_pickle")


def _foreign_class(module: str, name: str, *, enum: bool = False) -> type:
    """A stand-in class pickled as `module.name`; enum stand-ins reduce like `Enum` members: cls(value)."""
    ns: dict[str, Any] = {"__module__": module, "__qualname__": name}
    if enum:
        ns["__reduce__"] = lambda self: (type(self), (self.value,))
    cls = type(name, (), ns)
    _FOREIGN[id(cls)] = (module, name)
    return cls


_TrainingArguments = _foreign_class("transformers.training_args", "TrainingArguments")
_IntervalStrategy = _foreign_class("transformers.trainer_utils", "IntervalStrategy", enum=True)
_SchedulerType = _foreign_class("transformers.trainer_utils", "SchedulerType", enum=True)
_OptimizerNames = _foreign_class("transformers.training_args", "OptimizerNames", enum=True)


def _instance(cls: type, **attrs: Any) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(attrs)
    return obj


def training_args(hp: Hparams, epochs: int, save_steps: int, eval_steps: int, seed: int) -> Any:
    """A TrainingArguments stand-in holding real field names and enum-typed strategies."""
    steps = _instance(_IntervalStrategy, value="steps")
    return _instance(
        _TrainingArguments,
        output_dir=OUTPUT_DIR,
        overwrite_output_dir=False,
        do_train=True,
        do_eval=True,
        eval_strategy=steps,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.eval_batch_size,
        gradient_accumulation_steps=1,
        learning_rate=hp.lr,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-08,
        max_grad_norm=1.0,
        num_train_epochs=float(epochs),
        max_steps=-1,
        lr_scheduler_type=_instance(_SchedulerType, value="linear"),
        warmup_ratio=0.1,
        warmup_steps=0,
        logging_dir=f"{OUTPUT_DIR}/runs",
        logging_strategy=steps,
        logging_steps=LOGGING_STEPS,
        save_strategy=steps,
        save_steps=save_steps,
        save_total_limit=None,
        save_safetensors=True,
        seed=seed,
        eval_steps=eval_steps,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        optim=_instance(_OptimizerNames, value="adamw_torch"),
        report_to=[],
        _n_gpu=0,
    )


def save_training_args(obj: Any, path: Path) -> None:
    torch.save(obj, path, pickle_module=_PICKLE_MODULE)


# --- model files --------------------------------------------------------------------------------------


def model_config(hp: Hparams) -> dict[str, Any]:
    labels = {str(i): f"LABEL_{i}" for i in range(hp.num_classes)}
    return {
        "architectures": ["DemoMLPForSequenceClassification"],
        "hidden_act": "relu",
        "hidden_sizes": list(hp.hidden),
        "id2label": labels,
        "input_size": hp.in_features,
        "label2id": {v: int(k) for k, v in labels.items()},
        "model_type": "demo-mlp",
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
    }


def _dump_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")  # how HF writes every JSON file


def hf_state_dict(run: Run) -> dict[str, torch.Tensor]:
    """Weights under the PreTrainedModel attribute name, detached copies (safetensors wants owners)."""
    return {f"mlp.{k}": v.detach().clone().contiguous() for k, v in run.model.state_dict().items()}


def save_pretrained(state: dict[str, torch.Tensor], out: Path, hp: Hparams) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    _dump_json(model_config(hp), out / "config.json")


def save_sharded(state: dict[str, torch.Tensor], out: Path, max_shard_size: int = MAX_SHARD_SIZE) -> None:
    """`model-0000k-of-0000n.safetensors` + `model.safetensors.index.json`, split the way HF splits:
    greedily in state-dict order, a new shard whenever the next tensor would overflow this one."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, t in state.items():
        size = t.numel() * t.element_size()
        if shards[-1] and used + size > max_shard_size:
            shards.append({})
            used = 0
        shards[-1][name] = t
        used += size
    out.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in state.values())
    _dump_json(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, out / "model.safetensors.index.json"
    )


# --- the run ------------------------------------------------------------------------------------------


def _nominal_eval_timing(hp: Hparams) -> dict[str, float]:
    runtime = round(0.0125 + hp.n_val * 2e-5, 4)
    batches = hp.val_batches
    return {
        "eval_runtime": runtime,
        "eval_samples_per_second": round(hp.n_val / runtime, 3),
        "eval_steps_per_second": round(batches / runtime, 3),
    }


def hf_save_steps(save_steps: int, max_steps: int) -> list[int]:
    """Steps with a `checkpoint-N/`: every `save_steps`, and the last step (HF saves there)."""
    return sorted(set(range(save_steps, max_steps + 1, save_steps)) | {max_steps})


def write_hf_run(out: Path, data: Dataset, epochs: int, seed: int) -> Run:
    """`checkpoint-{N}/` folders as `Trainer` writes them; the final `model.safetensors` + `config.json`.

    Trainer semantics kept: loss logged as the mean since the last log, grad_norm before clipping at 1.0,
    learning_rate after the scheduler step, best_metric updated only when a save coincides with an eval.
    """
    hp = HPARAMS
    spe = hp.steps_per_epoch
    max_steps = epochs * spe
    save_steps, eval_steps = 2 * spe, spe
    checkpoints = hf_save_steps(save_steps, max_steps)
    args = training_args(hp, epochs, save_steps, eval_steps, seed)
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    run = Run(data, epochs, seed, schedule="linear", optimizer_name="adamw", clip=1.0, hp=hp)
    flos_per_step = 6.0 * sum(p.numel() for p in run.model.parameters()) * hp.batch_size  # HF's estimate
    log_history: list[dict[str, Any]] = []
    window: list[float] = []
    best: dict[str, Any] = {"best_metric": None, "best_model_checkpoint": None}

    def trainer_state(step: int) -> dict[str, Any]:
        return {
            **best,
            "epoch": step / spe,
            "eval_steps": eval_steps,
            "global_step": step,
            "is_hyper_param_search": False,
            "is_local_process_zero": True,
            "is_world_process_zero": True,
            "log_history": list(log_history),
            "logging_steps": LOGGING_STEPS,
            "max_steps": max_steps,
            "num_input_tokens_seen": 0,
            "num_train_epochs": epochs,
            "save_steps": save_steps,
            "stateful_callbacks": {
                "TrainerControl": {
                    "args": {
                        "should_epoch_stop": False,
                        "should_evaluate": False,
                        "should_log": False,
                        "should_save": True,
                        "should_training_stop": step >= max_steps,
                    },
                    "attributes": {},
                }
            },
            "total_flos": flos_per_step * step,
            "train_batch_size": hp.batch_size,
            "trial_name": None,
            "trial_params": None,
        }

    def on_step(run: Run, st: StepInfo) -> None:
        window.append(st.loss)
        if st.step % LOGGING_STEPS == 0:
            loss = round(sum(window) / len(window), 4)
            log_history.append(
                {
                    "epoch": st.step / spe,
                    "grad_norm": st.grad_norm,
                    "learning_rate": st.lr,
                    "loss": loss,
                    "step": st.step,
                }
            )
            window.clear()
        metrics = None
        if st.step % eval_steps == 0:
            val_loss, val_acc = run.evaluate()
            metrics = {"eval_accuracy": val_acc, "eval_loss": val_loss, **_nominal_eval_timing(hp)}
            log_history.append({"epoch": st.step / spe, **metrics, "step": st.step})
        if st.step not in checkpoints:
            return
        ckpt = out / f"checkpoint-{st.step}"
        if metrics and (best["best_metric"] is None or metrics["eval_loss"] < best["best_metric"]):
            best.update(best_metric=metrics["eval_loss"], best_model_checkpoint=f"{OUTPUT_DIR}/{ckpt.name}")
        save_pretrained(hf_state_dict(run), ckpt, hp)
        torch.save(run.optimizer.state_dict(), ckpt / "optimizer.pt")
        torch.save(run.scheduler.state_dict(), ckpt / "scheduler.pt")
        rng = {"python": py_rng.getstate(), "numpy": np_rng.get_state(), "cpu": torch.random.get_rng_state()}
        torch.save(rng, ckpt / "rng_state.pth")
        _dump_json(trainer_state(st.step), ckpt / "trainer_state.json")
        save_training_args(args, ckpt / "training_args.bin")
        py_rng.random()  # stand-ins for what data loading consumes between saves, so the states move on
        np_rng.random_sample()

    run.train(on_step=on_step)
    save_pretrained(hf_state_dict(run), out, hp)
    return run

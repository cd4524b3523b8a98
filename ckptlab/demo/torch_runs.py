"""The PyTorch-native runs: a plain training script, a Lightning-shaped run and a DCP run.

The Lightning files are exactly the dict Lightning 2.x's `Trainer.save_checkpoint` writes (without
installing Lightning): `ModelCheckpoint(dirpath="lightning-run/checkpoints", monitor="val_loss",
save_top_k=-1, save_last=True)` plus a `CSVLogger` in `lightning_logs/version_0/`. Paths stored inside
checkpoints are relative to the demo root, so the demo stays valid when its folder is moved.
"""

from __future__ import annotations

import copy
import csv
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .training import HPARAMS, STEP_LR, Dataset, EpochInfo, Run, StepInfo

LIGHTNING_VERSION = "2.4.0"
CKPT_CALLBACK_KEY = (
    "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
    "'train_time_interval': None}"
)
LOG_EVERY_N_STEPS = 10


def write_plain_pytorch(out: Path, data: Dataset, epochs: int, seed: int) -> Run:
    """`checkpoint_epoch_{e}.pth` each epoch, `best.pt` (lowest val_loss), `exports/model_legacy.pt`."""
    out.mkdir(parents=True)
    best: dict[str, Any] = {}

    def on_epoch(run: Run, ep: EpochInfo) -> None:
        ckpt = {
            "epoch": ep.epoch,
            "model_state_dict": run.model.state_dict(),
            "optimizer_state_dict": run.optimizer.state_dict(),
            "scheduler_state_dict": run.scheduler.state_dict(),
            "loss": ep.train_loss,
            "val_loss": ep.val_loss,
            "val_acc": ep.val_acc,
            "rng_state": torch.get_rng_state(),
        }
        torch.save(ckpt, out / f"checkpoint_epoch_{ep.epoch}.pth")
        if not best or ep.val_loss < best["val_loss"]:
            best.clear()
            best.update(copy.deepcopy(ckpt))  # state_dict() aliases the live parameters

    run = Run(data, epochs, seed, hp=replace(HPARAMS, lr=2e-3))
    run.train(on_epoch=on_epoch)
    torch.save(best, out / "best.pt")
    (out / "exports").mkdir()
    torch.save(
        run.model.state_dict(), out / "exports" / "model_legacy.pt", _use_new_zipfile_serialization=False
    )
    return run


def _progress(total: int, current: int, *, started: bool = True, processed: bool = True) -> dict[str, int]:
    d = {"ready": total, "completed": total}
    if started:
        d["started"] = total
    if processed:
        d["processed"] = total
    return {"total": d, "current": {k: current for k in d}}  # type: ignore[dict-item]


def _loops(epoch: int, step: int, steps_per_epoch: int, val_batches: int) -> dict[str, Any]:
    """Lightning 2.x `fit_loop` progress as saved at validation end of `epoch` (0-based)."""
    batch = _progress(step, steps_per_epoch)
    batch["is_last_batch"] = True
    val = _progress(val_batches, val_batches)
    val["is_last_batch"] = True
    epoch_progress = _progress(epoch + 1, epoch + 1)
    epoch_progress["total"]["completed"] = epoch_progress["current"]["completed"] = epoch
    idle = _progress(0, 0)
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": step},
            "epoch_loop.batch_progress": batch,
            "epoch_loop.scheduler_progress": _progress(epoch, 0, started=False, processed=False),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {
                "optimizer": {
                    "step": _progress(step, steps_per_epoch, started=False, processed=False),
                    "zero_grad": _progress(step, steps_per_epoch, processed=False),
                }
            },
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": _progress(
                0, 0, started=False, processed=False
            ),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": val,
            "epoch_progress": epoch_progress,
        },
        "validate_loop": {"state_dict": {}, "batch_progress": idle},
        "test_loop": {"state_dict": {}, "batch_progress": idle},
        "predict_loop": {"state_dict": {}, "batch_progress": _progress(0, 0)},
    }


class _ModelCheckpoint:
    """The bookkeeping of Lightning's ModelCheckpoint with save_top_k=-1, mode='min', save_last=True."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath
        self.best_k_models: dict[str, torch.Tensor] = {}
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.current_score: torch.Tensor | None = None
        self.kth_best_model_path = ""
        self.kth_value = torch.tensor(float("inf"))
        self.last_model_path = ""

    def update_topk(self, path: str, score: float) -> None:
        self.current_score = torch.tensor(score)
        self.best_k_models[path] = self.current_score
        self.kth_best_model_path = max(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
        self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = min(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
        self.best_model_score = self.best_k_models[self.best_model_path]

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": "val_loss",
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }


def _yaml(d: dict[str, Any]) -> str:
    """The few shapes `save_hyperparameters()` produces here: scalars and flat lists."""
    lines = []
    for k, v in sorted(d.items()):
        if isinstance(v, (list, tuple)):
            lines.append(f"{k}:")
            lines += [f"- {x}" for x in v]
        else:
            lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def write_lightning(out: Path, data: Dataset, epochs: int, seed: int) -> Run:
    """`checkpoints/epoch={e}-step={s}.ckpt`, `last.ckpt`, `lightning_logs/version_0/` (CSV log, hparams)."""
    ckpt_dir = out / "checkpoints"
    log_dir = out / "lightning_logs" / "version_0"
    ckpt_dir.mkdir(parents=True)
    log_dir.mkdir(parents=True)
    rel_dir = f"{out.name}/checkpoints"
    callback = _ModelCheckpoint(rel_dir)
    rows: list[dict[str, Any]] = []
    hp = HPARAMS
    hyper_parameters = {
        "lr": hp.lr,
        "hidden": list(hp.hidden),
        "batch_size": hp.batch_size,
        "in_features": hp.in_features,
        "num_classes": hp.num_classes,
        **STEP_LR,
    }
    val_batches = hp.val_batches

    def on_step(run: Run, st: StepInfo) -> None:
        # Lightning logs on_step metrics every log_every_n_steps, indexed by 0-based batches stepped
        if st.step % LOG_EVERY_N_STEPS == 0:
            rows.append({"epoch": st.epoch, "step": st.step - 1, "train_loss": st.loss})

    def save(run: Run, ep: EpochInfo, name: str) -> None:
        ckpt = {
            "epoch": ep.epoch,
            "global_step": ep.step,
            "pytorch-lightning_version": LIGHTNING_VERSION,
            "state_dict": {f"model.{k}": v for k, v in run.model.state_dict().items()},
            "loops": _loops(ep.epoch, ep.step, hp.steps_per_epoch, val_batches),
            "callbacks": {CKPT_CALLBACK_KEY: callback.state_dict()},
            "optimizer_states": [run.optimizer.state_dict()],
            "lr_schedulers": [run.scheduler.state_dict()],
            "hparams_name": "kwargs",
            "hyper_parameters": hyper_parameters,
        }
        torch.save(ckpt, ckpt_dir / name)

    def on_epoch(run: Run, ep: EpochInfo) -> None:
        rows.append({"epoch": ep.epoch, "step": ep.step - 1, "val_loss": ep.val_loss, "val_acc": ep.val_acc})
        name = f"epoch={ep.epoch}-step={ep.step}.ckpt"
        callback.update_topk(f"{rel_dir}/{name}", ep.val_loss)
        save(run, ep, name)
        callback.last_model_path = f"{rel_dir}/last.ckpt"
        save(run, ep, "last.ckpt")

    run = Run(data, epochs, seed)
    run.train(on_step, on_epoch)
    # CSVLogger sorts its columns and leaves blanks where a row did not log a metric
    with open(log_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    (log_dir / "hparams.yaml").write_text(_yaml(hyper_parameters))
    return run


def dcp_save_steps(epochs: int, steps_per_epoch: int) -> list[int]:
    """Global steps at which the DCP run saves: half way and at the end."""
    return sorted({max(1, epochs // 2) * steps_per_epoch, epochs * steps_per_epoch})


def write_dcp(out: Path, data: Dataset, epochs: int, seed: int) -> Run:
    """`step_{s}/` directories written by `torch.distributed.checkpoint.save` in a single process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.state_dict import get_state_dict

    class RelativeIdWriter(dcp.FileSystemWriter):
        """DCP records the checkpoint id in `.metadata`. Record the demo-relative path (as a user saving with
        checkpoint_id="dcp-run/step_N" from the demo root would) and a seed-derived save id, so the metadata
        neither leaks the temporary build path nor changes between builds."""

        def __init__(self, path: Path, recorded_id: str, save_id: str) -> None:
            super().__init__(path)
            self.recorded = StorageMeta(checkpoint_id=recorded_id, save_id=save_id)

        def storage_meta(self) -> StorageMeta:
            return self.recorded

    out.mkdir(parents=True)
    steps = dcp_save_steps(epochs, HPARAMS.steps_per_epoch)

    def on_epoch(run: Run, ep: EpochInfo) -> None:
        if ep.step not in steps:
            return
        model_sd, optim_sd = get_state_dict(run.model, run.optimizer)  # optimizer state keyed by FQN
        name = f"step_{ep.step}"
        writer = RelativeIdWriter(out / name, f"{out.name}/{name}", str(uuid.UUID(int=seed << 32 | ep.step)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*assuming the intent is to save in a single process")
            dcp.save({"model": model_sd, "optim": optim_sd, "step": ep.step}, storage_writer=writer)

    run = Run(data, epochs, seed, optimizer_name="adamw", schedule="constant")
    run.train(on_epoch=on_epoch)
    return run

"""The one real training loop every demo run uses: a small MLP classifier on a fixed synthetic dataset.

Each run owns its model, optimizer and scheduler and reports through two hooks, `on_step` after every
optimizer step and `on_epoch` after validation, so a writer saves whatever its framework would save at that
moment. Runs execute inside `torch.random.fork_rng` so the caller's global RNG is untouched, and on one
thread, because the reduction order of multi-threaded matmuls (and so the last bits of every number)
depends on the thread count: one seed must give the same files on every machine.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Hparams:
    """The demo model and data sizes: ~167K parameters, ~0.65 MiB of float32 weights per checkpoint."""

    in_features: int = 64
    hidden: tuple[int, ...] = (512, 256)
    num_classes: int = 10
    n_train: int = 2048
    n_val: int = 512
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)

    @property
    def val_batches(self) -> int:
        return math.ceil(self.n_val / self.eval_batch_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


HPARAMS = Hparams()
STEP_LR = {"step_size": 2, "gamma": 0.5}  # the StepLR schedule: halve the LR every two epochs


@dataclass(frozen=True)
class StepInfo:
    step: int  # global step after this optimizer step (1-based, as HF and Lightning count)
    epoch: int  # 0-based
    batch_idx: int
    loss: float
    grad_norm: float  # total L2 norm of the gradients before any clipping
    lr: float  # learning rate after this step's scheduler update


@dataclass(frozen=True)
class EpochInfo:
    epoch: int  # 0-based
    step: int  # global step at the end of the epoch
    train_loss: float  # mean training loss over the epoch
    val_loss: float
    val_acc: float


@dataclass(frozen=True)
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def make_dataset(seed: int, hp: Hparams = HPARAMS) -> Dataset:
    """A fixed classification task: labels from a random two-layer teacher plus noise, so it is learnable
    but not trivially (validation loss bottoms out before the last epoch, as in real runs)."""
    g = torch.Generator().manual_seed(seed)
    n = hp.n_train + hp.n_val
    x = torch.randn(n, hp.in_features, generator=g)
    w1 = torch.randn(hp.in_features, 32, generator=g) / math.sqrt(hp.in_features)
    w2 = torch.randn(32, hp.num_classes, generator=g) * 1.5
    logits = torch.tanh(x @ w1 * 2.0) @ w2 + 0.8 * torch.randn(n, hp.num_classes, generator=g)
    y = logits.argmax(dim=1)
    return Dataset(x[: hp.n_train], y[: hp.n_train], x[hp.n_train :], y[hp.n_train :])


def make_model(hp: Hparams = HPARAMS) -> nn.Sequential:
    """Linear-ReLU stack: state dict keys `0.weight`, `0.bias`, `2.weight`, ... like any nn.Sequential."""
    layers: list[nn.Module] = []
    width = hp.in_features
    for h in hp.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, hp.num_classes))
    return nn.Sequential(*layers)


def linear_warmup_decay(step: int, *, warmup: int, total: int) -> float:
    """The LR factor of HF's default `get_linear_schedule_with_warmup` (module level, so LambdaLR's
    state dict records it as a partial's empty `__dict__`, exactly as HF's checkpoints show)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


StepHook = Callable[["Run", StepInfo], None]
EpochHook = Callable[["Run", EpochInfo], None]


@dataclass
class Run:
    """One training run. `schedule`: 'step_lr' (StepLR per epoch), 'linear' (HF's warmup + linear decay per
    step), 'constant'. `optimizer`: 'adam' or 'adamw'. `clip`: max grad norm (HF clips at 1.0)."""

    data: Dataset
    epochs: int
    seed: int
    schedule: str = "step_lr"
    optimizer_name: str = "adam"
    eps: float = 1e-8
    clip: float | None = None
    hp: Hparams = HPARAMS
    model: nn.Sequential = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: Any = field(init=False)
    history: list[EpochInfo] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)  # called inside fork_rng by train(); see _isolated
        self.model = make_model(self.hp)
        opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.optimizer_name]
        self.optimizer = opt_cls(self.model.parameters(), lr=self.hp.lr, eps=self.eps)
        total = self.epochs * self.hp.steps_per_epoch
        if self.schedule == "step_lr":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, **STEP_LR)
        elif self.schedule == "linear":
            fn = functools.partial(linear_warmup_decay, warmup=max(1, total // 10), total=total)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, fn)
        elif self.schedule == "constant":
            self.scheduler = None
        else:
            raise ValueError(f"unknown schedule {self.schedule!r}: use step_lr, linear or constant")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the validation split."""
        self.model.eval()
        total_loss, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, self.hp.n_val, self.hp.eval_batch_size):
                x, y = (
                    self.data.x_val[i : i + self.hp.eval_batch_size],
                    self.data.y_val[i : i + self.hp.eval_batch_size],
                )
                out = self.model(x)
                total_loss += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(dim=1) == y).sum())
        self.model.train()
        return total_loss / self.hp.n_val, correct / self.hp.n_val

    def train(self, on_step: StepHook | None = None, on_epoch: EpochHook | None = None) -> list[EpochInfo]:
        """The classic loop: shuffle, forward, backward, step; validate and step the epoch scheduler."""
        step = 0
        bs = self.hp.batch_size
        for epoch in range(self.epochs):
            perm = torch.randperm(self.hp.n_train)
            losses = []
            for b, i in enumerate(range(0, self.hp.n_train, bs)):
                idx = perm[i : i + bs]
                loss = F.cross_entropy(self.model(self.data.x_train[idx]), self.data.y_train[idx])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.clip if self.clip else math.inf)
                self.optimizer.step()
                if self.schedule == "linear":
                    self.scheduler.step()
                step += 1
                losses.append(loss.item())
                if on_step:
                    on_step(self, StepInfo(step, epoch, b, losses[-1], float(norm), self.lr))
            val_loss, val_acc = self.evaluate()
            if self.schedule == "step_lr":
                self.scheduler.step()
            info = EpochInfo(epoch, step, sum(losses) / len(losses), val_loss, val_acc)
            self.history.append(info)
            if on_epoch:
                on_epoch(self, info)
        return self.history


@contextmanager
def isolated_torch() -> Iterator[None]:
    """One thread and a forked CPU RNG for the duration: deterministic numbers, caller's state restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)

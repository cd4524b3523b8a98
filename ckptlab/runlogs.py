"""Run logs next to checkpoints: HF Trainer's `trainer_state.json` and Lightning CSVLogger's `metrics.csv`.

Pure parsing of already-read documents (no file system, no torch), tolerant of missing and odd fields; the HF
directory reader takes step, epoch and the last metrics from `parse_trainer_state`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "LogRow",
    "TrainerState",
    "latest_metrics",
    "log_length",
    "parse_lightning_metrics_csv",
    "parse_trainer_state",
]


def _number(v: Any) -> float | None:
    """JSON numbers only (not bools, not strings, not integers too big for a float)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        return float(v)
    except OverflowError:  # a 400-digit integer: JSON allows it
        return None


def whole_number(value: float) -> int | None:
    """int(value) when value is a finite whole number (3.0 -> 3), else None."""
    return int(value) if math.isfinite(value) and value.is_integer() else None


def _integer(v: Any) -> int | None:
    f = _number(v)
    return whole_number(f) if f is not None else None


@dataclass(frozen=True)
class LogRow:
    """One `log_history` entry of HF's trainer_state.json.

    `kind`: `eval` (has `eval_*` keys), `train` (`loss` / `learning_rate` / `grad_norm`), `summary` (the
    end-of-training row: `train_runtime`, `train_loss`, ...) or `other`. `metrics` holds every numeric
    value but `step` and `epoch` (read-only mapping, left out of the hash like `NameInfo.metrics`).
    """

    step: int | None
    epoch: float | None
    kind: str
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class TrainerState:
    """The parts of HF's `trainer_state.json` ckptlab uses. Missing or ill-typed fields are None."""

    global_step: int | None = None
    epoch: float | None = None
    max_steps: int | None = None
    num_train_epochs: float | None = None
    save_steps: int | None = None
    eval_steps: int | None = None
    logging_steps: int | None = None
    best_metric: float | None = None
    best_model_checkpoint: str | None = None
    best_global_step: int | None = None
    log_history: tuple[LogRow, ...] = ()

    @property
    def train_rows(self) -> tuple[LogRow, ...]:
        return tuple(r for r in self.log_history if r.kind == "train")

    @property
    def eval_rows(self) -> tuple[LogRow, ...]:
        return tuple(r for r in self.log_history if r.kind == "eval")

    def series(self, metric: str) -> tuple[tuple[int, float], ...]:
        """(step, value) for every row that logged `metric` with a step, in log order."""
        return tuple(
            (r.step, r.metrics[metric])
            for r in self.log_history
            if r.step is not None and metric in r.metrics
        )


_TRAIN_KEYS = ("loss", "learning_rate", "grad_norm")
_SUMMARY_KEYS = ("train_runtime", "train_loss")


def _row_kind(keys: Iterable[str]) -> str:
    keys = set(keys)
    if any(k.startswith("eval_") for k in keys):
        return "eval"
    if keys.intersection(_TRAIN_KEYS):
        return "train"
    if keys.intersection(_SUMMARY_KEYS):
        return "summary"
    return "other"


def parse_trainer_state(doc: Any, history: bool = True) -> TrainerState:
    """A `TrainerState` from a parsed `trainer_state.json`; tolerant: anything odd becomes None / skipped.
    `history=False` leaves `log_history` empty (a long run logs tens of thousands of rows).

    >>> s = parse_trainer_state({"global_step": 64, "epoch": 2.0, "best_metric": 0.41,
    ...     "best_model_checkpoint": "out/checkpoint-64", "log_history": [
    ...         {"epoch": 1.0, "grad_norm": 1.5, "learning_rate": 0.001, "loss": 0.9, "step": 32},
    ...         {"epoch": 2.0, "eval_loss": 0.41, "eval_runtime": 0.1, "step": 64},
    ...         "junk"]})
    >>> s.global_step, s.epoch, s.best_metric, s.best_model_checkpoint
    (64, 2.0, 0.41, 'out/checkpoint-64')
    >>> for r in s.log_history:
    ...     print(r.step, r.kind, dict(r.metrics))
    32 train {'grad_norm': 1.5, 'learning_rate': 0.001, 'loss': 0.9}
    64 eval {'eval_loss': 0.41, 'eval_runtime': 0.1}
    >>> s.series("eval_loss")
    ((64, 0.41),)
    """
    if not isinstance(doc, Mapping):
        return TrainerState()
    rows = []
    log = doc.get("log_history") if history else None
    for entry in log if isinstance(log, list) else ():
        if not isinstance(entry, Mapping):
            continue
        metrics = _row_numbers(entry)
        rows.append(
            LogRow(
                _integer(entry.get("step")),
                _number(entry.get("epoch")),
                _row_kind(metrics),
                MappingProxyType(metrics),
            )
        )
    best_ckpt = doc.get("best_model_checkpoint")
    return TrainerState(
        global_step=_integer(doc.get("global_step")),
        epoch=_number(doc.get("epoch")),
        max_steps=_integer(doc.get("max_steps")),
        num_train_epochs=_number(doc.get("num_train_epochs")),
        save_steps=_integer(doc.get("save_steps")),
        eval_steps=_integer(doc.get("eval_steps")),
        logging_steps=_integer(doc.get("logging_steps")),
        best_metric=_number(doc.get("best_metric")),
        best_model_checkpoint=best_ckpt if isinstance(best_ckpt, str) else None,
        best_global_step=_integer(doc.get("best_global_step")),
        log_history=tuple(rows),
    )


_THROUGHPUT = ("_runtime", "_per_second")  # timings of a row, not metrics of the model


def latest_metrics(doc: Any) -> dict[str, float]:
    """The latest value of every metric the train and eval rows of `log_history` logged (as `LogRow`s
    would give them, throughput timings left out), in the order they first appear, without building rows:
    every checkpoint of a run holds the whole log so far, tens of thousands of rows in a long run.

    >>> latest_metrics({"log_history": [{"loss": 0.9, "grad_norm": 1.0, "step": 1},
    ...     {"loss": 0.7, "grad_norm": "nan?", "step": 2}, {"eval_loss": 0.8, "eval_runtime": 2.5, "step": 2},
    ...     {"train_runtime": 9.0, "train_loss": 0.8, "step": 2}]})
    {'loss': 0.7, 'grad_norm': 1.0, 'eval_loss': 0.8}
    """
    log = doc.get("log_history") if isinstance(doc, Mapping) else None
    if not isinstance(log, list):
        return {}
    # from the end: a key's first value found is its latest. Rows repeat a few key sets (train, eval); once
    # a key set gave every one of its metrics, its older rows add nothing and are skipped unread
    latest: dict[str, float] = {}
    done: set[tuple[Any, ...]] = set()
    for entry in reversed(log):
        found = _row_metrics(entry, done)
        if found is not None:
            for k, v in found.items():
                if k not in latest:
                    latest[k] = v
    # in the order a forward pass would have put them (where each first had a number), from the start,
    # stopping once every key is placed: usually within the first few rows
    order: dict[str, float] = {}
    done.clear()
    for entry in log:
        if len(order) == len(latest):
            break
        found = _row_metrics(entry, done)
        if found is not None:
            for k in found:
                if k not in order:
                    order[k] = latest[k]
    return order


def _row_numbers(entry: Mapping[Any, Any]) -> dict[str, float]:
    """Every number a log row holds, but its step and epoch."""
    out = {}
    for k, v in entry.items():
        value = _number(v)
        if value is not None and isinstance(k, str) and k != "step" and k != "epoch":
            out[k] = value
    return out


def log_length(doc: Any) -> int:
    """How many rows (JSON objects) the `log_history` of a parsed `trainer_state.json` holds."""
    log = doc.get("log_history") if isinstance(doc, Mapping) else None
    return sum(isinstance(e, Mapping) for e in log) if isinstance(log, list) else 0


def _row_metrics(entry: Any, done: set[tuple[Any, ...]]) -> dict[str, float] | None:
    """A train/eval row's metrics (numbers but step and epoch, no throughput timings), None for any other
    row and for a row whose key set is in `done`; a key set whose every value was a number joins `done`."""
    if not isinstance(entry, Mapping):
        return None
    keys = tuple(entry)
    if keys in done:
        return None
    numbers = _row_numbers(entry)
    if len(numbers) == len(keys) - ("step" in entry) - ("epoch" in entry):  # nothing skipped as odd
        done.add(keys)
    if _row_kind(numbers) not in ("train", "eval"):
        return None
    return {k: v for k, v in numbers.items() if not k.endswith(_THROUGHPUT)}


_CSV_INT_COLUMNS = ("epoch", "step")


def parse_lightning_metrics_csv(text: str) -> list[dict[str, float | int]]:
    """Rows of Lightning CSVLogger's `metrics.csv`, numbers only: blank and non-numeric cells are dropped,
    `epoch` and `step` become ints, rows left empty are skipped, a malformed line ends the read (the rows
    before it are kept). `step` is the column as written: Lightning counts batches stepped from 0, so a
    row logged after N optimizer steps usually says N - 1 (the demo's lightning-run writes it that way).

    >>> parse_lightning_metrics_csv("epoch,step,train_loss,val_loss\\n0,9,0.5,\\n0,31,,0.45\\n")
    [{'epoch': 0, 'step': 9, 'train_loss': 0.5}, {'epoch': 0, 'step': 31, 'val_loss': 0.45}]
    """
    reader = csv.reader(io.StringIO(text))
    rows: list[dict[str, float | int]] = []
    try:
        header = [h.strip() for h in next(reader, [])]
        for cells in reader:
            row: dict[str, float | int] = {}
            for key, cell in zip(header, cells, strict=False):
                value = _csv_number(key, cell.strip())
                if key and value is not None and key not in row:
                    row[key] = value
            if row:
                rows.append(row)
    except csv.Error:  # a malformed line (a NUL byte, an unterminated quote): keep the rows before it
        pass
    return rows


def _csv_number(key: str, cell: str) -> float | int | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return whole_number(value) if key in _CSV_INT_COLUMNS else value

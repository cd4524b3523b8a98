"""Where a checkpoint stands in its run: the stage it is at (`stage`: what its content says first, then
its name) and how a run's checkpoints are ordered.

How a run's checkpoints are ordered (`order_key`; the scan and the index's listings use `in_run_order`):
by step, then epoch, then the name compared numerically (`natural_key`), unknown steps and epochs last;
never as plain strings (`checkpoint-99` < `checkpoint-100`), and a Lightning `-v1` duplicate right after the
name it duplicates (`last.ckpt` < `last-v1.ckpt`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol, TypeVar

from .names import CHECKPOINT_JOIN_CHAR, parse_name, split_extension, split_version

_T = TypeVar("_T")


class RunMember(Protocol):
    """What `in_run_order` reads of an entry (an `IndexEntry` has these)."""

    @property
    def path(self) -> str: ...
    @property
    def run(self) -> str: ...
    @property
    def step(self) -> int | None: ...
    @property
    def epoch(self) -> int | float | None: ...


_M = TypeVar("_M", bound=RunMember)

_DIGIT_RUNS = re.compile(r"(\d+)", re.ASCII)


def natural_key(s: str) -> tuple[tuple[tuple[int, int | str], ...], int, str]:
    """A sort key that compares digit runs as numbers and text case-insensitively; a total order.

    >>> sorted(["checkpoint-100", "checkpoint-99", "Checkpoint-5"], key=natural_key)
    ['Checkpoint-5', 'checkpoint-99', 'checkpoint-100']
    >>> sorted(["epoch=10", "epoch=9", "epoch=09"], key=natural_key)
    ['epoch=09', 'epoch=9', 'epoch=10']

    Numbers sort before text at the same position, ties (`09` vs `9`, case) fall back to the string
    itself, so any two strings compare. Decimals compare digit run by digit run (`0.12` > `0.9`).

    Lightning's versioned duplicates come right after the name they duplicate, oldest first:

    >>> names = ["last-v1.ckpt", "last.ckpt", "epoch=1-v2.ckpt", "epoch=1-v1.ckpt", "epoch=1.ckpt"]
    >>> sorted(names, key=natural_key)
    ['epoch=1.ckpt', 'epoch=1-v1.ckpt', 'epoch=1-v2.ckpt', 'last.ckpt', 'last-v1.ckpt']
    """
    base, version = _unversioned(s)
    parts = _DIGIT_RUNS.split(base)
    key = tuple((0, int(p)) if i % 2 else (1, p.casefold()) for i, p in enumerate(parts) if p)
    return key, version, s


def _unversioned(s: str) -> tuple[str, int]:
    """(`s` without the basename's Lightning `-vN` suffix, N), or (s, 0).

    Lightning writes `X-v1.ckpt` when `X.ckpt` exists, so it is the newer save; compared as text it would
    come first (`-` < `.`). Keyed as `X.ckpt` with version 1 it comes right after `X.ckpt` and before any
    other name, and the rule (what counts as a version) is `split_version`'s, the one `parse_name` uses.
    """
    if CHECKPOINT_JOIN_CHAR + "v" not in s:  # most names: no split, no regex
        return s, 0
    cut = max(s.rfind("/"), s.rfind(os.sep)) + 1  # `sort_checkpoints` passes whole paths
    stem, _ext = split_extension(s[cut:])
    base, version = split_version(stem)
    if version is None:
        return s, 0
    # the extension as written (`split_extension` returns it lower-cased, or "tf" for TF's suffixes)
    return s[:cut] + base + s[cut + len(stem) :], version


def order_key(step: int | None, epoch: int | None, name: str) -> tuple[Any, ...]:
    """How a run's checkpoints are ordered: by step, then epoch, then `natural_key(name)`; None last.

    >>> sorted([(None, None, "last.ckpt"), (300, 2, "b"), (99, 0, "a")], key=lambda t: order_key(*t))
    [(99, 0, 'a'), (300, 2, 'b'), (None, None, 'last.ckpt')]
    """
    return (step is None, step or 0, epoch is None, epoch or 0, natural_key(name))


def sort_checkpoints(
    items: Iterable[_T], key: Callable[[_T], tuple[int | None, int | None, str]] | None = None
) -> list[_T]:
    """`items` in checkpoint order (see `order_key`). `key` gives each item's (step, epoch, name); without
    it the items are names or paths and step/epoch come from `parse_name` of the basename.

    Pass `key` when the step/epoch read from the file's content is known: it beats the name's.

    >>> sort_checkpoints(["checkpoint-1000", "checkpoint-200", "checkpoint-30"])
    ['checkpoint-30', 'checkpoint-200', 'checkpoint-1000']
    >>> sort_checkpoints(["last.ckpt", "epoch=10-step=110.ckpt", "epoch=9-step=100.ckpt"])
    ['epoch=9-step=100.ckpt', 'epoch=10-step=110.ckpt', 'last.ckpt']
    """

    def by_name(item: _T) -> tuple[int | None, int | None, str]:
        text = os.fspath(item)  # type: ignore[call-overload]
        info = parse_name(os.path.basename(text.rstrip("/\\")))
        return info.step, info.epoch, text

    get = key or by_name
    return sorted(items, key=lambda item: order_key(*get(item)))


def in_run_order(entries: Iterable[_M]) -> list[_M]:
    """`entries` by run, then `order_key(step, int(epoch), basename)`: the one order of an index's listings
    (the scan's result, `ckptlab ls`, the app). Stable: entries that tie keep their order.

    >>> from types import SimpleNamespace as E
    >>> es = [E(path=f"/r/model_v{v}", run="/r", step=None, epoch=None) for v in (10, 9)]
    >>> [e.path for e in in_run_order(es)]
    ['/r/model_v9', '/r/model_v10']

    The name's `natural_key` (the costly part) is computed only inside groups that tie on (run, step,
    epoch): rarely more than a few, since it runs over every entry of a scan.
    """

    def head(e: _M) -> tuple[Any, ...]:
        epoch = int(e.epoch) if e.epoch is not None else None
        return (e.run, e.step is None, e.step or 0, epoch is None, epoch or 0)

    keyed = sorted(((head(e), e) for e in entries), key=itemgetter(0))
    out: list[_M] = []
    i, n = 0, len(keyed)
    while i < n:
        j = i + 1
        while j < n and keyed[j][0] == keyed[i][0]:
            j += 1
        if j - i == 1:
            out.append(keyed[i][1])
        else:  # a stable sort of the tie, as one sort over the whole key would give
            out.extend(
                sorted((e for _, e in keyed[i:j]), key=lambda e: natural_key(os.path.basename(e.path)))
            )
        i = j
    return out


@dataclass(frozen=True)
class Stage:
    """A checkpoint's training stage as ckptlab shows it: what its content says first, then its name.
    `from_name` lists the fields (`step`, `epoch`, metric names) that only the name gave."""

    step: int | None
    epoch: int | float | None
    metrics: Mapping[str, float]
    from_name: frozenset[str] = frozenset()

    def note(self, field: str) -> str:
        """' (from the name)' after a value only the name gave, else ''.

        >>> Stage(None, 3, {}, frozenset({"epoch"})).note("epoch")
        ' (from the name)'
        """
        return " (from the name)" if field in self.from_name else ""


def stage(
    path: str | os.PathLike[str], step: int | None, epoch: int | float | None, metrics: Mapping[str, float]
) -> Stage:
    """Content (`step`, `epoch`, `metrics` read from the checkpoint) first, then `parse_name` of the path's
    basename: the rule the index applies, so the Inspect page and the index table agree.

    >>> s = stage("run/weights.03-1.11.h5", None, None, {})
    >>> s.epoch, dict(s.metrics), sorted(s.from_name)
    (3, {'val_loss': 1.11}, ['epoch', 'val_loss'])
    >>> stage("checkpoint-300", 299, None, {"loss": 0.5}).step  # a step saved in the file beats the name's
    299
    """
    name = parse_name(os.path.basename(os.fspath(path).rstrip("/\\")))
    found: set[str] = set()
    if step is None and name.step is not None:
        step = name.step
        found.add("step")
    if epoch is None and name.epoch is not None:
        epoch = name.epoch
        found.add("epoch")
    merged = dict(name.metrics)
    found.update(k for k in merged if k not in metrics)
    merged.update(metrics)
    return Stage(step, epoch, merged, frozenset(found))

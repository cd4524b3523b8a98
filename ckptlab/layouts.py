"""Checkpoint naming and run layout: what a name says (step, epoch, metrics), what is debris, which run.

Pure functions over names, paths and already-parsed documents: nothing here touches the file system or
reads the clock (callers pass `size`, `mtime` and `now` in), and nothing imports torch.

Names parsed (`parse_name`), by the toolchain that writes them:

    Lightning ModelCheckpoint   epoch=2-step=300.ckpt, epoch=2-step=300-val_loss=0.12.ckpt, last.ckpt,
                                last-v1.ckpt, epoch=2-step=300-v1.ckpt, mnist-epoch=02-val_acc=0.95.ckpt
    HF Trainer                  checkpoint-300/
    Keras ModelCheckpoint       weights.02-0.60.h5 (the documented `weights.{epoch:02d}-{val_loss:.2f}`)
    DeepSpeed / Megatron / DCP  global_step500/, iter_0001000/, step_500/
    Orbax / TF                  1000/ (a bare step directory), ckpt-1000 (CheckpointManager), model.ckpt-1000
    plain scripts               checkpoint_epoch_4.pth, epoch_3_step_1200.pt, model_epoch=3.pt, ep3.pt

How a run's checkpoints are ordered (the scanner uses `order_key`): by step, then epoch, then
the name compared numerically (`natural_key`), unknown steps and epochs last; never as plain strings
(`checkpoint-99` < `checkpoint-100`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from .runlogs import whole_number

__all__ = [
    "CHECKPOINT_EQUALS_CHAR",
    "CHECKPOINT_JOIN_CHAR",
    "CHECKPOINT_NAME_LAST",
    "CHECKPOINT_SUFFIXES",
    "FILE_EXTENSION",
    "HF_CHECKPOINT_PREFIX",
    "MULTIFILE_PART_NAMES",
    "ORBAX_TMP_DIR_SUFFIX",
    "SKIP_SUFFIXES",
    "TEMPLATES",
    "NameInfo",
    "debris_reason",
    "looks_like_checkpoint_name",
    "natural_key",
    "order_key",
    "parse_name",
    "run_dir",
    "run_dir_of_parent",
    "sort_checkpoints",
]

# Lightning's ModelCheckpoint class attributes, under the same names.
CHECKPOINT_JOIN_CHAR = "-"
CHECKPOINT_EQUALS_CHAR = "="
CHECKPOINT_NAME_LAST = "last"
FILE_EXTENSION = ".ckpt"
HF_CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR
ORBAX_TMP_DIR_SUFFIX = ".orbax-checkpoint-tmp-"  # orbax: "<step>.orbax-checkpoint-tmp-<n>" until renamed

# Name endings (lower-cased `str.endswith`) of single-file checkpoints ckptlab reads. `.tar` is in: the
# PyTorch "saving a general checkpoint" tutorial recommends it for torch.save files (`model_best.pth.tar`
# is the ImageNet example's name); a real tar archive is told apart by its magic bytes.
CHECKPOINT_SUFFIXES = (
    ".safetensors",
    ".pt",
    ".pth",
    ".bin",
    FILE_EXTENSION,
    ".h5",
    ".hdf5",
    ".keras",
    ".pkl",
    ".pickle",
    ".tar",
)
# Files that are part of a multi-file checkpoint although their suffix says otherwise: the scanner must
# not pre-filter these away. Matched as exact names, or as endings when they start with "*".
MULTIFILE_PART_NAMES = (".metadata", "*.distcp", "*.index.json", "trainer_state.json")
# Endings that are never a checkpoint: configs, text, code, logs, tables, images, archives of other kinds.
SKIP_SUFFIXES = (
    *(".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".txt", ".md", ".rst", ".log"),
    *(".csv", ".tsv", ".parquet", ".arrow", ".py", ".pyc", ".ipynb", ".sh", ".html", ".pdf"),
    *(".png", ".jpg", ".jpeg", ".gif", ".bmp", ".svg", ".webp", ".mp4", ".wav", ".lock"),
    *(".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar"),
)
_SKIP_PREFIXES = ("events.out.tfevents.",)  # TensorBoard logs: large, common in Lightning runs
_SKIP_NAMES = (".ds_store", ".gitignore", ".gitattributes", "license", "readme")

# `NameInfo.template` values.
TEMPLATES = (
    "lightning",
    "hf",
    "keras",
    "numeric",
    "ckpt",
    "global_step",
    "step",
    "iter",
    "epoch",
    "last",
    "best",
)

_T = TypeVar("_T")

# ------------------------------------------------------------------------------------------------ names

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)"
# key=value parts of a Lightning name; a part ends at the join char or the end of the name. Keys may hold
# `.`, `/` and `@` (metric names are used verbatim); values may be negative, scientific, nan or inf.
_LIGHTNING_PART = re.compile(
    rf"(?:^|{CHECKPOINT_JOIN_CHAR})(?P<key>[A-Za-z_][\w./@]*){CHECKPOINT_EQUALS_CHAR}(?P<val>{_NUM})"
    rf"(?={CHECKPOINT_JOIN_CHAR}|$)",
    re.IGNORECASE,
)
_VERSION = re.compile(rf"^(?P<rest>.+){CHECKPOINT_JOIN_CHAR}v(?P<ver>\d+)$")
_HF = re.compile(rf"^{HF_CHECKPOINT_PREFIX}-(\d+)$")
_TF_CKPT = re.compile(r"^(?:[\w.-]*\.)?ckpt-(\d+)$")  # CheckpointManager `ckpt-N`, TF1 Saver `model.ckpt-N`
_NUMERIC = re.compile(r"^\d+$")
# Keras `{name}.{epoch:02d}` with an optional `-{value}`: the value's metric name is not in the name.
_KERAS = re.compile(rf"^[A-Za-z_][\w-]*\.(?P<epoch>\d+)(?:-(?P<val>{_NUM}))?$", re.IGNORECASE)
# A keyword directly followed by digits, both at token boundaries (`_`, `-`, `.` or the ends), so `ep3`
# matches but `deep3`, `rep3` and `ep3x` do not. `global_step` is tried before `step` at each position.
_KEYWORD = re.compile(
    r"(?<![a-z0-9])(?P<kw>global[_-]?step|step|iter(?:ation)?|epoch|ep)[_-]?(?P<n>\d+)(?![a-z0-9])",
    re.IGNORECASE,
)
# Extensions whose stem is parsed; compound ones first. TF's `.index` / `.data-*-of-*` count as no file
# extension (a TF checkpoint is a prefix naming several files), so `ckpt-1000.index` parses like `ckpt-1000`.
_STRIP = (
    ".weights.h5",
    ".safetensors.index.json",
    ".bin.index.json",
    ".pt.index.json",
    ".pth.tar",
    ".pt.tar",
    *CHECKPOINT_SUFFIXES,
    ".distcp",
)
_TF_SUFFIX = re.compile(r"\.(?:index|data-\d+-of-\d+|meta)$", re.IGNORECASE)
_KERAS_SUFFIXES = (".h5", ".hdf5", ".keras", ".weights.h5")
# One shared empty mapping: a scan parses thousands of names, most of which carry no metrics.
_NO_METRICS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class NameInfo:
    """What a checkpoint's name says. All None / empty when it says nothing.

    `metrics` is a read-only mapping (`types.MappingProxyType`) in the order the name lists them, left out
    of the hash so the dataclass stays hashable; NaN values are kept as parsed (so two infos holding NaN
    compare unequal, as NaN does). `epoch` is the number as written: Lightning's is 0-based, Keras's
    1-based. `template` is which pattern matched, one of `TEMPLATES`.
    """

    step: int | None = None
    epoch: int | None = None
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    is_last: bool = False
    version: int | None = None
    template: str | None = None


def _split_extension(name: str) -> tuple[str, str]:
    """(stem, lower-cased extension) for extensions `parse_name` knows; (name, '') otherwise."""
    low = name.lower()
    if low.endswith(_STRIP):  # one C-level test first: most names have no known extension or end in one
        for suffix in _STRIP:
            if low.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)], name[-len(suffix) :].lower()
    m = _TF_SUFFIX.search(name) if "." in name else None
    if m and m.start() > 0:
        return name[: m.start()], "tf"
    return name, ""


def parse_name(name: str) -> NameInfo:
    """Step, epoch, metrics, last/version flags from a checkpoint's file or directory name (a basename).

    Lightning (`CHECKPOINT_JOIN_CHAR`-separated `key=value` parts, a `-vN` version suffix, `last`):

    >>> info = parse_name("epoch=2-step=300-val_loss=0.12.ckpt")
    >>> info.epoch, info.step, dict(info.metrics), info.template
    (2, 300, {'val_loss': 0.12}, 'lightning')
    >>> parse_name("epoch=2-step=300-v1.ckpt").version
    1
    >>> info = parse_name("last-v1.ckpt")
    >>> info.is_last, info.version, info.template
    (True, 1, 'last')
    >>> dict(parse_name("epoch=0-val_loss=-1.5e-03.ckpt").metrics)
    {'val_loss': -0.0015}

    HF Trainer, DeepSpeed, Megatron, Orbax and TF step directories:

    >>> names = ("checkpoint-300", "global_step500", "iter_0001000", "1000", "ckpt-1000")
    >>> [parse_name(n).step for n in names]
    [300, 500, 1000, 1000, 1000]

    Keras `weights.{epoch:02d}-{val_loss:.2f}.h5` (the value is taken to be `val_loss`, the name Keras
    documents and ModelCheckpoint's default monitor; the epoch is Keras's 1-based number as written):

    >>> info = parse_name("weights.02-0.60.h5")
    >>> info.epoch, dict(info.metrics), info.template
    (2, {'val_loss': 0.6}, 'keras')

    Plain scripts: a keyword (`epoch`, `ep`, `step`, `global_step`, `iter`) directly followed by digits.

    >>> info = parse_name("epoch_3_step_1200.pt")
    >>> info.epoch, info.step, info.template
    (3, 1200, 'step')
    >>> parse_name("checkpoint_4.pth")  # a bare number: epoch or step? say nothing
    NameInfo(step=None, epoch=None, metrics=mappingproxy({}), is_last=False, version=None, template=None)

    Rules worth knowing:
    - `tmp-checkpoint-300` is not HF's `checkpoint-300` (it is debris, see `debris_reason`): no step.
    - Bare numbers are only trusted where a toolchain defines them as steps and there is no file extension:
      `checkpoint-300` and `1000` (directories) parse, `checkpoint-300.pt` and `1000.pt` do not.
    - A `-vN` suffix is Lightning's version only after a Lightning-shaped name (`key=value` parts or
      `last`): `model-v2.safetensors` and `anything-v3.ckpt` (a Stable Diffusion release) have no version.
    - Keras names need a Keras suffix (`.h5`, `.hdf5`, `.keras`, `.weights.h5`): `qwen2.5/` is no epoch.
    - A Lightning key that is `epoch`/`step` or ends in `_epoch`/`_step` (`model_epoch=3`, from a
      `model_{epoch}` template; `global_step=300`) is the epoch/step when its value is an integer; other
      keys are metrics, verbatim (a `/` in a Lightning metric name makes Lightning write a subfolder, so
      pass the path relative to `checkpoints/` to recover `val/loss=...`).
    - `last`, `last-...`, `...-last` and `..._last` are the last checkpoint (Lightning, NeMo, fairseq);
      `best`, `best_model` and `..._best` (YOLO, fairseq, the ImageNet example) only set template `best`.
    - When several templates apply the most specific wins, in `TEMPLATES` order; keyword matches fill in
      the step/epoch other templates left open (`step_100-val_loss=0.5` -> step 100, template lightning).
    """
    name = name.rstrip("/")
    stem, ext = _split_extension(name)
    step: int | None = None
    epoch: int | None = None
    metrics: dict[str, float] = {}
    template: str | None = None
    version: int | None = None

    # the substring tests skip regexes that cannot match (a scan parses every checkpoint's name)
    vm = _VERSION.match(stem) if CHECKPOINT_JOIN_CHAR + "v" in stem else None
    if vm:
        rest = vm["rest"]
        if _LIGHTNING_PART.search(rest) or _is_last(rest):
            stem, version = rest, int(vm["ver"])

    for m in _LIGHTNING_PART.finditer(stem) if CHECKPOINT_EQUALS_CHAR in stem else ():
        key, value = m["key"], float(m["val"])
        number, role = whole_number(value), key.lower().rsplit("_", 1)[-1]
        if role == "epoch" and number is not None and epoch is None:
            epoch = number
        elif role == "step" and number is not None and step is None:
            step = number
        else:
            metrics.setdefault(key, value)
        template = "lightning"

    if template is None:
        if ext == "" and (m := _HF.match(stem)):
            step, template = int(m[1]), "hf"
        elif ext in _KERAS_SUFFIXES and (m := _KERAS.match(stem)):
            epoch, template = int(m["epoch"]), "keras"
            if m["val"] is not None:
                metrics["val_loss"] = float(m["val"])
        elif ext == "" and _NUMERIC.match(stem):
            step, template = int(stem), "numeric"
        elif ext in ("", "tf") and (m := _TF_CKPT.match(stem)):
            step, template = int(m[1]), "ckpt"

    step_template = None
    for m in _KEYWORD.finditer(stem):
        kw, n = _keyword_template(m["kw"]), int(m["n"])
        if kw == "epoch":
            epoch = n if epoch is None else epoch
        elif step is None:
            step, step_template = n, kw
    if template is None and (step_template or epoch is not None):
        template = step_template or "epoch"

    low = stem.lower()
    tail = _last_token(low)
    is_last = low.startswith(CHECKPOINT_NAME_LAST + CHECKPOINT_JOIN_CHAR) or tail == CHECKPOINT_NAME_LAST
    if template is None and is_last:
        template = "last"
    if template is None and (
        low in ("best_model", "best-model") or low.startswith("best-") or tail == "best"
    ):
        template = "best"
    return NameInfo(
        step, epoch, MappingProxyType(metrics) if metrics else _NO_METRICS, is_last, version, template
    )


def _keyword_template(keyword: str) -> str:
    low = keyword.lower()
    if low.startswith("global"):
        return "global_step"
    if low.startswith("iter"):
        return "iter"
    return "epoch" if low.startswith("ep") else "step"


def _last_token(low: str) -> str:
    """The last `-`/`_`-separated token of a lower-cased stem (string methods: no regex per name)."""
    return low[max(low.rfind("-"), low.rfind("_")) + 1 :]


def _is_last(stem: str) -> bool:
    low = stem.lower()
    return (
        low.startswith(CHECKPOINT_NAME_LAST + CHECKPOINT_JOIN_CHAR)
        or _last_token(low) == CHECKPOINT_NAME_LAST
    )


# ---------------------------------------------------------------------------------------------- sorting


_DIGIT_RUNS = re.compile(r"(\d+)", re.ASCII)


def natural_key(s: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """A sort key that compares digit runs as numbers and text case-insensitively; a total order.

    >>> sorted(["checkpoint-100", "checkpoint-99", "Checkpoint-5"], key=natural_key)
    ['Checkpoint-5', 'checkpoint-99', 'checkpoint-100']
    >>> sorted(["epoch=10", "epoch=9", "epoch=09"], key=natural_key)
    ['epoch=09', 'epoch=9', 'epoch=10']

    Numbers sort before text at the same position, ties (`09` vs `9`, case) fall back to the string
    itself, so any two strings compare. Decimals compare digit run by digit run (`0.12` > `0.9`).
    """
    parts = _DIGIT_RUNS.split(s)
    key = tuple((0, int(p)) if i % 2 else (1, p.casefold()) for i, p in enumerate(parts) if p)
    return key, s


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


# ----------------------------------------------------------------------------------------------- debris

# (pattern searched in the lower-cased name, reason), tried in order. Only names real tools write.
_DEBRIS_NAMES = (
    (re.compile(r"^tmp-checkpoint-"), "in-progress save (tmp-checkpoint-*)"),  # HF Trainer's staging dir
    (re.compile(re.escape(ORBAX_TMP_DIR_SUFFIX)), "in-progress save (*.orbax-checkpoint-tmp-*)"),
    (re.compile(r"^\.lr_find_.*\.ckpt$"), "leftover Lightning tuner checkpoint (.lr_find_*.ckpt)"),
    (
        re.compile(r"^\.scale_batch_size_.*\.ckpt$"),
        "leftover Lightning tuner checkpoint (.scale_batch_size_*.ckpt)",
    ),
    (re.compile(r"\.tmp$"), "temporary file (*.tmp)"),  # e.g. DCP's .metadata.tmp, renamed when done
    (re.compile(r"\.incomplete$"), "incomplete download (*.incomplete)"),  # huggingface_hub cache blobs
    (re.compile(r"\.(?:part|partial|crdownload)$"), "partial download (*.part)"),
)
# all of them in one pattern: a scan asks about every file and nearly every answer is no
_ANY_DEBRIS_NAME = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _ in _DEBRIS_NAMES))


@dataclass(frozen=True)
class Stage:
    """A checkpoint's training stage as ckptlab shows it: what its content says first, then its name.
    `from_name` lists the fields (`step`, `epoch`, metric names) that only the name gave."""

    step: int | None
    epoch: int | float | None
    metrics: Mapping[str, float]
    from_name: frozenset[str] = frozenset()


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


def unfinished_save(name: str) -> str | None:
    """Why a file is a save that never finished — a checkpoint name plus a temporary suffix
    (`model.pth.tmp`, `x.ckpt.partial`) — or None.

    >>> unfinished_save("model_best.pth.tmp")
    'temporary file (*.tmp)'
    >>> unfinished_save("notes.tmp") is None
    True
    """
    stem, dot, _ = name.lower().rpartition(".")
    if not (dot and stem.endswith(CHECKPOINT_SUFFIXES)):  # the cheap test first: the scanner asks per file
        return None
    return debris_reason(name, size=None, mtime=None, now=0.0, settle_seconds=0)


# Files that are empty on purpose.
_EMPTY_MARKERS = ("orbax.checkpoint", "commit_success.txt")


def debris_reason(
    name: str,
    *,
    size: int | None,
    mtime: float | None,
    now: float,
    is_symlink: bool = False,
    target_exists: bool = True,
    settle_seconds: float = 5.0,
    link_target: str | None = None,
) -> str | None:
    """Why a file or directory is debris (not, or not yet, a usable checkpoint), or None.

    Checks, first hit wins: a dangling symlink; a temporary / in-progress name; a zero-byte file (`size`
    is None for directories); modified less than `settle_seconds` ago (`now` and `mtime` in the same
    clock, e.g. `time.time()` and `st_mtime`; a `settle_seconds` of 0 turns this off). A future `mtime`
    within `settle_seconds` counts as recent (clock skew on a network file system); further out, not.

    >>> debris_reason("tmp-checkpoint-300", size=None, mtime=0.0, now=100.0)
    'in-progress save (tmp-checkpoint-*)'
    >>> debris_reason("model.safetensors", size=0, mtime=0.0, now=100.0)
    'zero-byte file'
    >>> debris_reason("model.safetensors", size=10, mtime=98.0, now=100.0)
    'modified 2.0 s ago (may still be being written)'
    >>> debris_reason("last.ckpt", size=None, mtime=None, now=0.0, is_symlink=True, target_exists=False,
    ...               link_target="epoch=2-step=300.ckpt")
    'dangling symlink -> epoch=2-step=300.ckpt'
    >>> debris_reason("epoch=2-step=300.ckpt", size=10, mtime=0.0, now=100.0) is None
    True
    """
    if is_symlink and not target_exists:
        return f"dangling symlink -> {link_target}" if link_target else "dangling symlink"
    low = name.rstrip("/").lower()
    if _ANY_DEBRIS_NAME.search(low):
        for pattern, reason in _DEBRIS_NAMES:
            if pattern.search(low):
                return reason
    if size == 0 and low not in _EMPTY_MARKERS:
        return "zero-byte file"
    if mtime is not None and settle_seconds > 0:
        age = now - mtime
        if 0 <= age < settle_seconds:
            return f"modified {age:.1f} s ago (may still be being written)"
        if -settle_seconds < age < 0:
            return f"modified {-age:.1f} s in the future (clock skew? may still be being written)"
    return None


# -------------------------------------------------------------------------------------------------- runs

_CONTAINER_DIR = "checkpoints"  # Lightning's ModelCheckpoint dirpath: <run>/checkpoints/
_CLIMB_TEMPLATES = ("hf", "global_step", "step", "iter", "epoch")
_CLIMB_LEVELS = 3


def _is_step_dir(name: str) -> bool:
    return _split_extension(name)[1] == "" and parse_name(name).template in _CLIMB_TEMPLATES


def run_dir(checkpoint_path: str | os.PathLike[str]) -> Path:
    """The run a checkpoint belongs to: the directory holding its series. Path logic only, no I/O.

    >>> [run_dir(p).as_posix() for p in (
    ...     "lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt",  # Lightning: above checkpoints/
    ...     "out/checkpoint-300",                                         # HF: the output dir
    ...     "runs/x/step_100",                                            # DCP step directory
    ...     "ds/global_step500",                                          # DeepSpeed tag directory
    ...     "out/checkpoint-500/global_step500",                          # DeepSpeed inside HF
    ...     "mega/iter_0001000/mp_rank_00/model_optim_rng.pt",            # a file inside a step dir
    ...     "plain/checkpoint_epoch_4.pth")]                              # otherwise: the parent
    ['lightning_logs/version_0', 'out', 'runs/x', 'ds', 'out', 'mega', 'plain']

    Rules, in order: (1) a path inside a step directory (`checkpoint-N`, `global_stepN`, `step_N`, `epoch_N`,
    `iter_N`; up to 3 levels up, the outermost wins) stands for that directory - bare-number names (Orbax)
    are not climbed out of, `/data/2024/model.pt` is not step 2024; (2) the run is the parent, except that
    a parent named `checkpoints` is a container and the run is the one above it (Lightning's layout; the
    same for an HF `output_dir="checkpoints"`), also when folders with a `=` in their name lie between
    (Lightning makes those from a `/` in a metric name; elsewhere, e.g. Hydra's `lr=0.1` run folders, a
    `=` folder is the run).
    """
    return Path(run_dir_of_parent(str(Path(checkpoint_path).parent)))


@lru_cache(maxsize=16384)
def run_dir_of_parent(parent: str) -> str:
    """`run_dir` of any checkpoint directly inside the directory `parent`, as a string: the answer depends
    on the parent alone, so a scanner asks once per directory (memoised) instead of once per checkpoint.

    >>> run_dir_of_parent("lightning_logs/version_0/checkpoints"), run_dir_of_parent("out/checkpoint-500")
    ('lightning_logs/version_0', 'out')
    """
    p = Path(parent)
    start = None  # None: the checkpoint itself, whose parent is `p`
    for ancestor in [p, *p.parents][:_CLIMB_LEVELS]:
        if _is_step_dir(ancestor.name):
            start = ancestor
    base = p if start is None else start.parent
    above = base
    for _ in range(_CLIMB_LEVELS):
        if CHECKPOINT_EQUALS_CHAR not in above.name:
            break
        above = above.parent
    if above.name == _CONTAINER_DIR:
        return str(above.parent)
    return str(base)


# ------------------------------------------------------------------------------------------ pre-filter


def looks_like_checkpoint_name(name: str) -> bool:
    """A cheap pre-filter: False only for names that are surely not (part of) a checkpoint.

    The scanner still detects formats by content; this only skips configs, text, code, logs, images and
    such (`SKIP_SUFFIXES`) without opening them. Unknown endings and names without a suffix pass (a
    `torch.save` to `model_final` is a checkpoint), and so do the parts of multi-file checkpoints whose
    suffix would be skipped (`MULTIFILE_PART_NAMES`: DCP's `.metadata` and `*.distcp`, sharded
    `*.index.json`, HF's `trainer_state.json`).

    >>> [looks_like_checkpoint_name(n) for n in ("model.safetensors", "model.safetensors.index.json",
    ...     ".metadata", "trainer_state.json", "config.json", "metrics.csv", "train.py", "model_final")]
    [True, True, True, True, False, False, False, True]
    """
    low = name.rstrip("/").lower()
    if low.endswith(CHECKPOINT_SUFFIXES):
        return True
    for part in MULTIFILE_PART_NAMES:
        if low == part or (part.startswith("*") and low.endswith(part[1:])):
            return True
    return not (low.endswith(SKIP_SUFFIXES) or low.startswith(_SKIP_PREFIXES) or low in _SKIP_NAMES)

"""What a checkpoint's name says: step, epoch, metrics, last/version flags (`parse_name`); and the
scanner's cheap pre-filter of names that are surely not (part of) a checkpoint (`looks_like_checkpoint_name`).

Names parsed (`parse_name`), by the toolchain that writes them:

    Lightning ModelCheckpoint   epoch=2-step=300.ckpt, epoch=2-step=300-val_loss=0.12.ckpt, last.ckpt,
                                last-v1.ckpt, epoch=2-step=300-v1.ckpt, mnist-epoch=02-val_acc=0.95.ckpt
    HF Trainer                  checkpoint-300/
    Keras ModelCheckpoint       weights.02-0.60.h5 (the documented `weights.{epoch:02d}-{val_loss:.2f}`)
    DeepSpeed / Megatron / DCP  global_step500/, iter_0001000/, step_500/
    Orbax / TF                  1000/ (a bare step directory), ckpt-1000 (CheckpointManager), model.ckpt-1000
    plain scripts               checkpoint_epoch_4.pth, epoch_3_step_1200.pt, model_epoch=3.pt, ep3.pt
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..runlogs import whole_number

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
HF_CHECKPOINT_DIR = re.compile(rf"^{HF_CHECKPOINT_PREFIX}-(\d+)$")  # HF Trainer's checkpoint-N folder
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


def split_extension(name: str) -> tuple[str, str]:
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


def split_version(stem: str) -> tuple[str, int | None]:
    """(stem without Lightning's `-vN` suffix, N), or (stem, None) when the stem has no such version.

    Lightning appends `-vN` when the name it would write exists already, so `last-v1` is a newer save than
    `last`. Only a Lightning-shaped stem (`key=value` parts or `last`) has a version: `model-v2` does not.

    >>> split_version("epoch=1-step=8-v2"), split_version("last-v1"), split_version("model-v2")
    (('epoch=1-step=8', 2), ('last', 1), ('model-v2', None))
    """
    # the substring test skips the regex for the many names that cannot match (a scan parses them all)
    vm = _VERSION.match(stem) if CHECKPOINT_JOIN_CHAR + "v" in stem else None
    if vm:
        rest = vm["rest"]
        if _LIGHTNING_PART.search(rest) or _is_last(rest):
            return rest, int(vm["ver"])
    return stem, None


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
    stem, ext = split_extension(name)
    step: int | None = None
    epoch: int | None = None
    metrics: dict[str, float] = {}
    template: str | None = None
    version: int | None = None

    stem, version = split_version(stem)

    # the substring tests skip regexes that cannot match (a scan parses every checkpoint's name)
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
        if ext == "" and (m := HF_CHECKPOINT_DIR.match(stem)):
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

"""Logical checkpoints made of several files: sharded `*.index.json` sets and HF Trainer `checkpoint-N/` dirs.

Each part is read by its own single-file reader; this module only joins them and checks completeness.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from ..errors import FormatError, IncompleteError, LimitError
from ..model import CheckpointMeta, Entry, Safety, plural
from ..runlogs import latest_metrics, log_length, parse_trainer_state
from . import OPEN_FLAGS
from .globals_scan import unsafe_globals_in_file
from .limits import DEFAULT_LIMITS, Limits

# HF Trainer's file names (transformers.trainer: WEIGHTS_NAME, SAFE_WEIGHTS_NAME, OPTIMIZER_NAME, ...)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_OPTIMIZER = ("optimizer.pt", "optimizer.bin")
HF_SCHEDULER = ("scheduler.pt",)
HF_STATE = "trainer_state.json"
HF_ARGS = "training_args.bin"
# Accelerate's `save_state` folder (accelerate.utils.constants): model.safetensors, optimizer.bin,
# scheduler.bin, random_states_<process>.pkl, scaler.pt, sampler.bin; a second model/optimizer is `_1`
ACCELERATE_RNG = re.compile(r"random_states_\d+\.pkl")
ACCELERATE_SCHEDULER = "scheduler.bin"
HF_RNG = re.compile(r"rng_state.*\.pth")  # rng_state.pth, rng_state_<process>.pth
# the Trainer's own names, which Accelerate's save_state never writes
_TRAINER_ONLY = frozenset({HF_STATE, HF_ARGS, "optimizer.pt", "scheduler.pt"})
# what each torch.load-ed part of a checkpoint folder is, by its name (first match); a resume unpickles
# every one of them, so every one is read and checked, named or not
_PART_KINDS = (
    (re.compile(r"optimizer(_\d+)?\.(pt|bin)|.*optim_states\.pt"), "optimizer"),  # + DeepSpeed's ZeRO shards
    (re.compile(r".*model_states\.pt"), "model_states"),  # DeepSpeed's mp_rank_00_model_states.pt
    (re.compile(r"scheduler(_\d+)?\.(pt|bin)"), "scheduler"),
    (re.compile(f"{HF_RNG.pattern}|{ACCELERATE_RNG.pattern}"), "rng_state"),
    (re.compile(re.escape(HF_ARGS)), "training_args"),
    (re.compile(r"scaler(_\d+)?\.pt"), "grad_scaler"),
    (re.compile(r"sampler(_\d+)?\.bin"), "sampler"),
)
_PART_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".safetensors", ".ckpt")
# DeepSpeed's checkpoint tag folder: inside an HF checkpoint-N when the Trainer ran under DeepSpeed
DEEPSPEED_TAG = re.compile(r"global_step\d+")
# FSDP's sharded state dict as Accelerate saves it for the Trainer: DCP folders inside checkpoint-N
FSDP_MODEL = re.compile(r"pytorch_model_fsdp_\d+")
FSDP_PART = re.compile(r"(pytorch_model_fsdp|optimizer)_\d+")
# the folders of an HF checkpoint whose files are its parts
PART_FOLDER = re.compile(rf"{DEEPSPEED_TAG.pattern}|{FSDP_PART.pattern}")
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index of a checkpoint directory


def _load_json(path: Path, limits: Limits) -> Any:
    raw = _read_regular(path, limits.max_index_json_bytes)
    try:  # orjson: 5x faster on a long run's trainer_state.json (megabytes, read for every checkpoint)
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # NaN / Infinity (Python's json writes them: HF logs a NaN grad_norm so), huge integers...
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(str(path), f"invalid JSON ({e})") from None
    except ValueError as e:  # e.g. an integer past int_max_str_digits
        raise FormatError(str(path), f"invalid JSON ({str(e).split(':')[0]})") from None
    except RecursionError:
        raise FormatError(str(path), "JSON nested too deeply") from None


def _read_regular(path: Path, cap: int) -> bytes:
    """A regular file's bytes, up to `cap`. Opened without blocking and checked before reading: a FIFO or a
    device under a checkpoint's name must not hang a scan."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(str(path), "not a regular file")
        if st.st_size > cap:
            raise LimitError(str(path), f"{st.st_size}-byte JSON exceeds the cap of {cap}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(cap)  # a file grown since the fstat is cut at the cap (and fails to parse)
    finally:
        os.close(fd)


def leaves(folder: Path, name: str, within: str | None) -> bool:
    """Whether `folder/name` leads out of `within` through a link (None: no bound). A scan's checkpoint
    folder is inside its root (discovery follows no folder link), so only links on the way are resolved."""
    if within is None:
        return False
    at = folder
    for part in PurePosixPath(name).parts:
        at = at / part
        if os.path.islink(at):
            return not inside(os.path.realpath(folder / name), within)
    return False


def inside(path: str, root: str) -> bool:
    """Whether the real path `path` is `root` or lies under it (both resolved, no syscall here)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _refuse_outside(folder: Path, name: str, within: str | None) -> None:
    if leaves(folder, name, within):
        raise FormatError(str(folder / name), "a link out of the scanned folder: not read")


def _weight_map(doc: Any) -> dict[str, str] | None:
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        return None
    return wm


def shard_names(index: Path, limits: Limits = DEFAULT_LIMITS) -> list[str] | None:
    """The shard files an `*.index.json` lists, in order, or None if it is not a readable sharded index
    (the scanner's grouping step; `read_index` validates and reads the shards)."""
    try:
        wm = _weight_map(_load_json(index, limits))
    except (FormatError, OSError):
        return None
    return None if wm is None else _shards(wm)


def _shards(wm: dict[str, str]) -> list[str]:
    """The shard files a weight map names, each once, in first-listed order."""
    return list(dict.fromkeys(wm.values()))


def read_index(path: Path, limits: Limits = DEFAULT_LIMITS, within: str | None = None) -> CheckpointMeta:
    """A sharded checkpoint from its `*.index.json` (`weight_map`: tensor -> shard file). `within`: see
    `read_meta`; a shard that leads out of it is not read."""
    from . import read_file

    p = str(path)
    doc = _load_json(path, limits)
    wm = _weight_map(doc)
    if wm is None:
        raise FormatError(p, "JSON file without a weight_map: not a sharded checkpoint index")
    shards = _shards(wm)
    for name in shards:
        pp = PurePosixPath(name)
        if pp.is_absolute() or ".." in pp.parts or "\\" in name:
            raise FormatError(p, f"shard path {name!r} escapes the checkpoint directory")
        if name.endswith(".json"):  # an index naming itself (or another index) would recurse
            raise FormatError(p, f"shard {name!r} is a JSON file, not a weights file")
    outside = [n for n in shards if leaves(path.parent, n, within)]
    if outside:
        raise IncompleteError(p, f"shard {outside[0]} is a link out of the scanned folder: not read")
    missing = [n for n in shards if not (path.parent / n).is_file()]
    if missing:
        listed = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
        n = f"{len(missing)} of {len(shards)}"
        raise IncompleteError(p, f"{n} shards listed in the index are missing: {listed}")
    parts = [read_file(path.parent / n, limits) for n in shards]
    kinds = {m.format for m in parts}
    if len(kinds) != 1:
        raise FormatError(p, f"shards mix formats: {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    fmt = "safetensors-sharded" if kind == "safetensors" else "torch-sharded"
    by_name = {}
    for shard, m in zip(shards, parts, strict=True):  # keyed by the weight map's name (`sub/a.bin`)
        for t in m.tensors:
            if t.storage is not None and len(parts) > 1:
                # torch numbers storages per file ("0", "1", ...): the same key in two shards is two storages,
                # and only tensors sharing one storage of one file are tied
                t = t._replace(storage=f"{shard}/{t.storage}")
            by_name.setdefault((shard, t.name), t)
    tensors = []
    for name, shard in wm.items():
        t = by_name.get((shard, name))
        if t is None:
            raise IncompleteError(p, f"tensor {name!r} is listed in the index but absent from shard {shard}")
        tensors.append(t)
    unsafe = tuple(dict.fromkeys(g for m in parts for g in m.safety.unsafe_globals))
    findings = tuple(dict.fromkeys(f for m in parts for f in m.safety.findings))
    meta: dict[str, Any] = {"shards": len(parts)}
    if isinstance(doc.get("metadata"), dict):
        meta.update({str(k): v for k, v in doc["metadata"].items() if isinstance(v, (str, int, float))})
    declared = meta.get("total_size")
    actual = sum(t.nbytes for t in tensors)
    warnings = []
    if isinstance(declared, int) and declared != actual:
        warnings.append(f"index total_size {declared} differs from the shards' tensor bytes {actual}")
    extra = len({t.name for m in parts for t in m.tensors}) - len(tensors)
    if extra > 0:
        warnings.append(f"{extra} tensors in the shards are not listed in the index")
    files = (p, *(m.path for m in parts))
    return CheckpointMeta(
        path=p,
        format=fmt,
        size_bytes=sum(os.path.getsize(f) for f in files),
        tensors=tuple(tensors),
        metadata=meta,
        entries=(Entry("weight_map", "dict", f"{plural(len(wm), 'tensor')} over {len(parts)} shards"),),
        safety=Safety(unsafe, findings),
        layout="sharded",
        framework=parts[0].framework,
        files=files,
        warnings=tuple(warnings),
    )


def read_directory(path: Path, limits: Limits = DEFAULT_LIMITS, within: str | None = None) -> CheckpointMeta:
    """A directory that is one checkpoint: DCP (`.metadata`), HF `checkpoint-N/`, a sharded set, or a
    `save_pretrained` folder (its weights file, with the model's config)."""
    p = str(path)
    with os.scandir(path) as it:  # listed once: the names go down to the readers
        listing = list(it)
    layout = dir_layout({e.name for e in listing if e.is_file()}, [e.name for e in listing if e.is_dir()])
    if layout == "dcp":
        from .dcp_reader import read_dcp

        return read_dcp(path, limits)
    names = {e.name for e in listing}
    if layout == "hf-checkpoint":
        return read_hf_checkpoint(path, limits, names, within)
    # as path.glob("*.index.json") matched (files or not; case-insensitively where the OS folds case)
    indexes = sorted(path / n for n in names if os.path.normcase(n).endswith(".index.json"))
    if len(indexes) == 1:  # a sharded set, or a save_pretrained folder of one: the model's config too
        meta = read_index(indexes[0], limits, within)
        return replace(meta, metadata={**meta.metadata, **folder_configs(path, names, limits, within)})
    weights = next((n for n in HF_WEIGHTS if n in names), None)  # safetensors first, as transformers
    if weights is not None and not indexes:
        from . import read_file

        _refuse_outside(path, weights, within)
        meta = read_file(str(path / weights), limits)
        return replace(meta, metadata={**meta.metadata, **folder_configs(path, names, limits, within)})
    raise FormatError(
        p,
        "directory is not a checkpoint (no .metadata, trainer_state.json, weights or index.json); "
        "`ckptlab scan` lists the checkpoints under a folder",
    )


# What identifies the model in a folder's `config.json` (its dtype: `dtype` since transformers 5,
# `torch_dtype` before), and a PEFT adapter in `adapter_config.json` (what it adapts, and how)
_CONFIG_KEYS = {
    "config.json": ("model_config", ("model_type", "architectures", "dtype", "torch_dtype")),
    "adapter_config.json": (
        "adapter_config",
        ("peft_type", "task_type", "base_model_name_or_path", "r", "lora_alpha", "lora_dropout",
         "target_modules", "modules_to_save", "use_dora"),
    ),
}  # fmt: skip


def folder_configs(path: Path, names: set[str], limits: Limits, within: str | None = None) -> dict[str, Any]:
    """`model_config` / `adapter_config`: the fields of a folder's config.json and adapter_config.json that
    say what the weights are; a file that is absent or cannot be read is left out (it is not part of the
    checkpoint)."""
    out: dict[str, Any] = {}
    for name, (key, fields) in _CONFIG_KEYS.items():
        if name not in names or leaves(path, name, within):
            continue
        try:
            cfg = _load_json(path / name, limits)
        except (FormatError, OSError):
            continue
        if isinstance(cfg, dict) and (picked := {k: cfg[k] for k in fields if cfg.get(k) is not None}):
            out[key] = picked
    return out


def dir_layout(file_names: set[str], dir_names: Collection[str] = ()) -> str | None:
    """'dcp' or 'hf-checkpoint' when a directory holding these files (and folders) is one checkpoint, else
    None. Takes the names a caller already listed, so a scan lists each directory once. Under DeepSpeed
    ZeRO-3 or FSDP an HF checkpoint may hold its weights only in a folder (`global_stepN/`,
    `pytorch_model_fsdp_0/`)."""
    if DCP_METADATA in file_names:
        return "dcp"
    if not file_names & _WEIGHT_NAMES and not any(_WEIGHT_FOLDER.fullmatch(n) for n in dir_names):
        return None
    if file_names & _TRAINER_PARTS or any(map(ACCELERATE_RNG.fullmatch, file_names)):
        return "hf-checkpoint"
    return None


_WEIGHT_NAMES = frozenset(HF_WEIGHTS + HF_INDEXES)
_WEIGHT_FOLDER = re.compile(rf"{DEEPSPEED_TAG.pattern}|{FSDP_MODEL.pattern}")
_TRAINER_PARTS = frozenset(
    {HF_STATE, HF_ARGS, *HF_OPTIMIZER, *HF_SCHEDULER, ACCELERATE_SCHEDULER, "rng_state.pth"}
)


def part_kind(name: str) -> str | None:
    """What a file of a checkpoint folder is, by its name: 'optimizer', 'scheduler', 'rng_state',
    'training_args', 'grad_scaler', 'sampler', 'part' (another file torch.load may read), or None.

    >>> [part_kind(n) for n in ("optimizer.pt", "scheduler_1.bin", "random_states_0.pkl", "config.json")]
    ['optimizer', 'scheduler', 'rng_state', None]
    """
    for pattern, kind in _PART_KINDS:
        if pattern.fullmatch(name):
            return kind
    return "part" if name.lower().endswith(_PART_SUFFIXES) else None


def read_hf_checkpoint(
    path: Path, limits: Limits = DEFAULT_LIMITS, names: set[str] | None = None, within: str | None = None
) -> CheckpointMeta:
    """HF Trainer `checkpoint-N/` (weights, optimizer.pt, scheduler.pt, rng_state*.pth, trainer_state.json)
    or Accelerate `save_state` folder (weights, optimizer.bin, scheduler.bin, random_states_N.pkl, ...): the
    weights, and every other file a resume would unpickle read as a part and checked.
    `names`: every entry of the directory (os.listdir), when the caller has listed it. `within`: see
    `read_meta`; a part that leads out of it is not read, and the checkpoint is not called safe."""
    from . import read_file

    if names is None:
        names = set(os.listdir(path))
    tagged = deepspeed_files(path, names)  # "global_stepN/<file>": a resume loads these too
    fsdp = sorted(n for n in names if FSDP_PART.fullmatch(n) and (path / n / DCP_METADATA).is_file())
    weights_name = next((n for n in HF_INDEXES + HF_WEIGHTS if n in names), None)
    if weights_name is None:  # ZeRO-3 without gathered weights: the model states file holds the module
        states = [n for n in tagged if n.endswith("model_states.pt")]
        weights_name = min(states, key=_tag_rank(path, names), default=None)
    if weights_name is None:  # FSDP's sharded state dict: the model is a DCP folder
        weights_name = next((n for n in fsdp if FSDP_MODEL.fullmatch(n)), None)
    if weights_name is None:
        raise IncompleteError(str(path), "HF checkpoint directory without model weights")
    wpath = path / weights_name

    # what is read of a part: a file, or a DCP folder's .metadata (a link may sit at either step)
    def read_of(name: str) -> str:
        return f"{name}/{DCP_METADATA}" if name in fsdp else name

    _refuse_outside(path, read_of(weights_name), within)
    if weights_name.endswith(".index.json"):
        weights = read_index(wpath, limits, within)
    elif weights_name in fsdp:
        weights = _read_dcp_part(wpath, limits)
    else:
        weights = read_file(wpath, limits)
    parts: list[CheckpointMeta] = []
    entries = [Entry(weights_name, "weights", f"{weights.format}, {plural(weights.n_tensors, 'tensor')}")]
    warnings = list(weights.warnings)
    has_opt = has_sched = has_rng = False
    training: dict[str, Any] | None = None
    part_unsafe: list[str] = []
    part_findings: list[str] = []
    unverified: list[str] = []
    weight_files = {weights_name, *(os.path.basename(f) for f in weights.files)}
    for name in [*sorted(names), *tagged]:
        fp = path / name
        kind = part_kind(os.path.basename(name)) if name not in weight_files else None
        if name in fsdp and name != weights_name:  # optimizer_0/: a DCP folder of the optimizer's state
            kind = "optimizer" if name.startswith("optimizer") else "part"
        has_rng = has_rng or kind == "rng_state"
        if kind is not None and leaves(path, read_of(name), within):
            warnings.append(f"{name}: a link out of the scanned folder, not read")
            entries.append(Entry(name, "not read", "a link out of the scanned folder"))
            unverified.append(name)
        elif kind is not None and (fp.is_file() or name in fsdp):
            try:
                m = _read_dcp_part(fp, limits) if name in fsdp else read_file(fp, limits)
            except FormatError as e:
                # torch.load may still unpickle a part ckptlab cannot read: its globals count, and a part
                # that could not be checked at all keeps the checkpoint from being called safe
                warnings.append(f"{name}: {e.cause}")
                entries.append(Entry(name, "unreadable", e.cause))
                found = e.unsafe_globals  # read_file's scan of a zip or pickle
                if found is None:
                    found = unsafe_globals_in_file(fp, limits)
                part_unsafe.extend(g for g in found if g not in part_unsafe)
                part_findings.extend(f"{name}: unreadable part references {g}" for g in found)
                if not found:
                    unverified.append(name)
                continue
            parts.append(m)
            has_opt = has_opt or kind == "optimizer"
            has_sched = has_sched or kind == "scheduler"
            if "training_args" in m.metadata:  # HF's pickled TrainingArguments: what the run was trained with
                training = m.metadata["training_args"]
                entries.append(Entry(name, kind, m.entries[0].summary if m.entries else m.format))
            else:
                entries.append(
                    Entry(name, kind, f"{m.format}, {plural(len(m.other_tensors) + m.n_tensors, 'tensor')}")
                )
    has_state = HF_STATE in names and not leaves(path, HF_STATE, within)
    doc: Any = _load_json(path / HF_STATE, limits) if has_state else {}
    state = parse_trainer_state(doc, history=False)  # its metrics: latest_metrics, without a row each
    if has_state:
        n_rows = log_length(doc)
        entries.append(Entry(HF_STATE, "trainer_state", plural(n_rows, "log entry", "log entries")))
    metrics = {**weights.metrics, **latest_metrics(doc)}
    if state.best_metric is not None:
        metrics["best_metric"] = state.best_metric
    step, epoch = state.global_step, state.epoch
    if isinstance(epoch, float) and epoch.is_integer():
        epoch = int(epoch)
    meta: dict[str, Any] = {"weights": weights_name, **weights.metadata}
    for k in ("best_model_checkpoint", "max_steps", "num_train_epochs", "save_steps"):
        if getattr(state, k) is not None:
            meta[k] = getattr(state, k)
    if training is not None:
        meta["training_args"] = training
    meta.update(folder_configs(path, names, limits, within))
    all_parts = [weights, *parts]
    unsafe = tuple(dict.fromkeys([*(g for m in all_parts for g in m.safety.unsafe_globals), *part_unsafe]))
    read_findings = [f"{os.path.basename(m.path)}: {f}" for m in all_parts for f in m.safety.findings]
    findings = tuple(dict.fromkeys([*read_findings, *part_findings]))
    in_folders = [*tagged, *folder_files(path, fsdp)]
    files = tuple(
        sorted(
            [*(str(path / n) for n in names if (path / n).is_file()), *(str(path / n) for n in in_folders)]
        )
    )
    return replace(
        weights,
        path=str(path),
        size_bytes=sum(os.path.getsize(f) for f in files),
        step=step if step is not None else weights.step,
        epoch=epoch if epoch is not None else weights.epoch,
        metrics=metrics,
        has_optimizer=has_opt,
        has_scheduler=has_sched,
        has_rng_state=has_rng,
        metadata=meta,
        entries=tuple(entries),
        safety=Safety(unsafe, findings, tuple(unverified)),
        layout="hf-checkpoint",
        framework=_framework(names),
        files=files,
        other_tensors=tuple(t for m in parts for t in (*m.tensors, *m.other_tensors)),
        warnings=tuple(warnings),
    )


def _tag_rank(path: Path, names: Collection[str]) -> Callable[[str], tuple[bool, int, str]]:
    """Sort key of "global_stepN/<file>" names: the tag DeepSpeed's `latest` file names first, then the
    highest step (numerically)."""
    latest = None
    if "latest" in names:
        with contextlib.suppress(FormatError, OSError):  # unreadable: the highest step then
            latest = _read_regular(path / "latest", 256).decode("utf-8", "replace").strip()

    def rank(name: str) -> tuple[bool, int, str]:
        tag = name.split("/", 1)[0]
        return (tag != latest, -int(tag.removeprefix("global_step")), name)

    return rank


def deepspeed_files(path: Path, names: Collection[str]) -> list[str]:
    """The files of the DeepSpeed tag folders (`global_stepN/`) among `names`, as "global_stepN/<file>"."""
    return folder_files(path, sorted(n for n in names if DEEPSPEED_TAG.fullmatch(n)))


def folder_files(path: Path, folders: Collection[str]) -> list[str]:
    """The files directly in each of `path`'s `folders`, as "<folder>/<file>"."""
    out = []
    for folder in folders:
        try:
            with os.scandir(path / folder) as it:
                out += sorted(f"{folder}/{e.name}" for e in it if e.is_file())
        except OSError:  # not a folder, gone, or unreadable: discovery reports what it could not list
            continue
    return out


def _read_dcp_part(path: Path, limits: Limits) -> CheckpointMeta:
    from .dcp_reader import read_dcp

    return read_dcp(path, limits)


def _framework(names: set[str]) -> str:
    """'hf-trainer' for a Trainer's checkpoint-N (its own file names), else 'accelerate' (save_state)."""
    return "hf-trainer" if names & _TRAINER_ONLY or any(map(HF_RNG.fullmatch, names)) else "accelerate"

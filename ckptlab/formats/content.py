"""What a pickled checkpoint holds, read off the inert object tree the restricted unpickler built.

Finds the model state dict inside the common wrappers (plain state dict, `{"model_state_dict": ...}`,
Lightning's `state_dict`, a pickled nn.Module, a TorchScript module), the step/epoch, scalar metrics, and
whether optimizer / LR scheduler / RNG state were saved. Pure functions over data: no I/O except through
the `locate` / `read_scalar` callbacks the reader passes in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import BYTE_SIZES, nbytes_for
from ..model import Entry, Location, TensorMeta, human_bytes, plural
from .pickle_refs import numpy_scalar
from .pickle_vm import DtypeRef, Global, Obj, PickledDict, StorageRef, TensorRef, as_global

# Keys under which training scripts and frameworks keep the model weights, most specific first.
MODEL_KEYS = (
    "state_dict",  # Lightning
    "model_state_dict",  # the PyTorch tutorial idiom
    "model_state",
    "model",
    "module",  # DeepSpeed / DDP wrappers
    "net",
    "network",
    "weights",
    "params",
    "model_ema",
    "ema",
)
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optimizer_state", "optim", "opt")
SCHEDULER_KEYS = (
    "scheduler",
    "lr_scheduler",
    "scheduler_state_dict",
    "lr_scheduler_state_dict",
    "lr_schedulers",
    "schedulers",
    "sched",
)
# global_steps: DeepSpeed's model_states; iteration: Megatron; num_updates: fairseq
STEP_KEYS = (
    "global_step", "global_steps", "step", "steps", "iteration", "iter", "num_updates", "total_steps"
)  # fmt: skip
EPOCH_KEYS = ("epoch", "epochs", "current_epoch")
METRIC_DICT_KEYS = (
    "metrics",
    "val_metrics",
    "eval_metrics",
    "train_metrics",
    "best_metrics",
    "logs",
    "results",
)
METRIC_NAME = re.compile(
    r"(loss|acc|accuracy|score|f1|bleu|rouge|ppl|perplexity|auc|map|iou|dice|reward|error|err|"
    r"precision|recall|wer|cer|top\d|metric|best)",
    re.I,
)
_RNG_NAME = re.compile(r"(^|_)(rng|random)(_|$)|rng_state|random_state|generator_state", re.I)
_MAX_DEPTH = 64


ReadScalar = Callable[[TensorRef], float | None]
Locate = Callable[[TensorRef], Location | None]


@dataclass
class Content:
    """Fields of CheckpointMeta that come from the pickled content."""

    tensors: list[TensorMeta] = field(default_factory=list)
    other_tensors: list[TensorMeta] = field(default_factory=list)
    step: int | None = None
    epoch: int | float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    has_optimizer: bool = False
    has_scheduler: bool = False
    has_rng_state: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    framework: str | None = None


def collect_tensors(
    obj: Any, prefix: str = "", depth: int = 0, seen: set[int] | None = None
) -> list[tuple[str, TensorRef]]:
    """(dotted name, tensor) for every tensor reachable in dicts, lists and module objects, depth-first in
    container order. A stack of iterators rather than recursion: a tensor deep in optimizer state would
    otherwise pass through one frame per level, and the inner loop over a state dict's items stays a tight
    loop (this runs once per tensor of every read)."""
    if type(obj) is TensorRef:
        return [(prefix or "tensor", obj)]
    out: list[tuple[str, TensorRef]] = []
    if seen is None:
        seen = set()
    if type(obj) not in _WALKED_TYPES or id(obj) in seen:
        return out
    seen.add(id(obj))
    stack = [(f"{prefix}." if prefix else "", iter(_named_children(obj)), depth)]
    append = out.append
    while stack:
        pre, items, d = stack[-1]
        for k, v in items:
            tv = type(v)
            if tv is TensorRef:
                append((pre + k if type(k) is str else f"{pre}{k}", v))
            elif tv in _WALKED_TYPES and d + 1 < _MAX_DEPTH and id(v) not in seen:
                seen.add(id(v))  # memo references can make cycles, and share containers
                stack.append((f"{pre}{k}.", iter(_named_children(v)), d + 1))
                break
        else:
            stack.pop()
    return out


# containers that can hold tensors, as the exact types the pickle walk builds them: a set lookup per value
# instead of isinstance chains (TensorRef and StorageRef are tuple subclasses: never walked as containers)
_WALKED_TYPES = frozenset({dict, PickledDict, list, tuple, Obj})


def _named_children(o: Any) -> Any:
    """(name, child) pairs of one of `_WALKED_TYPES` (the only types its callers pass)."""
    t = type(o)
    if t is dict or t is PickledDict:
        return o.items()
    if t is list or t is tuple:
        return enumerate(o)
    attrs = o.attrs()  # an Obj
    if "_parameters" in attrs or "_modules" in attrs:  # a pickled nn.Module: mirror state_dict() names
        out: list[tuple[Any, Any]] = []
        for key in ("_parameters", "_buffers", "_modules"):
            sub = attrs.get(key)
            if isinstance(sub, dict):
                out.extend(sub.items())
        return out
    return [*attrs.items(), *o.items.items(), *enumerate(o.list_items)]


# Memo of (tensor count, bytes) per container, alive for one analyse() call: many keys may share one big
# container through the pickle memo, and counting it afresh for each would take keys x size time.
_COUNTS: ContextVar[dict[int, tuple[int, int]] | None] = ContextVar("ckptlab_counts", default=None)


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        yield from obj.values()
    elif isinstance(obj, (list, tuple)):
        yield from obj
    elif isinstance(obj, Obj):
        yield from obj.attrs().values()
        yield from obj.items.values()
        yield from obj.list_items


def _count_tensors(obj: Any, depth: int = 0) -> tuple[int, int]:
    """(tensors, bytes) reachable from obj; each container is counted once per analyse() call."""
    if type(obj) is TensorRef:
        return 1, nbytes_for(obj.dtype, obj.numel)
    if not isinstance(obj, (dict, list, tuple, Obj)) or depth > _MAX_DEPTH:
        return 0, 0
    memo = _COUNTS.get()
    if memo is None:
        memo = {}
    key = id(obj)
    if key in memo:
        return memo[key]
    memo[key] = (0, 0)  # cycle guard
    n = b = 0
    for child in _children(obj):
        cn, cb = _count_tensors(child, depth + 1)
        n, b = n + cn, b + cb
    memo[key] = (n, b)
    return n, b


def _has_tensor(obj: Any) -> bool:
    """Whether any tensor is reachable (stops at the first: a state dict answers at its first value)."""
    stack, seen = [(obj, 0)], set()
    while stack:
        o, d = stack.pop()
        if type(o) is TensorRef:
            return True
        if d < _MAX_DEPTH and type(o) in _WALKED_TYPES and id(o) not in seen:
            seen.add(id(o))
            stack.extend((v, d + 1) for v in _children(o))
    return False


def is_optimizer_state(v: Any) -> bool:
    return isinstance(v, dict) and "state" in v and "param_groups" in v


def is_scheduler_state(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and "last_epoch" in v
        and ("base_lrs" in v or "_step_count" in v or "_last_lr" in v)
    )


def _is_module_obj(v: Any) -> bool:
    return isinstance(v, Obj) and ("_parameters" in v.attrs() or v.qualname.startswith("__torch__."))


def _scalar(v: Any, read_scalar: ReadScalar) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if type(v) is TensorRef and v.numel == 1:
        return read_scalar(v)
    n = numpy_scalar(v)  # np.float64(0.25): its bytes, decoded without numpy
    return n[0] if n is not None and type(n[0]) is not bool else None


def _tensor_metas(pairs: list[tuple[str, TensorRef]], locate: Locate) -> list[TensorMeta]:
    new, sizes = tuple.__new__, BYTE_SIZES  # built in C: this runs once per tensor of every read
    out = []
    append = out.append
    for name, t in pairs:
        dt = t.dtype
        isz = sizes.get(dt)
        nbytes = t.numel * isz if isz is not None else nbytes_for(dt, t.numel)
        append(new(TensorMeta, (name, t.shape, dt, nbytes, t.storage.key, locate(t))))
    return out


_RNG_FILE_KEYS = {"python", "numpy", "cpu", "cuda", "xla", "mps", "npu", "hpu", "mlu", "musa"}
# Accelerate's random_states_<process>.pkl: `step` there is its gradient-accumulation counter, not a step
_ACCELERATE_RNG_KEYS = {"random_state", "numpy_random_seed", "torch_manual_seed", "step", "xm_seed"}
_ACCELERATE_DEVICE_SEED = re.compile(r"torch_\w+_manual_seed")


def _is_rng_file(root: dict[Any, Any]) -> bool:
    keys = {str(k) for k in root}
    return bool(keys) and keys <= _RNG_FILE_KEYS and bool(keys & {"python", "numpy", "cpu"})


def _is_accelerate_rng_file(root: dict[Any, Any]) -> bool:
    keys = {str(k) for k in root}
    return (
        "random_state" in keys
        and "torch_manual_seed" in keys
        and all(k in _ACCELERATE_RNG_KEYS or _ACCELERATE_DEVICE_SEED.fullmatch(k) for k in keys)
    )


def _pick_model(root: dict[Any, Any]) -> tuple[str | None, Any]:
    """(key, value) of the model weights inside a checkpoint dict; key None means the dict itself."""
    if root and all(isinstance(v, TensorRef) for v in root.values()):
        return None, root
    for key in MODEL_KEYS:
        v = root.get(key)
        if (isinstance(v, dict) and _has_tensor(v)) or _is_module_obj(v):
            return key, v
    # otherwise the entry holding the most tensor bytes that is not optimizer/scheduler state
    best: tuple[int, str | None, Any] = (0, None, None)
    for k, v in root.items():
        if (
            k in OPTIMIZER_KEYS
            or k in SCHEDULER_KEYS
            or is_optimizer_state(v)
            or not isinstance(v, (dict, Obj))
            or _RNG_NAME.search(str(k))  # an RNG dict holds a uint8 tensor: never the model
        ):
            continue
        _, b = _count_tensors(v)
        if b > best[0]:
            best = (b, str(k), v)
    if best[1] is not None:
        return best[1], best[2]
    if any(isinstance(v, TensorRef) for v in root.values()):  # loose tensors at top level
        return None, {k: v for k, v in root.items() if isinstance(v, TensorRef)}
    return None, {}


# HF Trainer's training_args.bin pickles its TrainingArguments (TRL's trainers: a *Config subclass) and the
# enums its fields hold by reference. Those globals are reported as unsafe like any others: loading the
# file takes weights_only=False (a resume never loads it). What it says about the run is shown.
_ARGS_ENUM_MODULES = ("transformers.", "accelerate.")
# The TrainingArguments fields a user looks for (what the run was trained with), in this order
_ARGS_SHOWN = (
    "output_dir", "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay",
    "optim", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "seed", "bf16", "fp16", "eval_strategy", "evaluation_strategy", "save_strategy", "save_steps",
    "logging_steps", "metric_for_best_model", "resume_from_checkpoint",
)  # fmt: skip


def _is_training_args(qualname: str) -> bool:
    module, _, name = qualname.rpartition(".")
    return (module.startswith("transformers.training_args") and name.endswith("TrainingArguments")) or (
        module.startswith("trl.trainer.") and name.endswith("Config")
    )


def training_args(obj: Obj) -> dict[str, Any]:
    """The fields of a pickled TrainingArguments that say how the run was trained (enums by value)."""
    state = obj.attrs()
    out: dict[str, Any] = {}
    for key in _ARGS_SHOWN:
        v = state.get(key)
        if isinstance(v, Obj) and v.qualname.startswith(_ARGS_ENUM_MODULES) and len(v.args) == 1:
            v = v.args[0]
        if v is not None and type(v) in (str, int, float, bool) and len(str(v)) <= 200:
            out[key] = v
    return out


def _args_summary(qualname: str, args: dict[str, Any]) -> str:
    parts = [f"lr={args['learning_rate']:g}"] if type(args.get("learning_rate")) in (int, float) else []
    if type(args.get("max_steps")) is int and args["max_steps"] > 0:
        parts.append(f"{args['max_steps']} steps")
    elif type(args.get("num_train_epochs")) in (int, float):
        parts.append(f"{args['num_train_epochs']:g} epochs")
    if "per_device_train_batch_size" in args:
        accumulate = args.get("gradient_accumulation_steps", 1)
        per_step = f"×{accumulate}" if accumulate != 1 else ""
        parts.append(f"batch {args['per_device_train_batch_size']}{per_step} per device")
    if "seed" in args:
        parts.append(f"seed {args['seed']}")
    return f"{qualname.rsplit('.', 1)[-1]}: " + ", ".join(parts) if parts else qualname.rsplit(".", 1)[-1]


def analyse(root: Any, locate: Locate, read_scalar: ReadScalar) -> Content:
    """Everything CheckpointMeta needs from a pickled object tree."""
    token = _COUNTS.set({})
    try:
        return _analyse(root, locate, read_scalar)
    finally:
        _COUNTS.reset(token)


def _analyse(root: Any, locate: Locate, read_scalar: ReadScalar) -> Content:
    c = Content(framework="pytorch")
    if isinstance(root, (TensorRef, list, tuple)):
        c.tensors = _tensor_metas(collect_tensors(root), locate)
        return c
    if isinstance(root, Obj) and _is_training_args(root.qualname):  # HF's training_args.bin
        args = training_args(root)
        c.framework = "hf-trainer"
        c.metadata["training_args"] = args
        c.entries.append(Entry("<root>", "training_args", _args_summary(root.qualname, args)))
        return c
    if isinstance(root, Obj):
        c.tensors = _tensor_metas(collect_tensors(root), locate)
        c.entries.append(Entry("<root>", "object", f"pickled object {root.qualname}"))
        return c
    if not isinstance(root, dict):
        c.entries.append(Entry("<root>", type(root).__name__, _summary(root)[1]))
        return c

    if is_optimizer_state(root) or is_scheduler_state(root):  # a standalone optimizer.pt / scheduler.pt
        c.has_optimizer = is_optimizer_state(root)
        c.has_scheduler = is_scheduler_state(root)
        c.other_tensors = _tensor_metas(collect_tensors(root), locate)
        kind, summary = _summary(root)
        c.entries = [Entry("<root>", kind, summary)]
        return c
    if _is_rng_file(root) or _is_accelerate_rng_file(root):  # HF's rng_state.pth, Accelerate's random_states
        c.has_rng_state = True
        if "random_state" in root:
            c.framework = "accelerate"
        c.other_tensors = _tensor_metas(collect_tensors(root), locate)
        c.entries = [Entry(str(k), *_summary(v)) for k, v in root.items()]
        return c

    model_key, model = _pick_model(root)
    c.tensors = _tensor_metas(collect_tensors(model), locate)
    loose = set(model) if model_key is None and model is not root else set()

    if "pytorch-lightning_version" in root or "lightning_version" in root:
        c.framework = "lightning"
        _lightning(root, c, read_scalar)

    others_seen: set[int] = set()
    for k, v in root.items():
        key = str(k)
        if (model_key is not None and k == model_key) or (model_key is None and model is root) or k in loose:
            continue
        lk = key.lower()
        if (
            key in OPTIMIZER_KEYS
            or is_optimizer_state(v)
            or (isinstance(v, list) and v and all(is_optimizer_state(x) for x in v))
        ):
            c.has_optimizer = True
        if (
            key in SCHEDULER_KEYS
            or is_scheduler_state(v)
            or (isinstance(v, list) and v and all(is_scheduler_state(x) for x in v))
        ):
            c.has_scheduler = True
        if _RNG_NAME.search(lk):
            c.has_rng_state = True
        # one `seen` for all entries: a container shared by several keys is listed once, not once per key
        metas = _tensor_metas(collect_tensors(v, key, seen=others_seen), locate)
        c.other_tensors.extend(metas)
        kind, summary = _summary(v, metas, key)
        c.entries.append(Entry(key, kind, summary))
        val = _scalar(v, read_scalar)
        if lk in STEP_KEYS and val is not None and c.step is None:
            c.step = int(val) if math.isfinite(val) else None
        elif lk in EPOCH_KEYS and val is not None and c.epoch is None:
            c.epoch = (int(val) if float(val).is_integer() else float(val)) if math.isfinite(val) else None
        elif (
            val is not None and (isinstance(val, float) or METRIC_NAME.search(key)) and lk not in NOT_METRICS
        ):
            c.metrics.setdefault(key, float(val))
        elif lk in METRIC_DICT_KEYS and isinstance(v, dict):
            for mk, mv in v.items():
                s = _scalar(mv, read_scalar)
                if s is not None:
                    c.metrics.setdefault(str(mk), float(s))
        elif isinstance(v, str) and len(v) <= 200:
            c.metadata.setdefault(key, v)
    if model_key is not None:
        c.metadata.setdefault("model_key", model_key)
    return c


NOT_METRICS = {"seed", "version", "lr_step", "world_size", "rank", "batch_size", "num_workers"}


def _lightning(root: dict[Any, Any], c: Content, read_scalar: ReadScalar) -> None:
    """Lightning's checkpoint dict: version, hyper-parameters, ModelCheckpoint/EarlyStopping scores."""
    c.metadata["lightning_version"] = root.get("pytorch-lightning_version") or root.get("lightning_version")
    hp = root.get("hyper_parameters") or root.get("hparams")
    if isinstance(hp, dict):
        c.metadata["hyper_parameters"] = {str(k): _plain(v) for k, v in list(hp.items())[:200]}
    elif isinstance(hp, Obj):
        c.metadata["hyper_parameters"] = {str(k): _plain(v) for k, v in list(hp.attrs().items())[:200]}
    callbacks = root.get("callbacks")
    if isinstance(callbacks, dict):
        for name, state in callbacks.items():
            if not isinstance(state, dict):
                continue
            if str(name).startswith("ModelCheckpoint"):
                for k in ("best_model_score", "current_score"):
                    s = _scalar(state.get(k), read_scalar)
                    if s is not None:
                        c.metrics.setdefault(k, float(s))
                for k in ("monitor", "best_model_path", "last_model_path"):
                    if isinstance(state.get(k), str):
                        c.metadata.setdefault(k, state[k])
                monitor = state.get("monitor")
                cur = _scalar(state.get("current_score"), read_scalar)
                if isinstance(monitor, str) and cur is not None:
                    c.metrics.setdefault(monitor, float(cur))
            elif str(name).startswith("EarlyStopping"):
                s = _scalar(state.get("best_score"), read_scalar)
                if s is not None:
                    c.metrics.setdefault("early_stopping_best_score", float(s))


def _plain(v: Any, depth: int = 0) -> Any:
    """A JSON-friendly rendering of a hyper-parameter value (placeholders become their names)."""
    v = as_global(v)
    if depth > 6:
        return "…"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, TensorRef):  # a tuple subclass: before the tuple case
        return f"tensor {v.dtype} {list(v.shape)}"
    if isinstance(v, StorageRef):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in v[:50]]
    if isinstance(v, dict):
        return {str(k): _plain(x, depth + 1) for k, x in list(v.items())[:100]}
    if isinstance(v, (Obj, Global)):
        n = numpy_scalar(v)
        return n[0] if n is not None else f"<{v.qualname}>"
    if isinstance(v, DtypeRef):
        return v.name
    return f"<{type(v).__name__}>"


def _counted(v: Any, metas: list[TensorMeta] | None) -> tuple[int, int]:
    return (len(metas), sum(m.nbytes for m in metas)) if metas else _count_tensors(v)


def _summary(v: Any, metas: list[TensorMeta] | None = None, name: str = "") -> tuple[str, str]:
    """(kind, one-line summary) of a top-level entry. `metas`: its tensors, already listed under `name`
    (counted from them instead of walking the entry again)."""
    v = as_global(v)
    if is_optimizer_state(v):
        if metas:
            pre = f"{name}.state."
            sel = [m.nbytes for m in metas if m.name.startswith(pre)]
            n, b = len(sel), sum(sel)
        else:
            n, b = _count_tensors(v.get("state"))
        groups = v.get("param_groups") if isinstance(v.get("param_groups"), list) else []
        n_params = sum(len(g.get("params", [])) for g in groups if isinstance(g, dict))
        lrs = sorted(
            {g.get("lr") for g in groups if isinstance(g, dict) and isinstance(g.get("lr"), (int, float))}
        )
        lr = f", lr={lrs[0]:g}" if len(lrs) == 1 else ""
        state = v.get("state")
        n_state = len(state) if isinstance(state, dict) else 0
        return "optimizer", (
            f"{plural(len(groups), 'param group')} over {plural(n_params, 'param')}{lr}; "
            f"state for {plural(n_state, 'param')} ({plural(n, 'tensor')}, {human_bytes(b)})"
        )
    if is_scheduler_state(v):
        last = v.get("_last_lr")
        lr = (
            f", last lr={last[0]:g}"
            if isinstance(last, list) and last and isinstance(last[0], (int, float))
            else ""
        )
        return "scheduler", f"last_epoch={v.get('last_epoch')}{lr}"
    if isinstance(v, list) and v and all(is_optimizer_state(x) for x in v):
        return "optimizer", plural(len(v), "optimizer state")
    if isinstance(v, list) and v and all(is_scheduler_state(x) for x in v):
        return "scheduler", plural(len(v), "scheduler state")
    if isinstance(v, TensorRef):
        return "tensor", f"tensor {v.dtype} {list(v.shape)}"
    if isinstance(v, dict):
        n, b = _counted(v, metas)
        extra = f" ({plural(n, 'tensor')}, {human_bytes(b)})" if n else ""
        keys = ", ".join(str(k) for k in list(v)[:6]) + (", …" if len(v) > 6 else "")
        return "dict", f"{plural(len(v), 'key')}{extra}: {keys}"
    if isinstance(v, StorageRef):  # a tuple subclass: before the tuple case
        return "reference", repr(v)
    if isinstance(v, (list, tuple)):
        n, b = _counted(v, metas)
        extra = f" ({plural(n, 'tensor')}, {human_bytes(b)})" if n else ""
        return type(v).__name__, f"{plural(len(v), 'item')}{extra}"
    if isinstance(v, bool):
        return "bool", str(v)
    if isinstance(v, (int, float)):
        return type(v).__name__, f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return "str", v if len(v) <= 120 else v[:117] + "…"
    if isinstance(v, bytes):
        return "bytes", f"{len(v)} bytes"
    scalar = numpy_scalar(v)
    if scalar is not None:  # np.float64(0.25): kind as numpy names it, value as for a plain number
        value, dtype = scalar
        return f"numpy.{dtype}", f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(v, Obj):
        n, b = _counted(v, metas)
        extra = f" ({plural(n, 'tensor')}, {human_bytes(b)})" if n else ""
        return "object", f"{v.qualname}{extra}"
    if isinstance(v, (Global, DtypeRef)):
        return "reference", repr(v)
    if v is None:
        return "none", "None"
    return type(v).__name__, f"<{type(v).__name__}>"

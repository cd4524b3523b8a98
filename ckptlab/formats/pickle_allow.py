"""The static allowlist of pickle globals: what `torch.save` of tensors, containers, numbers, strings and
optimizer/scheduler state produces. A global outside it is reported as unsafe; none is ever imported."""

from __future__ import annotations

import _compat_pickle
import os
import re

from ..dtypes import TORCH_STORAGE_DTYPES

# Globals that `torch.save` of tensors, containers, numbers, strings, optimizer/scheduler state and the
# common framework wrappers produces. Matching here only means "not reported": nothing is ever imported.
SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "collections.defaultdict",
        "collections.deque",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "builtins.slice",
        "builtins.bytearray",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "_codecs.encode",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
        "torch.Tensor",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.torch_version.TorchVersion",
        "torch.strided",
        "torch.sparse_coo",
        "torch.sparse_csr",
        "torch.contiguous_format",
        "torch.channels_last",
        "torch.preserve_format",
        "torch.per_tensor_affine",
        "torch.per_channel_affine",
        "torch.serialization._get_layout",
        # numpy arrays and scalars (RNG states saved by HF Trainer / Lightning)
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
        # Lightning's hyper-parameter container is a plain dict subclass
        "lightning.fabric.utilities.data.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "lightning.pytorch.utilities.parsing.AttributeDict",
    }
    | {f"torch.{n}" for n in TORCH_STORAGE_DTYPES}
)
_SAFE_PATTERNS = (
    re.compile(
        r"^torch\.(float|bfloat|int|uint|bool|complex|qint|quint|half|double|long|short|cfloat|cdouble)\w*\Z"
    ),
    re.compile(r"^numpy\.dtypes\.\w+DType\Z"),
)
# HF Trainer's training_args.bin is `torch.save(self.args)`: a TrainingArguments dataclass (or TRL's
# subclass) and the enums and small config objects its fields hold. Every Trainer checkpoint has one and a
# resume never loads it. These exact classes are allowed there only (`context_for`), and only used the way
# pickle rebuilds them without running their code (`inert_use`): an object created empty (NEWOBJ, then its
# fields set by BUILD), an enum looked up by one plain value (REDUCE). The unpicklers check every use where
# it happens (a later walk of the result cannot see a call whose result was dropped); any other use
# reports the class.
TRAINING_ARGS_FILE = "training_args.bin"
_TRL_CONFIGS = (
    ("sft", "SFT"), ("dpo", "DPO"), ("grpo", "GRPO"), ("reward", "Reward"), ("ppo", "PPO"), ("kto", "KTO"),
    ("orpo", "ORPO"), ("cpo", "CPO"), ("bco", "BCO"), ("gkd", "GKD"), ("online_dpo", "OnlineDPO"),
    ("prm", "PRM"), ("xpo", "XPO"), ("nash_md", "NashMD"), ("rloo", "RLOO"),
)  # fmt: skip
_TRAINER_UTILS_ENUMS = (
    "IntervalStrategy", "SaveStrategy", "HubStrategy", "SchedulerType", "FSDPOption", "EvaluationStrategy"
)  # fmt: skip
TRAINING_ARGS_OBJECTS: frozenset[str] = frozenset(
    {
        "transformers.training_args.TrainingArguments",
        "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
        "transformers.trainer_pt_utils.AcceleratorConfig",
        "accelerate.state.PartialState",
        *(f"trl.trainer.{module}_config.{cls}Config" for module, cls in _TRL_CONFIGS),
    }
)
TRAINING_ARGS_ENUMS: frozenset[str] = frozenset(
    {
        *(f"transformers.trainer_utils.{name}" for name in _TRAINER_UTILS_ENUMS),
        "transformers.training_args.OptimizerNames",
        "transformers.training_args.ParallelMode",
        "transformers.debug_utils.DebugOption",
        "accelerate.utils.dataclasses.DistributedType",
    }
)
_GUARDED_CONTEXT = "hf-training-args"


def guarded(qualname: str, context: str | None) -> bool:
    """Whether `qualname` is allowed in `context` only for `inert_use`."""
    return context == _GUARDED_CONTEXT and (
        qualname in TRAINING_ARGS_OBJECTS or qualname in TRAINING_ARGS_ENUMS
    )


def inert_use(qualname: str, args: tuple[object, ...], kwargs: object, how: str) -> bool:
    """Whether using a `guarded` class this way runs none of its code: `how` is "new" (NEWOBJ: the object
    created without __init__), "call" (REDUCE, INST, OBJ: called) or "build" (BUILD: its state set)."""
    if qualname in TRAINING_ARGS_ENUMS:  # SchedulerType("linear") is a lookup; BUILD would rewrite a member
        return how == "call" and not kwargs and len(args) == 1 and type(args[0]) in (str, int)
    return how in ("new", "build") and not args and not kwargs


# Allowed only in the formats (and files) that produce them.
CONTEXT_GLOBALS: dict[str, tuple[re.Pattern[str], ...]] = {
    "torchscript": (re.compile(r"^__torch__\."), re.compile(r"^torch\.jit\._pickle\.\w+\Z")),
    "dcp": (
        re.compile(r"^torch\.distributed\.checkpoint\.[\w.]+\Z"),
        re.compile(r"^pathlib\.(PosixPath|WindowsPath|PurePosixPath|PureWindowsPath)\Z"),
    ),
}


def python3_name(module: str, name: str) -> tuple[str, str]:
    """The (module, name) Python 3's unpickler resolves for a pickled global (fix_imports mapping)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_safe_global(qualname: str, context: str | None = None) -> bool:
    if qualname in SAFE_GLOBALS or any(p.match(qualname) for p in _SAFE_PATTERNS):
        return True
    return guarded(qualname, context) or any(
        p.match(qualname) for p in CONTEXT_GLOBALS.get(context or "", ())
    )


def context_for(path: str) -> str | None:
    """The allowlist context of a pickle by its file's name: HF Trainer's training_args.bin, else none."""
    return _GUARDED_CONTEXT if os.path.basename(path) == TRAINING_ARGS_FILE else None

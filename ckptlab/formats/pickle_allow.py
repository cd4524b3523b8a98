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
        r"^torch\.(float|bfloat|int|uint|bool|complex|qint|quint|half|double|long|short|cfloat|cdouble)\w*$"
    ),
    re.compile(r"^numpy\.dtypes\.\w+DType$"),
)
# HF Trainer's training_args.bin is `torch.save(self.args)`: a TrainingArguments dataclass (or a subclass
# from transformers or TRL) and the enums and small config objects its fields hold. Every Trainer checkpoint
# has one and a resume never loads it. These classes are allowed there only, and only as pickle rebuilds
# them without running their code: objects created empty (NEWOBJ, then their fields set), enums looked up
# by one plain value. `misused_globals` reports any other use (arguments to a class's __init__).
TRAINING_ARGS_FILE = "training_args.bin"
TRAINING_ARGS_OBJECTS = re.compile(
    r"^(transformers\.training_args(_seq2seq)?\.\w*TrainingArguments"
    r"|transformers\.trainer_pt_utils\.AcceleratorConfig"
    r"|accelerate\.state\.PartialState"
    r"|trl\.trainer\.\w+_config\.\w+Config)$"
)
TRAINING_ARGS_ENUMS = re.compile(
    r"^(transformers\.trainer_utils\.(IntervalStrategy|SaveStrategy|HubStrategy|SchedulerType|FSDPOption"
    r"|EvaluationStrategy)"
    r"|transformers\.training_args\.(OptimizerNames|ParallelMode)"
    r"|transformers\.debug_utils\.DebugOption"
    r"|accelerate\.utils\.dataclasses\.DistributedType)$"
)
# Allowed only in the formats (and files) that produce them.
CONTEXT_GLOBALS: dict[str, tuple[re.Pattern[str], ...]] = {
    "hf-training-args": (TRAINING_ARGS_OBJECTS, TRAINING_ARGS_ENUMS),
    "torchscript": (re.compile(r"^__torch__\."), re.compile(r"^torch\.jit\._pickle\.\w+$")),
    "dcp": (
        re.compile(r"^torch\.distributed\.checkpoint\.[\w.]+$"),
        re.compile(r"^pathlib\.(PosixPath|WindowsPath|PurePosixPath|PureWindowsPath)$"),
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
    return any(p.match(qualname) for p in CONTEXT_GLOBALS.get(context or "", ()))


def context_for(path: str) -> str | None:
    """The allowlist context of a pickle by its file's name: HF Trainer's training_args.bin, else none."""
    return "hf-training-args" if os.path.basename(path) == TRAINING_ARGS_FILE else None

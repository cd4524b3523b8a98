"""The static allowlist of pickle globals: what `torch.save` of tensors, containers, numbers, strings and
optimizer/scheduler state produces. A global outside it is reported as unsafe; none is ever imported."""

from __future__ import annotations

import _compat_pickle
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
# Allowed only in the formats that produce them. Exact modules: a pattern open below a package would also
# take a name inside any module of it.
CONTEXT_GLOBALS: dict[str, tuple[re.Pattern[str], ...]] = {
    "torchscript": (re.compile(r"^__torch__\."), re.compile(r"^torch\.jit\._pickle\.\w+\Z")),
    "dcp": (
        re.compile(r"^torch\.distributed\.checkpoint\.(metadata|filesystem|planner|default_planner)\.\w+\Z"),
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
    return any(p.match(qualname) for p in CONTEXT_GLOBALS.get(context or "", ()))

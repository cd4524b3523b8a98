"""ckptlab: a local checkpoint lab. Read, index, validate, diff and prune model checkpoints safely."""

from __future__ import annotations

from .errors import CkptlabError, FormatError
from .formats import detect, read_meta
from .model import CheckpointMeta, TensorMeta

__version__ = "0.1.0"
__all__ = [
    "CheckpointMeta",
    "CkptlabError",
    "FormatError",
    "TensorMeta",
    "__version__",
    "detect",
    "read_meta",
]

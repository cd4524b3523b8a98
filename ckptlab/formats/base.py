"""The one shape every format reader has: a module-level `read(path, limits) -> CheckpointMeta`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..model import CheckpointMeta
from .limits import Limits


class Reader(Protocol):
    """A format reader: parses headers only, never executes anything, raises FormatError on bad input."""

    def __call__(self, path: Path, limits: Limits) -> CheckpointMeta: ...

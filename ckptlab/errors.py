"""One error hierarchy. Every known failure is a CkptlabError whose str() is `PATH: cause`."""

from __future__ import annotations


class CkptlabError(Exception):
    """Base of every error ckptlab raises on purpose; the CLI prints it as one line."""

    def __init__(self, path: str | None, cause: str) -> None:
        self.path = str(path) if path is not None else None
        self.cause = cause
        super().__init__(f"{self.path}: {cause}" if self.path else cause)


class FormatError(CkptlabError):
    """The file is not a checkpoint ckptlab understands, or it is malformed/damaged. `unsafe_globals`: what
    a static scan of the refused file found, once `formats.read_file` has scanned it (None: not scanned)."""

    unsafe_globals: list[str] | None = None


class LimitError(FormatError):
    """A resource cap was hit (header size, tensor count, pickle opcodes, zip entries...)."""


class IncompleteError(FormatError):
    """A multi-file checkpoint is missing a part (a shard listed in an index, a DCP data file)."""


class DeviceError(CkptlabError):
    """A requested device is not available (e.g. `cuda` on a CPU-only machine)."""


class LoadError(CkptlabError):
    """Tensor values could not be materialised (unsupported dtype or layout for loading)."""

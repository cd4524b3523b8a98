"""The GPU-capable tensor loading layer: the only place torch tensors are materialised from files.

Readers record where every tensor's bytes live (`TensorMeta.loc`); this module turns that into a tensor on
the requested device, without unpickling anything:
- torch zip / legacy / HDF5 contiguous / DCP chunks: direct reads of the raw storage bytes through a
  copy-on-write mmap (`torch.frombuffer`), so only the pages of the requested tensor are touched;
- safetensors: `safetensors.safe_open(path, framework="pt", device=...)`, the reference implementation;
- chunked/compressed HDF5: the isolated h5py worker.
Where a tensor was saved (e.g. `cuda:0`) does not matter: it lands on whatever device is asked for.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .errors import DeviceError, LoadError
from .model import CheckpointMeta, DcpLocation, Hdf5Location, RawLocation, SafetensorsLocation, TensorMeta

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024


def _torch():  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a requirement, but say how to fix it if absent
        raise LoadError(None, "loading tensor values needs torch: pip install torch") from None
    return torch


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device if there is one, else CPU; 'cpu'; 'cuda'; 'cuda:N'.

    Raises DeviceError with a fix-it message when CUDA is asked for but absent.
    """
    torch = _torch()
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                None, f"device {spec!r} requested but CUDA is not available; use --device cpu or auto"
            )
        idx = 0 if spec == "cuda" else _parse_index(spec)
        n = torch.cuda.device_count()
        if idx >= n:
            raise DeviceError(None, f"device {spec!r} requested but only {n} CUDA device(s) exist")
        return torch.device(f"cuda:{idx}")
    raise DeviceError(None, f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def _parse_index(spec: str) -> int:
    try:
        idx = int(spec.split(":", 1)[1])
    except ValueError:
        raise DeviceError(None, f"bad device index in {spec!r}") from None
    if idx < 0:
        raise DeviceError(None, f"bad device index in {spec!r}")
    return idx


def available_devices() -> list[str]:
    """Device choices for a UI: 'auto', 'cpu', then with CUDA 'cuda' (the current device) and every
    'cuda:N'."""
    torch = _torch()
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cpu", *(["cuda"] if n else []), *(f"cuda:{i}" for i in range(n))]


def torch_dtype(name: str) -> torch.dtype:
    torch = _torch()
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise LoadError(None, f"dtype {name} cannot be loaded by this torch ({torch.__version__})")
    return dt


def _mmap_tensor(file: str, offset: int, numel: int, dtype: str, byteorder: str = "little") -> torch.Tensor:
    """A 1-D CPU tensor of `numel` elements at `offset` of `file` (a copy-on-write map: never writes)."""
    torch = _torch()
    tdt = torch_dtype(dtype)
    if numel == 0:
        return torch.empty(0, dtype=tdt)
    size = os.path.getsize(file)
    isz = tdt.itemsize
    if offset + numel * isz > size:
        raise LoadError(file, f"tensor bytes [{offset}, {offset + numel * isz}) run past the end of the file")
    with open(file, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    t = torch.frombuffer(mm, dtype=tdt, count=numel, offset=offset)  # the tensor keeps the map alive
    if byteorder != "little" and isz > 1:
        swapped = t.view(torch.uint8).view(-1, isz).flip(1).contiguous()
        t = swapped.view(tdt).reshape(-1)
    return t


def _raw(loc: RawLocation, meta: TensorMeta) -> torch.Tensor:
    torch = _torch()
    offset = loc.offset
    if loc.zip_header:
        from .formats.zipsafe import resolve_data_offset

        with open(loc.file, "rb") as f:
            offset = resolve_data_offset(f, loc.offset, True, loc.file)
    base = _mmap_tensor(loc.file, offset, loc.storage_numel, meta.dtype, loc.byteorder)
    numel = meta.numel
    if loc.stride is None:
        return base[loc.storage_offset : loc.storage_offset + numel].view(meta.shape)
    return torch.as_strided(base, meta.shape, loc.stride, loc.storage_offset)


def _dcp(loc: DcpLocation, meta: TensorMeta) -> torch.Tensor:
    """Assemble a DCP tensor from its chunks; each chunk is a torch.save archive inside a .distcp file."""
    from .formats.limits import DEFAULT_LIMITS
    from .formats.pickle_vm import TensorRef
    from .formats.torch_reader import open_torch_zip, walk_data_pkl, zip_locator
    from .formats.zipsafe import Region

    torch = _torch()
    out = torch.empty(meta.shape, dtype=torch_dtype(meta.dtype))
    for ch in loc.chunks:
        with open(ch.file, "rb") as f:
            region = Region(f, ch.offset, ch.length)
            tz = open_torch_zip(region, ch.length, ch.file, DEFAULT_LIMITS)  # type: ignore[arg-type]
            ref, _ = walk_data_pkl(region, tz, ch.file, DEFAULT_LIMITS)  # type: ignore[arg-type]
            if not isinstance(ref, TensorRef):
                raise LoadError(ch.file, f"DCP chunk of {meta.name} is not a tensor record")
            rel = zip_locator(region, tz, ch.file, ch.length)(ref)  # type: ignore[arg-type]
        piece_meta = TensorMeta(meta.name, ch.chunk_sizes, meta.dtype, 0)
        absolute = RawLocation(
            ch.file,
            ch.offset + rel.offset,
            rel.storage_numel,
            rel.storage_offset,
            rel.stride,
            rel.byteorder,
            rel.zip_header,
        )
        piece = _raw(absolute, piece_meta)
        index = tuple(slice(o, o + s) for o, s in zip(ch.chunk_offsets, ch.chunk_sizes, strict=True))
        out[index] = piece
    return out


def _cpu_tensor(meta: TensorMeta) -> torch.Tensor:
    """The tensor on CPU (zero-copy where the format allows)."""
    loc = meta.loc
    if isinstance(loc, RawLocation):
        return _raw(loc, meta)
    if isinstance(loc, DcpLocation):
        return _dcp(loc, meta)
    if isinstance(loc, Hdf5Location):
        from .formats.hdf5_reader import read_hdf5_dataset
        from .formats.limits import DEFAULT_LIMITS

        torch = _torch()
        raw, dtype, shape = read_hdf5_dataset(loc, DEFAULT_LIMITS)
        if math.prod(shape) == 0:
            return torch.empty(shape, dtype=torch_dtype(dtype))
        return torch.frombuffer(bytearray(raw), dtype=torch_dtype(dtype)).view(shape)
    raise LoadError(None, f"no location recorded for tensor {meta.name}")


def load_tensor(meta: CheckpointMeta, name: str, device: str = "auto") -> torch.Tensor:
    """One tensor of a checkpoint (model weights or other state) on `device`.

    >>> w = load_tensor(read_meta("model.safetensors"), "lm_head.weight", "cpu")  # doctest: +SKIP
    """
    dev = resolve_device(device)
    t = meta.tensor(name)
    try:
        if isinstance(t.loc, SafetensorsLocation):
            from safetensors import safe_open

            with safe_open(t.loc.file, framework="pt", device=str(dev)) as f:
                return f.get_tensor(t.loc.key or t.name)
        return _cpu_tensor(t).to(dev)
    except (OSError, RuntimeError, ValueError) as e:
        raise LoadError(meta.path, f"cannot load tensor {name}: {str(e).splitlines()[0][:200]}") from None


def iter_tensors(
    meta: CheckpointMeta, names: Iterable[str] | None = None, device: str = "auto"
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for the model weights (or the given names), one at a time on `device`."""
    for name in names if names is not None else (t.name for t in meta.tensors):
        yield name, load_tensor(meta, name, device)


def iter_chunks(
    meta: CheckpointMeta, name: str, device: str = "auto", chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[torch.Tensor]:
    """A tensor's values as flat 1-D chunks of about `chunk_bytes`, each moved to `device` in turn.

    Peak memory is one chunk per device, whatever the tensor's size, for mmap-able and safetensors data.
    """
    dev = resolve_device(device)
    t = meta.tensor(name)
    isz = max(1, t.nbytes // max(1, t.numel))
    if t.numel == 0:
        return
    if isinstance(t.loc, SafetensorsLocation):
        from safetensors import safe_open

        with safe_open(t.loc.file, framework="pt", device="cpu") as f:
            key = t.loc.key or t.name
            if not t.shape:
                yield f.get_tensor(key).reshape(-1).to(dev)
                return
            sl = f.get_slice(key)
            row = max(1, math.prod(t.shape[1:]) * isz)
            rows = max(1, chunk_bytes // row)
            for start in range(0, t.shape[0], rows):
                yield sl[start : start + rows].reshape(-1).to(dev)
        return
    flat = _cpu_tensor(t)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    flat = flat.reshape(-1)
    step = max(1, chunk_bytes // isz)
    for start in range(0, flat.numel(), step):
        yield flat[start : start + step].to(dev)

"""HDF5 (`.h5`, `.hdf5`, Keras 2 `.h5`, Keras 3 `.weights.h5`) and Keras 3 `.keras` readers.

libhdf5 is never loaded in this process: every file is parsed by `hdf5_worker` in a child process with a
capped address space and a timeout, and a crash of the child becomes one `FormatError`. This module turns
the child's facts (object paths, attributes, dtypes, offsets) into a `CheckpointMeta`.

    >>> meta = read_hdf5(Path("model.h5"), DEFAULT_LIMITS)      # doctest: +SKIP
    >>> [t.name for t in meta.tensors][:2]                       # doctest: +SKIP
    ['dense/kernel:0', 'dense/bias:0']
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..dtypes import DTYPE_BITS, nbytes_for, numpy_dtype_name
from ..errors import FormatError
from ..model import CheckpointMeta, Entry, Hdf5Location, RawLocation, Safety, TensorMeta
from . import HDF5_SIGNATURE
from . import keras_reader as kr
from .hdf5_client.batch import run_meta
from .hdf5_client.runner import run_dataset
from .limits import Limits

_ZIP_MAGIC = b"PK\x03\x04"
_OPTIMIZER_PREFIXES = {"keras2-model": "optimizer_weights/", "keras3-weights": "optimizer/"}
_STEP_ATTRS = ("step", "global_step")


# ------------------------------------------------------------------------------------------ public API


def read_hdf5(path: Path, limits: Limits) -> CheckpointMeta:
    """Metadata of an HDF5 file (`format="hdf5"`), including Keras 2 models and Keras 3 weights files."""
    result = read_hdf5_many([path], limits)[0]
    if isinstance(result, FormatError):
        raise result
    return result


def read_keras(path: Path, limits: Limits) -> CheckpointMeta:
    """Metadata of a Keras 3 `.keras` zip (`format="keras"`): config.json, metadata.json, model.weights.h5.
    Same path as `read_hdf5`, which tells the two apart by content."""
    return read_hdf5(path, limits)


def read_hdf5_many(
    paths: Sequence[Path], limits: Limits, workers: int | None = None
) -> list[CheckpointMeta | FormatError]:
    """Read many HDF5 / `.keras` files through the pooled h5py workers (replaced only after a crash).

    Returns one result per path, in order: a `CheckpointMeta`, or the `FormatError` that reading it raised,
    so one bad file never stops a scan. A path whose content starts like a zip is read as `.keras`. Each
    result is built as the worker answers, while it parses the next files. Pass every file in one call:
    the worker stays warm between calls, but one call lets it stream. `workers` caps the worker processes
    sharing the batch (None: two for a big batch when a core is idle, else one; 1 where the calling process
    keeps a core busy itself, as a scan does).

        >>> results = read_hdf5_many([Path("a.h5"), Path("b.h5")], DEFAULT_LIMITS)    # doctest: +SKIP
    """
    results: list[CheckpointMeta | FormatError | None] = [None] * len(paths)
    jobs: list[tuple[int, Path, int, kr.KerasArchive | None]] = []
    items: list[dict[str, Any]] = []
    for i, path in enumerate(paths):
        path = Path(path)
        try:
            size, archive = _precheck(path, limits)
        except FormatError as exc:
            results[i] = exc
            continue
        member = archive.weights_member if archive else None
        items.append({"path": str(path), "member": member, "size": size})
        jobs.append((i, path, size, archive))
    for k, answer in run_meta(items, limits, workers):
        i, path, size, archive = jobs[k]
        if isinstance(answer, FormatError):
            results[i] = answer
            continue
        try:
            results[i] = _build_meta(path, size, answer, archive)
        except FormatError as exc:
            results[i] = exc
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # facts not shaped as the worker writes them: a worker that went wrong, not this file
            results[i] = FormatError(str(path), f"HDF5 worker sent malformed facts ({exc!r})")
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def read_hdf5_dataset(loc: Hdf5Location, limits: Limits) -> tuple[bytes, str, tuple[int, ...]]:
    """(raw C-order little-endian bytes, canonical dtype, shape) of one dataset, read by the worker.

    For chunked/compressed datasets and datasets inside a `.keras` zip. Datasets with external raw
    storage or virtual layout are refused: reading them would read other files named by the file.
    """
    header, data = run_dataset(loc.file, loc.member, loc.dataset, limits)
    dtype = _canonical_dtype(header["dtype"], header.get("attr_dtype"))
    if dtype is None:
        raise FormatError(loc.file, f"dataset {loc.dataset} has unsupported dtype {header['dtype']}")
    return data, dtype, tuple(int(n) for n in header["shape"])


def _precheck(path: Path, limits: Limits) -> tuple[int, kr.KerasArchive | None]:
    """(file size, the `.keras` archive or None), checked without HDF5: exists, not empty, zip caps, JSON."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            magic = os.pread(fd, 8, 0)
        finally:
            os.close(fd)
    except IsADirectoryError:
        raise FormatError(p, "is a directory, not a file") from None
    except OSError as exc:
        raise FormatError(p, f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise FormatError(p, "empty file (0 bytes)")
    # content decides; the suffix only makes a non-zip `.keras` fail as a bad archive, not as bad HDF5
    if magic[:4] == _ZIP_MAGIC or (path.suffix == ".keras" and magic != HDF5_SIGNATURE):
        return size, kr.open_keras_archive(path, limits)
    return size, None


def _canonical_dtype(dtype_str: str, attr_dtype: Any) -> str | None:
    """'<f4' -> 'float32'; an opaque 2-byte dataset tagged dtype='bfloat16' (Keras 3 saves so) -> bfloat16."""
    name = numpy_dtype_name(dtype_str)
    if name is not None:
        return name
    code = dtype_str.lstrip("<>|=")
    tagged = isinstance(attr_dtype, str) and attr_dtype in DTYPE_BITS
    if tagged and code.startswith("V") and code[1:].isdigit() and DTYPE_BITS[attr_dtype] == 8 * int(code[1:]):
        return attr_dtype
    return None


class _Dataset(NamedTuple):
    """One dataset as the worker lists it (`["d", path, addr, ...]`, see hdf5_worker)."""

    path: str
    addr: int
    shape: list[int] | None
    dtype: str
    kind: str
    layout: str
    offset: int | None
    storage_size: int
    attrs: dict[str, Any]
    external: list[list[Any]]
    virtual: list[list[str]]


class _Builder:
    """Turns the worker's object list into tensors, entries and findings for one file."""

    def __init__(self, path: Path, size: int, facts: dict[str, Any], member: str | None) -> None:
        self.file = str(path)
        self.member = member
        self.size = size
        self.groups: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, _Dataset] = {}
        self.entries: list[Entry] = []
        self.unsafe: list[str] = []
        self.findings: list[str] = []
        self.warnings: list[str] = []
        for obj in facts["objects"]:
            kind, p = obj[0], obj[1]
            if kind == "g":
                self.groups[p] = obj[2]
            elif kind == "d":
                ds = self.datasets[p] = _Dataset(*obj[1:])
                if ds.external or ds.virtual:
                    self._dataset_safety(ds)
            elif kind == "e":
                self._unsafe("h5py.ExternalLink", f"external link /{p} -> {obj[2]}:{obj[3]}")
            elif kind == "s":
                self.entries.append(Entry(p, "link", f"soft link -> {obj[2]}"))
        self.root_attrs = self.groups.get("", {})
        for name, value in self.root_attrs.items():
            if isinstance(value, dict) and "__omitted__" in value:
                size = value["__omitted__"]
                self.warnings.append(f"root attribute {name!r} omitted ({size} bytes, over the cap)")

    def _unsafe(self, global_name: str, finding: str) -> None:
        if global_name not in self.unsafe:
            self.unsafe.append(global_name)
        self.findings.append(finding)

    def _dataset_safety(self, ds: _Dataset) -> None:
        for name, _offset, _size in ds.external:
            self._unsafe("h5py.ExternalStorage", f"external storage /{ds.path} -> {name}")
        for src_file, src_dset in ds.virtual:
            self._unsafe("h5py.VirtualDataset", f"virtual dataset /{ds.path} -> {src_file}:{src_dset}")

    def tensor(self, name: str, ds: _Dataset) -> TensorMeta | None:
        """A TensorMeta for a numeric dataset; anything else becomes an entry and gives None."""
        dims, kind = ds.shape, ds.kind
        dtype = _canonical_dtype(ds.dtype, ds.attrs.get("dtype")) if dims is not None else None
        if dtype is None or kind not in ("numeric", "opaque"):
            shape_str = "no data" if dims is None else f"shape {tuple(dims)}"
            what = kind if kind != "numeric" else f"unsupported dtype {ds.dtype}"
            self.entries.append(Entry(name, "dataset", f"{what} dataset, {shape_str}"))
            return None
        shape = tuple(map(int, dims))
        numel = math.prod(shape)
        nbytes = nbytes_for(dtype, numel)
        loc = self._loc(ds, numel, nbytes)
        # hard links give one dataset several names: the object address makes them tied tensors
        return TensorMeta(name, shape, dtype, nbytes, f"h5:{ds.addr}", loc)

    def _loc(self, ds: _Dataset, numel: int, nbytes: int) -> RawLocation | Hdf5Location | None:
        if ds.external or ds.virtual:
            return None  # their bytes live in other files the checkpoint names; never read them
        offset = ds.offset
        raw_ok = (
            self.member is None
            and ds.layout == "contiguous"
            and offset is not None
            and ds.storage_size == nbytes
            and offset >= 0
            and offset + nbytes <= self.size
        )
        if raw_ok:
            order = "big" if ds.dtype.startswith(">") else "little"
            return RawLocation(self.file, int(offset), numel, 0, None, order)
        return Hdf5Location(self.file, "/" + ds.path, self.member)

    def add(self, name: str, ds: _Dataset, into: list[TensorMeta]) -> None:
        t = self.tensor(name, ds)
        if t is not None:
            into.append(t)


def _layout(b: _Builder, keras_archive: bool) -> str:
    if keras_archive:
        return "keras3-weights"
    ra = b.root_attrs
    if "model_config" in ra or kr.attr_list(b.groups.get("model_weights", {}), "layer_names"):
        return "keras2-model"
    if kr.attr_list(ra, "layer_names"):
        return "keras2-weights"
    if kr.is_keras3_weights(list(b.datasets), ra):
        return "keras3-weights"
    return "generic"


def _build_meta(
    path: Path, size: int, facts: dict[str, Any], archive: kr.KerasArchive | None
) -> CheckpointMeta:
    b = _Builder(path, size, facts, archive.weights_member if archive else None)
    layout = _layout(b, archive is not None)
    tensors: list[TensorMeta] = []
    others: list[TensorMeta] = []
    metadata: dict[str, Any] = {"hdf5_layout": layout}
    remaining = dict(b.datasets)

    if layout in ("keras2-model", "keras2-weights"):
        root = "model_weights" if layout == "keras2-model" else ""
        for name, dpath in kr.keras2_weight_paths(root, b.groups, b.warnings):
            ds = remaining.pop(dpath, None)
            if ds is None:
                b.warnings.append(f"weight {name!r} listed in weight_names has no dataset /{dpath}")
            else:
                b.add(name, ds, tensors)
    # what no Keras 2 weight list claimed: optimizer state by prefix, everything else a tensor by its path
    opt_prefix = _OPTIMIZER_PREFIXES.get(layout if layout != "keras2-weights" else "keras2-model")
    # HDF5 lists names alphabetically ('vars/10' before 'vars/2'): sort naturally, except that Keras 2
    # lists its optimizer weights in creation order in an attribute
    order = (
        kr.attr_list(b.groups.get("optimizer_weights", {}), "weight_names")
        if layout.startswith("keras2")
        else []
    )
    rank = {f"optimizer_weights/{w}": i for i, w in enumerate(order)}
    names = sorted(remaining, key=lambda n: (rank.get(n, len(rank)), kr.natural_key(n)))
    for dpath in names:
        is_opt = opt_prefix is not None and dpath.startswith(opt_prefix)
        b.add(dpath, remaining[dpath], others if is_opt else tensors)

    framework = "keras" if layout != "generic" else None
    entries: list[Entry] = []
    docs = None
    if layout.startswith("keras2"):
        docs = kr.keras2_docs(b.file, b.root_attrs, b.groups.get("model_weights", {}))
    elif archive is not None:
        docs = kr.keras3_docs(archive)
    if docs is not None:
        metadata.update(docs.metadata)
        entries += docs.entries
        b.unsafe += [g for g in docs.unsafe if g not in b.unsafe]
        b.findings += [f for f in docs.findings if f not in b.findings]
    if others:
        opt_group = "optimizer_weights" if layout.startswith("keras2") else "optimizer"
        opt_name = _optimizer_name(b, opt_group, metadata)
        summary = f"{opt_name + ', ' if opt_name else ''}{len(others)} tensors"
        entries.append(Entry(opt_group, "optimizer", summary))
    step, epoch, metrics = _progress(b.root_attrs)
    return CheckpointMeta(
        path=str(path),
        format="keras" if archive is not None else "hdf5",
        size_bytes=b.size,
        tensors=tuple(tensors),
        step=step,
        epoch=epoch,
        metrics=metrics,
        has_optimizer=bool(others),
        metadata=metadata,
        entries=tuple(entries + b.entries),
        safety=Safety(tuple(b.unsafe), tuple(b.findings)),
        layout="file",
        framework=framework,
        files=(str(path),),
        other_tensors=tuple(others),
        warnings=tuple(b.warnings) + (archive.warnings if archive else ()),
    )


def _optimizer_name(b: _Builder, group: str, metadata: dict[str, Any]) -> str | None:
    if isinstance(metadata.get("optimizer"), str):
        return metadata["optimizer"]
    name = b.groups.get(f"{group}/vars", {}).get("name")  # Keras 3 names the optimizer's vars group
    return name if isinstance(name, str) else None


def _progress(root_attrs: dict[str, Any]) -> tuple[int | None, int | float | None, dict[str, float]]:
    """step / epoch / metrics from root attributes (`step`, `global_step`, `epoch`, float scalars)."""
    step: int | None = None
    epoch: int | float | None = None
    metrics: dict[str, float] = {}
    for key, value in root_attrs.items():
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # h5py stores a Python scalar as a 1-element array by some writers
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in _STEP_ATTRS and isinstance(value, int):
            step = value if step is None or key == "step" else step
        elif key == "epoch":
            epoch = value
        elif isinstance(value, float):
            metrics[key] = value
    return step, epoch, metrics

"""Value statistics and histograms of tensors, streamed chunk by chunk through the loading layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..loading import DEFAULT_CHUNK_BYTES, iter_chunks, resolve_device
from ..model import CheckpointMeta, TensorStats


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]  # bins + 1
    counts: tuple[int, ...]
    nan_count: int
    inf_count: int


def _as_float(chunk):  # type: ignore[no-untyped-def]
    import torch

    if chunk.is_complex():
        return chunk.abs().double()
    if chunk.dtype == torch.float64:
        return chunk
    return chunk.to(torch.float32) if chunk.dtype != torch.float32 else chunk


def tensor_stats(
    meta: CheckpointMeta, name: str, device: str = "auto", chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> TensorStats:
    """min/max/mean/std/L2 norm and NaN/Inf/zero counts of one tensor, over finite values, in float64
    accumulators so that large low-precision tensors do not lose the sums."""
    import torch

    dev = resolve_device(device)
    t = meta.tensor(name)
    n = nan = inf = zeros = 0
    total = 0.0
    sq = 0.0
    lo, hi = math.inf, -math.inf
    for chunk in iter_chunks(meta, name, str(dev), chunk_bytes):
        x = _as_float(chunk)
        finite = torch.isfinite(x)
        nan += int(torch.isnan(x).sum())
        inf += int(torch.isinf(x).sum())
        zeros += int((x == 0).sum())
        v = x[finite].double()
        if v.numel():
            n += v.numel()
            total += float(v.sum())
            sq += float((v * v).sum())
            lo = min(lo, float(v.min()))
            hi = max(hi, float(v.max()))
    mean = total / n if n else None
    var = max(0.0, sq / n - (total / n) ** 2) if n else None
    # unbiased std like torch.std, from the streamed sums
    std = math.sqrt(var * n / (n - 1)) if n and n > 1 and var is not None else (0.0 if n == 1 else None)
    return TensorStats(
        name=name,
        dtype=t.dtype,
        shape=t.shape,
        numel=t.numel,
        min=lo if n else None,
        max=hi if n else None,
        mean=mean,
        std=std,
        norm=math.sqrt(sq) if n else None,
        nan_count=nan,
        inf_count=inf,
        zero_count=zeros,
        device=str(dev),
    )


def histogram(
    meta: CheckpointMeta,
    name: str,
    device: str = "auto",
    bins: int = 64,
    stats: TensorStats | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Histogram:
    """Histogram of the finite values of one tensor (two streamed passes unless `stats` is given)."""
    import torch

    dev = resolve_device(device)
    s = stats or tensor_stats(meta, name, str(dev), chunk_bytes)
    if s.min is None or s.max is None:
        return Histogram((), (), s.nan_count, s.inf_count)
    lo, hi = s.min, s.max
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.zeros(bins, dtype=torch.float64, device=dev)
    for chunk in iter_chunks(meta, name, str(dev), chunk_bytes):
        x = _as_float(chunk)
        v = x[torch.isfinite(x)].to(torch.float32)
        if v.numel():
            counts += torch.histc(v, bins=bins, min=lo, max=hi).double()
    step = (hi - lo) / bins
    edges = (*(lo + i * step for i in range(bins)), hi)
    return Histogram(edges, tuple(int(c) for c in counts.tolist()), s.nan_count, s.inf_count)


def all_stats(
    meta: CheckpointMeta,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
    names: list[str] | None = None,
) -> list[TensorStats]:
    """Stats of every model tensor (or `names`), reporting (done, total, name) to `progress`."""
    todo = names if names is not None else [t.name for t in meta.tensors]
    out = []
    for i, name in enumerate(todo):
        out.append(tensor_stats(meta, name, device))
        if progress:
            progress(i + 1, len(todo), name)
    return out

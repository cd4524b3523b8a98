"""The Inspect page's cached reads (metadata, stats, figures) and its tensor and module tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from .. import plots
from ..errors import CkptlabError
from ..formats import read_meta
from ..model import CheckpointMeta, Entry, TensorMeta, shape_str

if TYPE_CHECKING:
    from ..analysis.stats import Histogram
    from ..model import TensorStats
    from ..plots import ModuleRow

from .common import (
    first_line,
)

log = logging.getLogger(__name__)


def signature(path: Path) -> tuple[Any, ...]:
    """What must change for a cached read to be stale: size + mtime of the file, or of a directory's files.

    Raises OSError when the path is missing."""
    s = path.stat()
    if not path.is_dir():
        return (s.st_size, s.st_mtime_ns)
    parts: list[tuple[str, int, int]] = []
    with os.scandir(path) as it:
        for e in it:
            if e.is_file():
                es = e.stat()
                parts.append((e.name, es.st_size, es.st_mtime_ns))
    return (s.st_mtime_ns, tuple(sorted(parts)))


@st.cache_data(max_entries=512, show_spinner=False)
def _read_meta_cached(path: str, sig: tuple[Any, ...]) -> tuple[CheckpointMeta | None, str | None, str]:
    # Errors are cached too (as data): every widget change reruns the page, and a bad file stays bad
    # until its signature changes. CheckpointMeta is a frozen dataclass of plain values: it pickles.
    try:
        return read_meta(path), None, ""
    except CkptlabError as e:
        return None, e.path, e.cause
    except Exception as e:  # a reader bug must not take the page down; the log keeps the traceback
        log.exception("read_meta(%s) failed", path)
        return None, path, f"unexpected {type(e).__name__}: {first_line(str(e))}"


def load_meta(path: str | Path) -> CheckpointMeta:
    """`read_meta(path)` cached by (path, size, mtime); raises CkptlabError like `read_meta`."""
    return load_meta_with_signature(path)[0]


def load_meta_with_signature(path: str | Path) -> tuple[CheckpointMeta, tuple[Any, ...]]:
    """`load_meta(path)` and the `signature` it was read under: a page passes that on to
    `checkpoint_figures` and `load_stats` rather than stat the checkpoint again for each."""
    p = Path(path).expanduser()
    try:
        sig = signature(p)
    except OSError as e:
        cause = "no such file or directory" if isinstance(e, FileNotFoundError) else f"cannot read: {e}"
        raise CkptlabError(str(p), cause) from None
    meta, err_path, cause = _read_meta_cached(str(p), sig)
    if meta is None:
        raise CkptlabError(err_path, cause)
    return meta, sig


@st.cache_data(max_entries=64, show_spinner=False)
def _stats_cached(
    path: str, sig: tuple[Any, ...], name: str, device: str, bins: int, _meta: CheckpointMeta
) -> tuple[TensorStats, Histogram]:
    from ..analysis.stats import histogram, tensor_stats

    stats = tensor_stats(_meta, name, device=device)
    return stats, histogram(_meta, name, device=device, bins=bins, stats=stats)


def load_stats(
    meta: CheckpointMeta, name: str, sig: tuple[Any, ...], device: str = "auto", bins: int = 64
) -> tuple[TensorStats, Histogram]:
    """Stats and histogram of one tensor, cached by (checkpoint path + signature, tensor, device, bins);
    `sig` is the checkpoint's signature, as `load_meta_with_signature` gave it with `meta`.

    Raises CkptlabError (e.g. DeviceError, LoadError) uncached."""
    return _stats_cached(meta.path, sig, name, device, bins, meta)


@st.cache_resource(max_entries=16, show_spinner=False)
def _figures_cached(path: str, sig: tuple[Any, ...], _meta: CheckpointMeta) -> dict[str, go.Figure]:
    # cache_resource, not cache_data: unpickling a big treemap re-validates it (slower than building it).
    # st.plotly_chart does not mutate a figure, so sharing the objects between sessions is safe.
    return {
        "dtype": plots.dtype_figure(_meta.dtypes),
        "largest": plots.largest_tensors_figure(_meta.tensors, top_n=15),
        "treemap": plots.module_treemap(_meta.tensors),
    }


def checkpoint_figures(meta: CheckpointMeta, sig: tuple[Any, ...]) -> dict[str, go.Figure]:
    """The page's metadata figures ('dtype', 'largest', 'treemap'), built once per checkpoint version:
    a big model's treemap takes a noticeable fraction of a second, and every widget change reruns the page.
    `sig` as for `load_stats`."""
    return _figures_cached(meta.path, sig, meta)


# ---------------------------------------------------------------------------------------------- display


def _matches(text: str, query: str) -> bool:
    """Whether `text` contains every whitespace-separated term of `query` (case-insensitive)."""
    low = text.lower()
    return all(term in low for term in query.lower().split())


def filter_tensors(tensors: Iterable[TensorMeta], query: str) -> list[TensorMeta]:
    """Tensors whose name matches every term of `query`."""
    return [t for t in tensors if _matches(t.name, query)]


def filter_modules(rows: Iterable[ModuleRow], query: str, max_depth: int) -> list[ModuleRow]:
    """Module rows no deeper than `max_depth` whose prefix matches every term of `query`."""
    return [r for r in rows if r.depth <= max_depth and _matches(r.prefix, query)]


def tensor_frame(tensors: Sequence[TensorMeta]) -> pd.DataFrame:
    """One row per tensor: name, shape, dtype, params, bytes (raw numbers; the column config formats)."""
    return pd.DataFrame(
        {
            "tensor": [t.name for t in tensors],
            "shape": [shape_str(t.shape) for t in tensors],
            "dtype": [t.dtype for t in tensors],
            "params": [t.numel for t in tensors],
            "bytes": [t.nbytes for t in tensors],
        }
    )


def module_frame(rows: list[ModuleRow], total: int) -> pd.DataFrame:
    """Module-tree rows as a table with each module's share of all parameters."""
    return pd.DataFrame(
        {
            "module": [r.prefix for r in rows],
            "depth": [r.depth for r in rows],
            "params": [r.n_params for r in rows],
            "share": [r.n_params / total if total else 0.0 for r in rows],
            "tensors": [r.n_tensors for r in rows],
        }
    )


def column_config() -> dict[str, Any]:
    """Shared column formats of the Inspect tables: exact counts and byte sizes with thousands separators."""
    cc = st.column_config
    return {
        "tensor": cc.TextColumn("tensor", width="large"),
        "module": cc.TextColumn("module", width="large"),
        "params": cc.NumberColumn("params", format="localized", help="parameter count (elements)"),
        "tensors": cc.NumberColumn("tensors", format="localized"),
        # Exact bytes, not format="bytes": that one writes decimal units ('524.3KB') while the rest of the
        # app (charts, cards, home table) writes binary ones ('512.0 KiB'); a number still sorts as one.
        "bytes": cc.NumberColumn(
            "bytes", format="localized", help="tensor data in bytes (1 KiB = 1,024 bytes)"
        ),
        "share": cc.ProgressColumn("share", format="percent", min_value=0.0, max_value=1.0),
        "depth": cc.NumberColumn("depth", width="small"),
    }


# st.dataframe's fixed geometry (Streamlit's docs give the same formula): a 35 px header, 35 px rows, 3 px of
# border. The default 400 px shows 10.4 rows, so the last visible row is cut in half.
_ROW_PX, _TABLE_EXTRA_PX = 35, 3


def table_height(n_rows: int, max_rows: int = 12) -> int:
    """A dataframe height that shows whole rows: all `n_rows`, or `max_rows` and a scrollbar."""
    return (min(max(n_rows, 1), max_rows) + 1) * _ROW_PX + _TABLE_EXTRA_PX


def other_tensors_label(n_shown: int, n_total: int, query: str) -> str:
    """The non-model tensors expander's label; says when the tensor filter above also narrows it, which a
    bare count ('0' next to the header's '124 non-model tensors') does not.

    >>> other_tensors_label(0, 124, "attention")
    'Non-model tensors (optimizer state etc.): 0 of 124 match the filter'
    >>> other_tensors_label(124, 124, " ")
    'Non-model tensors (optimizer state etc.): 124'
    """
    label = "Non-model tensors (optimizer state etc.): "
    if query.strip():
        return label + f"{n_shown:,} of {n_total:,} match the filter"
    return label + f"{n_total:,}"


def entry_frame(entries: Sequence[Entry]) -> pd.DataFrame:
    """One row per non-tensor entry: name, kind, summary."""
    return pd.DataFrame([e.to_json() for e in entries], columns=["name", "kind", "summary"])


def entry_column_config() -> dict[str, Any]:
    """The entries table's columns: the summary (e.g. a TrainingArguments digest) gets the room."""
    cc = st.column_config
    return {
        # A stretched table scales these widths in proportion: the summary ends up with about three quarters
        # of the page, the name column still holds 'pytorch-lightning_version'.
        "name": cc.TextColumn("name", width=160),
        "kind": cc.TextColumn("kind", width=90),
        "summary": cc.TextColumn("summary", width=700),
    }


def relative_files(path: str, files: Iterable[str]) -> list[str]:
    """`files` relative to the checkpoint: to `path` itself when it is a folder (a Trainer checkpoint),
    else to its folder (a shard index next to its shards); a file outside it keeps its full path.

    The checkpoint's own path is in the caption above the table: repeating it on every row cut the shard
    names off. No stat: a file under `path` means `path` is the folder.

    >>> relative_files("/c/ckpt", ["/c/ckpt/model.safetensors", "/elsewhere/x.bin"])
    ['model.safetensors', '/elsewhere/x.bin']
    >>> relative_files("/c/m.index.json", ["/c/m.index.json", "/c/m-00001.bin"])
    ['m.index.json', 'm-00001.bin']
    """
    files = list(files)
    root = path.rstrip(os.sep) or os.sep
    if not any(f.startswith(root + os.sep) for f in files):
        root = os.path.dirname(root)
    prefix = root.rstrip(os.sep) + os.sep
    return [f[len(prefix) :] if f.startswith(prefix) and len(f) > len(prefix) else f for f in files]


def stats_caption(stats: TensorStats) -> str:
    """The line above a tensor's stats: name, dtype, shape in brackets (a bare 'float32 8' reads as two
    numbers), value count, device.

    >>> from ckptlab.model import TensorStats
    >>> stats_caption(TensorStats("w", "float32", (8,), 8, *[None] * 5, 0, 0, 0, "cpu"))
    'w  ·  float32 [8]  ·  8 values  ·  computed on cpu'
    >>> stats_caption(TensorStats("step", "int64", (), 1, *[None] * 5, 0, 0, 0, "cpu"))
    'step  ·  int64 scalar  ·  1 value  ·  computed on cpu'
    """
    shape = f"[{shape_str(stats.shape)}]" if stats.shape else "scalar"
    # model.plural writes no thousands separator; a tensor's value count needs one
    values = f"{stats.numel:,} {'value' if stats.numel == 1 else 'values'}"
    return f"{stats.name}  ·  {stats.dtype} {shape}  ·  {values}  ·  computed on {stats.device}"

"""Shared Streamlit glue for `app.py` and `pages/`: cached reads, common widgets, error display.

This is the only module in the package that imports Streamlit. Logic lives elsewhere in `ckptlab`; what is
here decides how things are cached and shown. The checkpoint walk (`find_checkpoints`) is a stop-gap until
the index (`ckptlab.index`) lands.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from . import plots
from .errors import CkptlabError
from .formats import read_meta
from .model import CheckpointMeta, Safety, TensorMeta

if TYPE_CHECKING:
    from .analysis.stats import Histogram
    from .model import TensorStats
    from .plots import ModuleRow

log = logging.getLogger(__name__)

ROOT_ENV = "CKPTLAB_ROOT"
ROOT_KEY = "ckptlab_root"  # session-state key (not a widget key, so it survives page switches)
PATH_KEY = "path"  # the Inspect page's path box; bound to the `?path=` query parameter

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".h5", ".hdf5", ".keras")
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json")
_HF_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.")
_SKIP_DIRS = {"__pycache__", "node_modules", ".git", ".venv", "venv", "wandb"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


# ---------------------------------------------------------------------------------------------- finding


def find_checkpoints(root: Path, limit: int = 500) -> list[Path]:
    """Logical checkpoints under `root`, sorted: checkpoint files, sharded `*.index.json` files (their shards
    are not listed again), HF `checkpoint-N/` directories and DCP directories (a `.metadata` file).

    Hidden and tool directories are skipped; at most `limit` results.
    """
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here != root and (_HF_CHECKPOINT_DIR.match(here.name) or ".metadata" in filenames):
            found.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        has_index = any(f.endswith(INDEX_SUFFIXES) for f in filenames)
        for f in sorted(filenames):
            if f.endswith(INDEX_SUFFIXES) or (
                f.endswith(CHECKPOINT_SUFFIXES) and not (has_index and _SHARD.search(f))
            ):
                found.append(here / f)
        if len(found) >= limit:
            break
    return sorted(found, key=natural_key)[:limit]


def natural_key(path: Path | str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting `checkpoint-64` before `checkpoint-128` (digit runs compare as numbers)."""
    return tuple((0, int(tok)) if tok.isdigit() else (1, tok) for tok in re.split(r"(\d+)", str(path)) if tok)


@st.cache_data(ttl=15, max_entries=32, show_spinner="Looking for checkpoints…")
def _find_cached(root: str) -> list[str]:
    return [str(p) for p in find_checkpoints(Path(root))]


def list_checkpoints(root: Path | None) -> list[Path]:
    """`find_checkpoints(root)` cached for a few seconds: every widget change reruns the page, and a big
    folder takes a while to walk. `rescan()` forgets the cache."""
    return [Path(p) for p in _find_cached(str(root))] if root is not None else []


def rescan() -> None:
    """Forget the cached folder listings (the metadata cache is keyed by size + mtime and stays valid)."""
    _find_cached.clear()


def relative(path: str | Path, root: Path | None) -> str:
    """`path` relative to `root` when it lies under it, else as given."""
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return str(path)


def group_by_folder(items: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(relative name, path) pairs grouped by their first folder, order kept: ("run", [("last.pt", ...)]).

    Top-level files form the group "" (listed first)."""
    groups: dict[str, list[tuple[str, str]]] = {"": []}
    for rel, path in items:
        head, sep, rest = rel.partition("/")
        key, label = (head, rest) if sep else ("", rel)
        groups.setdefault(key, []).append((label, path))
    return [(k, v) for k, v in groups.items() if v]


# ---------------------------------------------------------------------------------------------- root


@st.cache_resource(show_spinner="Building the demo checkpoints (first start only)…")
def _demo_root() -> tuple[str | None, str | None]:
    """(demo dir, None) or (None, why not): built once per server process, then reused."""
    try:
        from .demo import ensure_demo

        return str(ensure_demo()), None
    except Exception as e:  # the demo is a nicety: never let it break the app
        log.exception("building the demo failed")
        return None, f"the built-in demo is unavailable ({type(e).__name__}: {first_line(str(e))})"


def default_root() -> tuple[Path | None, str | None]:
    """The folder the app lists: `$CKPTLAB_ROOT` if set, else the built-in demo (built on first use).

    Returns (root or None, a note to show when there is none)."""
    env = os.environ.get(ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser(), None
    root, note = _demo_root()
    return (Path(root) if root else None), note


def current_root() -> tuple[Path | None, str | None]:
    """The root chosen on the home page in this session, else `default_root()`."""
    chosen = st.session_state.get(ROOT_KEY)
    if chosen:
        return Path(chosen).expanduser(), None
    return default_root()


# ---------------------------------------------------------------------------------------------- cached reads


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
    # Errors are cached too (as data): the home table re-reads every rerun, and a bad file stays bad
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
    p = Path(path).expanduser()
    try:
        sig = signature(p)
    except OSError as e:
        cause = "no such file or directory" if isinstance(e, FileNotFoundError) else f"cannot read: {e}"
        raise CkptlabError(str(p), cause) from None
    meta, err_path, cause = _read_meta_cached(str(p), sig)
    if meta is None:
        raise CkptlabError(err_path, cause)
    return meta


@st.cache_data(max_entries=64, show_spinner=False)
def _stats_cached(
    path: str, sig: tuple[Any, ...], name: str, device: str, bins: int, _meta: CheckpointMeta
) -> tuple[TensorStats, Histogram]:
    from .analysis.stats import histogram, tensor_stats

    stats = tensor_stats(_meta, name, device=device)
    return stats, histogram(_meta, name, device=device, bins=bins, stats=stats)


def load_stats(
    meta: CheckpointMeta, name: str, device: str = "auto", bins: int = 64
) -> tuple[TensorStats, Histogram]:
    """Stats and histogram of one tensor, cached by (checkpoint path + signature, tensor, device, bins).

    Raises CkptlabError (e.g. DeviceError, LoadError) uncached."""
    try:
        sig = signature(Path(meta.path))
    except OSError:
        sig = ()
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


def checkpoint_figures(meta: CheckpointMeta) -> dict[str, go.Figure]:
    """The page's metadata figures ('dtype', 'largest', 'treemap'), built once per checkpoint version:
    a big model's treemap takes a noticeable fraction of a second, and every widget change reruns the page."""
    try:
        sig = signature(Path(meta.path))
    except OSError:
        sig = ()
    return _figures_cached(meta.path, sig, meta)


# ---------------------------------------------------------------------------------------------- display


def first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def md_escape(text: str) -> str:
    """Text shown literally inside Streamlit markdown (paths and globals are full of `_`, `.` and `:`)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def error_line(exc: BaseException) -> str:
    """One line for the user: `PATH: cause` for ckptlab errors, `Type: message` for anything else."""
    if isinstance(exc, CkptlabError):
        return first_line(str(exc))
    return f"{type(exc).__name__}: {first_line(str(exc))}"


def show_error(exc: BaseException) -> None:
    """One `st.error` line, never a traceback."""
    st.error(md_escape(error_line(exc)), icon=":material/error:")


_PAGE_CSS = """
<style>
/* metric values at a size where 'safetensors-sharded' or '-0.01234' fit a card in a 6-8 column row */
[data-testid="stMetricValue"] { font-size: 1.6rem; }
</style>
"""


def page_style() -> None:
    """The few style tweaks every ckptlab page shares."""
    st.html(_PAGE_CSS)


def safety_badge(safety: Safety) -> None:
    """Green when nothing outside the allowlist was seen; red listing the unsafe globals and findings."""
    if safety.safe:
        st.success(
            "**Safe** — nothing outside the allowlist (checked statically; nothing was imported or run)",
            icon=":material/verified_user:",
        )
        return
    names = ", ".join(f"`{g}`" for g in safety.unsafe_globals)
    lines = [f"**Unsafe:** {names} — never load this file with `torch.load(weights_only=False)`"]
    lines += [f"- {md_escape(f)}" for f in safety.findings]
    st.error("\n".join(lines), icon=":material/gpp_bad:")


def device_selector(key: str = "device") -> str:
    """A device selectbox (`auto`, `cpu`, `cuda:N`...); 'cpu' when torch is unavailable."""
    try:
        from .loading import available_devices

        options = available_devices()
    except (CkptlabError, ImportError) as e:
        st.caption(md_escape(error_line(e)))
        return "cpu"
    return st.selectbox(
        "Device",
        options,
        index=0,
        key=key,
        help="Where tensor values are loaded and reduced. auto = the first CUDA GPU if any, else CPU.",
    )


def _on_pick(pick_key: str) -> None:
    picked = st.session_state.get(pick_key)
    if picked:
        st.session_state[PATH_KEY] = picked


def checkpoint_picker(root: Path | None) -> str | None:
    """A path box bound to `?path=` plus, when `root` holds checkpoints, a selectbox of them.

    Returns the stripped path, or None when nothing is chosen yet."""
    found = [str(p) for p in list_checkpoints(root)]
    left, right = st.columns([2, 3]) if found else (None, st.container())
    with right:
        value = st.text_input(
            "Checkpoint path",
            key=PATH_KEY,
            bind="query-params",
            placeholder="/path/to/model.safetensors, a .pt/.ckpt/.h5 file, or a checkpoint-N/ directory",
            help="A file or a multi-file checkpoint directory. The URL's ?path= sets it (pages link here).",
        )
    path = (value or "").strip()
    if left is not None:
        pick_key = "_ckptlab_pick"
        # keep the selectbox in step with the path box (set before the widget is created this run)
        st.session_state[pick_key] = path if path in found else None
        with left:
            st.selectbox(
                f"Checkpoints under {root}",
                found,
                index=None,
                key=pick_key,
                format_func=lambda p: relative(p, root),
                placeholder=f"{len(found)} found — pick one",
                on_change=_on_pick,
                args=(pick_key,),
            )
    return path or None


def root_selector() -> tuple[Path | None, str | None]:
    """A folder box (default: `default_root()`); the choice is kept for the session, across pages."""
    root, _note = current_root()
    box = "_ckptlab_root_box"
    if box not in st.session_state:  # widget state is dropped on page switch: seed it again
        st.session_state[box] = str(root) if root else ""

    def changed() -> None:
        st.session_state[ROOT_KEY] = st.session_state[box].strip()

    left, right = st.columns([8, 1], vertical_alignment="bottom")
    left.text_input(
        "Checkpoint folder",
        key=box,
        on_change=changed,
        help=f"Listed recursively. Defaults to ${ROOT_ENV} when set, else the built-in demo.",
    )
    right.button(
        "Rescan",
        icon=":material/refresh:",
        on_click=rescan,
        key="_ckptlab_rescan",
        help="Look for new checkpoints now (the listing is otherwise refreshed every 15 s).",
        width="stretch",
    )
    return current_root()


# ---------------------------------------------------------------------------------------------- tables


def shape_str(shape: tuple[int, ...]) -> str:
    """(4096, 11008) -> '4096 × 11008'; () -> 'scalar'."""
    return " × ".join(map(str, shape)) if shape else "scalar"


def filter_tensors(tensors: Iterable[TensorMeta], query: str) -> list[TensorMeta]:
    """Tensors whose name contains every whitespace-separated term of `query` (case-insensitive)."""
    terms = query.lower().split()
    return [t for t in tensors if all(term in t.name.lower() for term in terms)]


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


def checkpoint_frame(paths: list[Path], root: Path | None) -> pd.DataFrame:
    """One row per checkpoint read with `load_meta`; unreadable ones are rows with an error, not a crash."""
    rows: list[dict[str, Any]] = []
    bar = st.progress(0.0, text="Reading checkpoint headers…") if len(paths) > 20 else None
    for i, p in enumerate(paths):
        row: dict[str, Any] = {"checkpoint": relative(p, root), "path": str(p)}
        try:
            m = load_meta(p)
        except CkptlabError as e:
            row.update(format="unreadable", error=e.cause)
        else:
            bad = m.safety.unsafe_globals
            unsafe = bad[0] + (f" +{len(bad) - 1} more" if len(bad) > 1 else "") if bad else ""
            row.update(
                format=m.format,
                size=m.size_bytes,
                params=m.n_params,
                tensors=m.n_tensors,
                step=m.step,
                epoch=m.epoch,
                safety="safe" if m.safety.safe else f"⚠ UNSAFE: {unsafe}",
                error="",
            )
        rows.append(row)
        if bar is not None:
            bar.progress((i + 1) / len(paths), text=f"Reading checkpoint headers… {i + 1}/{len(paths)}")
    if bar is not None:
        bar.empty()
    cols = ["checkpoint", "format", "size", "params", "tensors", "step", "epoch", "safety", "error", "path"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("size", "params", "tensors", "step"):
        df[c] = df[c].astype("Int64")
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce")
    return df


def column_config() -> dict[str, Any]:
    """Shared column formats: exact counts with thousands separators, sizes in bytes units."""
    cc = st.column_config
    return {
        "checkpoint": cc.TextColumn("checkpoint"),
        "error": cc.TextColumn("error", width="large"),
        "tensor": cc.TextColumn("tensor", width="large"),
        "module": cc.TextColumn("module", width="large"),
        "params": cc.NumberColumn("params", format="localized", help="parameter count (elements)"),
        "tensors": cc.NumberColumn("tensors", format="localized"),
        "size": cc.NumberColumn(
            "size", format="bytes", help="on disk, all files (decimal units: 1 KB = 1000 B)"
        ),
        "bytes": cc.NumberColumn("bytes", format="bytes", help="tensor data (decimal units: 1 KB = 1000 B)"),
        "safety": cc.TextColumn("safety", width="medium"),
        "step": cc.NumberColumn("step", format="localized"),
        "epoch": cc.NumberColumn("epoch", format="%g"),
        "share": cc.ProgressColumn("share", format="percent", min_value=0.0, max_value=1.0),
        "depth": cc.NumberColumn("depth", width="small"),
    }

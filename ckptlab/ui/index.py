"""The index in the app: the shared database handle, scans with progress, the home page's roots, filters,
table and errors, and the Inspect page's picker of indexed checkpoints."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from ..errors import CkptlabError
from ..index import views
from ..index.store import Store, default_db_path
from ..model import IndexEntry, plural, size_unit

if TYPE_CHECKING:
    from ..index.scan import ScanResult

from .common import (
    PATH_KEY,
    ROOT_ENV,
    TABLE_KEY,
    error_line,
    first_line,
    md_escape,
)

log = logging.getLogger(__name__)

# session-state keys (not widget keys, so they survive page switches)
_SCAN_REQUEST = "_ckptlab_scan_request"  # roots a button asked to scan in the next run
_AUTO_DONE = "_ckptlab_first_start_done"  # the first-start scan ($CKPTLAB_ROOT or the demo) has run
_LAST_SCAN = "_ckptlab_last_scan"  # what the last scan of this session found, to show until the next
_ADD_BOX = "_ckptlab_add_root"
_ADD_NOTE = "_ckptlab_add_root_note"
_DEMO = "<demo>"  # a scan request for the built-in demo (built on demand)
_FILTERS = ("run", "format", "status", "safety")


# ---------------------------------------------------------------------------------------------- the index


@dataclass
class IndexHandle:
    """The app's one connection to the index, shared by every session of the server process.

    The connection is made with `check_same_thread=False`; Streamlit runs each session's script in its own
    thread, so every use goes through `lock` (sqlite3 connections must not be used concurrently)."""

    store: Store
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def path(self) -> Path:
        return self.store.path

    def roots(self) -> list[tuple[str, float | None]]:
        with self.lock:
            return self.store.roots()

    def forget_root(self, root: str) -> None:
        with self.lock:
            self.store.forget_root(root)


@st.cache_resource(max_entries=4, show_spinner=False)
def _open_index(db: str) -> IndexHandle:
    return IndexHandle(Store(db))


def open_index() -> IndexHandle:
    """The index database (`$CKPTLAB_DB`, else the user cache dir), opened once per server process.

    Raises CkptlabError when it cannot be opened."""
    return _open_index(str(default_db_path()))


@dataclass(frozen=True)
class Snapshot:
    """What the index holds now: roots with their last scan time, entries (by run, then step), errors,
    and each run's short label (`views.run_labels`)."""

    roots: tuple[tuple[str, float | None], ...]
    entries: tuple[IndexEntry, ...]
    errors: tuple[tuple[str, str], ...]
    labels: Mapping[str, str]


@st.cache_resource(max_entries=8, show_spinner=False)
def _snapshot_cached(db: str, roots: tuple[tuple[str, float | None], ...]) -> Snapshot:
    handle = _open_index(db)
    with handle.lock:
        entries = tuple(handle.store.entries(with_meta=False))  # the inspect documents are not shown here
        errors = tuple(handle.store.errors())
    return Snapshot(roots, entries, errors, views.run_labels(entries))


def snapshot(handle: IndexHandle) -> Snapshot:
    """The index's contents, read again only when a root was scanned or forgotten since (every write of the
    store, the CLI's included, updates a root's scan time): a rerun of the page does not query the entries.
    Shared between sessions as is (cache_resource): nothing may mutate it."""
    return _snapshot_cached(str(handle.path), tuple(handle.roots()))


def env_roots() -> list[Path]:
    """The roots in `$CKPTLAB_ROOT` (several separated by `os.pathsep`)."""
    raw = os.environ.get(ROOT_ENV, "")
    return [Path(p.strip()).expanduser() for p in raw.split(os.pathsep) if p.strip()]


@st.cache_resource(show_spinner="Building the demo checkpoints (first start only, a few seconds)…")
def _demo_root() -> tuple[str | None, str | None]:
    """(demo dir, None) or (None, why not): built once per server process, then reused."""
    try:
        from .. import demo

        return str(demo.ensure_demo()), None
    except Exception as e:  # the demo is a nicety: never let it break the app
        log.exception("building the demo failed")
        return None, f"The built-in demo is unavailable ({type(e).__name__}: {first_line(str(e))})."


def _is_demo(root: str | Path) -> bool:
    from ..demo import is_complete

    return is_complete(Path(root))


def request_scan(roots: Sequence[str]) -> None:
    """Ask the next run of the home page to scan `roots` (for button callbacks)."""
    st.session_state[_SCAN_REQUEST] = list(roots)


def _scan_everything(handle: IndexHandle) -> None:
    known = [r for r, _ in handle.roots()]
    request_scan(list(dict.fromkeys([*known, *(str(p) for p in env_roots())])))


def _first_start(handle: IndexHandle) -> list[str]:
    """What to scan on a session's first visit: the `$CKPTLAB_ROOT` roots not indexed yet; with no such
    variable and an empty index, the built-in demo."""
    known = {r for r, _ in handle.roots()}
    env = env_roots()
    if env:
        return [str(p) for p in env if str(p.resolve()) not in known]
    return [] if known else [_DEMO]


def _scan_with_progress(handle: IndexHandle, roots: Sequence[str]) -> views.ScanReport:
    from ..index.scan import scan

    results: list[ScanResult] = []
    notes: list[str] = []
    bar = st.progress(0.0, text="Scanning…")
    # a connection of its own: other sessions keep reading through the shared handle meanwhile (WAL)
    with Store(handle.path) as store:
        for root in roots:
            if root == _DEMO:
                demo_dir, note = _demo_root()
                if demo_dir is None:
                    notes.append(note or "The built-in demo is unavailable.")
                    continue
                root = demo_dir
            name = Path(root).name or root
            bar.progress(0.0, text=f"Looking for checkpoints under {name}…")
            last = [0.0]

            def progress(
                phase: str, done: int, total: int, name: str = name, last: list[float] = last
            ) -> None:
                now = time.monotonic()
                if done < total and now - last[0] < 0.1:  # at most ~10 updates a second reach the browser
                    return
                last[0] = now
                what = "reading checkpoint headers" if phase == "read" else phase
                bar.progress(done / total if total else 1.0, text=f"{name}: {what} {done:,} / {total:,}")

            # a finished demo is complete by construction: its fresh files are not "still being written"
            settle = {"settle_seconds": 0.0} if _is_demo(root) else {}
            try:
                results.append(scan([root], store, progress=progress, **settle))
            except Exception as e:  # a reader bug must not take the page down; the log has the traceback
                log.exception("scanning %s failed", root)
                notes.append(f"Scanning {root} failed: {error_line(e)}")
    bar.empty()
    return views.scan_report(results, notes)


def scan_pending(handle: IndexHandle) -> None:
    """Run the scan a button asked for, or the first-start scan, with a progress bar; then show what the
    session's last scan found (until the next one)."""
    roots = st.session_state.pop(_SCAN_REQUEST, None)
    first = roots is None and not st.session_state.get(_AUTO_DONE)
    if first:
        roots = _first_start(handle)
    if roots:
        st.session_state[_LAST_SCAN] = _scan_with_progress(handle, roots)
    if first:  # set only now: a first-start scan cut short by a rerun is tried again
        st.session_state[_AUTO_DONE] = True
    report: views.ScanReport | None = st.session_state.get(_LAST_SCAN)
    if report is None:
        return
    for note in report.notes:
        st.warning(md_escape(note), icon=":material/warning:")
    if report.n_roots:
        text = f"Scanned: {md_escape(report.line)}"
        if report.n_errors:
            st.warning(text + " — see *Scan errors* below.", icon=":material/warning:")
        else:
            st.success(text, icon=":material/check_circle:")


def scan_button(handle: IndexHandle) -> None:
    """Rescan every indexed root (and `$CKPTLAB_ROOT`); incremental, so unchanged files are not read."""
    st.button(
        "Scan",
        icon=":material/refresh:",
        type="primary",
        key="_ckptlab_scan",
        on_click=_scan_everything,
        args=(handle,),
        help="Look for new, changed and deleted checkpoints under every root. Unchanged files (same size "
        "and mtime) are not read again.",
        width="stretch",
    )


def _add_root() -> None:
    raw = str(st.session_state.get(_ADD_BOX) or "").strip()
    if not raw:
        return
    p = Path(raw).expanduser()
    if not p.is_dir():
        st.session_state[_ADD_NOTE] = f"{p}: not a directory"
        return
    st.session_state.pop(_ADD_NOTE, None)
    st.session_state[_ADD_BOX] = ""
    request_scan([str(p.resolve())])


def roots_sidebar(handle: IndexHandle, snap: Snapshot) -> None:
    """The sidebar: indexed roots (each removable), a box to add one, the demo, and the database's path."""
    sb = st.sidebar
    sb.header("Roots")
    per_root = Counter(e.root for e in snap.entries)
    now = time.time()
    has_demo = False
    for i, (root, scanned) in enumerate(snap.roots):
        demo = _is_demo(root)
        has_demo = has_demo or demo
        with sb.container(border=True):
            text, remove = st.columns([6, 1], vertical_alignment="top")
            name = md_escape(Path(root).name or root)
            text.markdown(f"**{name}**" + (" :blue-badge[demo]" if demo else ""))
            when = "never scanned" if scanned is None else f"scanned {views.ago(now - scanned)}"
            n = per_root.get(root, 0)
            text.caption(f"{md_escape(root)}  \n{n:,} checkpoint{'' if n == 1 else 's'} · {when}")
            remove.button(
                "",
                icon=":material/close:",
                key=f"_ckptlab_forget_{i}",
                on_click=handle.forget_root,
                args=(root,),
                help="Remove from the index (no file is touched)",
                type="tertiary",
            )
    known = {r for r, _ in snap.roots}
    for p in env_roots():
        if str(p.resolve()) not in known:
            sb.caption(md_escape(f"${ROOT_ENV}: {p} (not indexed: press Scan)"))
    if not snap.roots:
        sb.caption("No roots yet.")
    sb.text_input(
        "Add a folder",
        key=_ADD_BOX,
        on_change=_add_root,
        placeholder="/data/runs",
        help="A folder to index (recursively). It is scanned when added.",
    )
    sb.button("Add and scan", icon=":material/add:", on_click=_add_root, key="_ckptlab_add", width="stretch")
    if note := st.session_state.get(_ADD_NOTE):
        sb.error(md_escape(note), icon=":material/error:")
    if not has_demo:
        sb.button(
            "Add the built-in demo",
            icon=":material/science:",
            on_click=request_scan,
            args=([_DEMO],),
            key="_ckptlab_add_demo",
            width="stretch",
            help="Six small runs trained for real and saved the way PyTorch, Lightning, HF Trainer, Keras, "
            "sharded exports and DCP save them (built once, a few seconds).",
        )
    sb.caption(md_escape(f"Index database: {handle.path}") + f"  \n(set ${ROOT_ENV} / $CKPTLAB_DB)")


def _multiselect_filter(col: Any, name: str, options: list[str]) -> list[str]:
    """A multiselect whose choice survives a visit to another page (widget state does not)."""
    key, keep = f"filter_{name}", f"_ckptlab_keep_filter_{name}"
    current = st.session_state.get(key, st.session_state.get(keep, []))
    valid = [v for v in current if v in options]
    if key not in st.session_state or valid != current:
        st.session_state[key] = valid

    def changed() -> None:
        st.session_state[keep] = st.session_state[key]

    plural = {"status": "statuses", "safety": "safety verdicts"}.get(name, f"{name}s")
    return col.multiselect(name, options, key=key, on_change=changed, placeholder=f"All {plural}")


def index_filters(snap: Snapshot) -> list[IndexEntry]:
    """Run / format / status / safety filters over the snapshot; returns the entries they keep."""
    options = views.filter_options(snap.entries, snap.labels)
    cols = st.columns([3, 2, 2, 2])
    chosen = {
        name: _multiselect_filter(col, name, options[name]) for col, name in zip(cols, _FILTERS, strict=True)
    }
    return views.filter_entries(
        snap.entries,
        snap.labels,
        runs=chosen["run"],
        formats=chosen["format"],
        statuses=chosen["status"],
        safety=chosen["safety"],
    )


def safety_cell(entry: IndexEntry) -> str | None:
    """The safety column's text: the verdict, short enough for its column, so it is never cut. One global is
    named (`⚠ unsafe: posix.system`), by its last part when the whole is too long (`⚠ unsafe: …Lambda` for
    keras.layers.Lambda); several are counted (`⚠ unsafe: 9 globals`). Listed in full they made the column
    too wide for the table's important columns to fit one screen: `unsafe_globals_popover` and Inspect list
    them. `⚠ unsafe` alone: no global, but a part could not be checked. None when nothing could be checked.
    """
    cls = views.safety_class(entry)
    if cls != "unsafe":
        return "safe" if cls == "safe" else None
    bad = entry.unsafe_globals
    if not bad:
        return "⚠ unsafe"
    if len(bad) == 1:
        last = re.split(r"[.>:]", bad[0])[-1]  # module.Class, a Keras registered `package>Name`
        for text in (f"⚠ unsafe: {bad[0]}", f"⚠ unsafe: …{last}"):
            if last and text_px(text) <= _SAFETY_PX:
                return text
    return f"⚠ unsafe: {plural(len(bad), 'global')}"


def index_frame(
    entries: Sequence[IndexEntry], labels: Mapping[str, str], unit: tuple[str, int]
) -> pd.DataFrame:
    """The index table as a DataFrame (views.TABLE_COLUMNS; nullable integer columns for step and params;
    the short `safety_cell` text)."""
    df = pd.DataFrame(views.table_rows(entries, labels, unit), columns=list(views.TABLE_COLUMNS))
    for c in ("step", "params"):
        df[c] = df[c].astype("Int64")
    # 2 decimals: HF's fractional epochs (1.3333333333) overflow the column; Inspect shows the whole value
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce").round(2)
    df["size"] = df["size"].astype(float)
    df["safety"] = pd.Series([safety_cell(e) for e in entries], index=df.index, dtype=object)
    return df


# The table's columns get widths that fit their content (the rows shown), so that run ... safety, the
# columns that tell checkpoints apart, fit without horizontal scrolling at a 1440 px window with the sidebar
# open: the wide layout gives the table 980 px there, less 32 for the row-selection column, less ~12 for a
# browser whose (thin) scrollbars take room rather than overlay. When run and checkpoint do not both fit
# they share what is left in proportion to their needs and the longest are cut (Inspect, one click away,
# shows them whole). Metrics, layout and reason follow, reached by scrolling, or in view when the columns
# before them are narrow. Not pinned: Streamlit draws pinned columns in grey, as an index, and run and
# checkpoint are the data.
_BUDGET = 934
_PAD = 18  # the grid's cell padding, 8 px a side, and a px of rounding each
# advance widths (px) of Source Sans at 14 px, the grid's font (Streamlit's default theme); others: 7 px
_CHAR_PX = {
    c: px
    for px, chars in (
        (3.3, "ij',.:; |"),
        (4.2, "fltI!()-[]{}"),
        (5.0, "r/\\"),
        (6.0, 'csxzJ"*?'),
        (8.0, "bdhnopquABCKPRT`"),
        (9.0, "DGHNOQU&"),
        (10.5, "wMW"),
        (12.0, "m%@"),
    )
    for c in chars
}
_SAFETY_PX = 142  # the longest safety_cell text: "⚠ unsafe: posix.system" (140) fits
_FIXED = {"epoch": 50, "size": 70, "params": 56}  # short numbers; wide enough for their headers
_FIT = {  # column: (least, most) px for a column sized to its content
    "step": (48, 90),
    "format": (64, 140),
    "status": (64, 96),
    "safety": (64, _SAFETY_PX + _PAD),
    "run": (56, 10_000),  # bounded by the budget instead
    "checkpoint": (90, 10_000),
    "metrics": (64, 360),  # as narrow as its header when no row has metrics
    "layout": (64, 110),
    "reason": (120, 420),
}
_SHARE_MIN = 100  # run and checkpoint never get less than this each when they share the budget


def text_px(text: str) -> float:
    """About how wide `text` is drawn in a grid cell (px); characters outside ASCII count as 13 (⚠, CJK)."""
    return sum(_CHAR_PX.get(c, 7.0 if c.isascii() else 13.0) for c in text)


def _fit(values: Sequence[Any], header: str, least: int, most: int) -> int:
    need = max((text_px(str(v)) for v in values if v is not None and v == v and v != ""), default=0.0)
    return math.ceil(min(most, max(least, need + _PAD, text_px(header) + _PAD)))


def column_widths(df: pd.DataFrame, headers: Mapping[str, str] | None = None) -> dict[str, int]:
    """Pixel widths for `index_frame`'s columns (see _BUDGET above). `headers`: labels other than the column
    name (`size (KiB)`)."""
    headers = headers or {}
    text = {c: df[c].tolist() for c in _FIT if c != "step"}
    text["step"] = [f"{v:,}" for v in df["step"].dropna()]
    widths = {c: _fit(text[c], headers.get(c, c), *_FIT[c]) for c in _FIT}
    widths.update(_FIXED)
    first = ("step", "epoch", "format", "size", "params", "status", "safety")
    room = _BUDGET - sum(widths[c] for c in first)
    run, ckpt = widths["run"], widths["checkpoint"]
    if run + ckpt > room:  # share in proportion to need; neither below _SHARE_MIN
        run = min(run, max(_SHARE_MIN, round(room * run / (run + ckpt))))
        ckpt = max(_SHARE_MIN, room - run)
    widths["run"], widths["checkpoint"] = run, ckpt
    return widths


def index_table(entries: Sequence[IndexEntry], labels: Mapping[str, str]) -> str | None:
    """The index table; returns the path of the row the user selected (None when none is)."""
    unit = size_unit(e.size_bytes for e in entries)
    df = index_frame(entries, labels, unit)
    order = [c for c in views.TABLE_COLUMNS if c != "path"]
    if not df["reason"].astype(bool).any():
        order.remove("reason")
    cc = st.column_config
    w = column_widths(df, {"size": f"size ({unit[0]})"})
    config = {
        "run": cc.TextColumn("run", width=w["run"]),
        "checkpoint": cc.TextColumn("checkpoint", width=w["checkpoint"], help="path relative to its run"),
        "step": cc.NumberColumn("step", format="localized", width=w["step"]),
        "epoch": cc.NumberColumn("epoch", format="%g", width=w["epoch"]),
        "size": cc.NumberColumn(
            f"size ({unit[0]})",
            format="%.0f" if unit[1] == 1 else "%.1f",
            width=w["size"],
            help=f"on disk, all files of the checkpoint, in {unit[0]} (1 KiB = 1024 bytes)",
        ),
        # The browser's compact notation (Intl.NumberFormat) keeps the column numeric, so it sorts by count;
        # it rounds to 2 significant digits where Inspect's human_count shows 3 (1.7K vs 1.71K). Showing
        # human_count's text here would need a text column (sorted as text: "2K" before "178") or a pandas
        # Styler (display values; ~3 s a rerun at 20,000 rows, and refused past 262,144 cells).
        "params": cc.NumberColumn(
            "params",
            format="compact",
            width=w["params"],
            help="parameter count, rounded (1.7K); Inspect shows it to 3 digits and exactly",
        ),
        "format": cc.TextColumn("format", width=w["format"]),
        "safety": cc.TextColumn(
            "safety",
            width=w["safety"],
            help="unsafe: a pickle references globals outside the allowlist (nothing was run). "
            "*Unsafe globals* above the table, and Inspect, list them all",
        ),
        "status": cc.TextColumn(
            "status", width=w["status"], help="ok, unreadable, incomplete (missing parts) or debris"
        ),
        "metrics": cc.TextColumn(
            "metrics", width=w["metrics"], help="from the file or its name; losses first"
        ),
        "layout": cc.TextColumn("layout", width=w["layout"], help="file, sharded, hf-checkpoint or dcp"),
        "reason": cc.TextColumn(
            "reason", width=w["reason"], help="why the status is not ok, or reader warnings"
        ),
    }
    event = st.dataframe(
        df,
        hide_index=True,
        column_order=order,
        column_config=config,
        placeholder="—",
        height=min(38 + 35 * max(1, len(df)), 38 + 35 * 18),
        on_select="rerun",
        selection_mode="single-row",
        key=TABLE_KEY,
    )
    rows = event.selection.rows if event is not None else []
    return str(df.iloc[rows[0]]["path"]) if rows else None


_POPOVER_GROUPS = 20  # sets of globals listed; an index rarely has more than a handful
_POPOVER_NAMES = 5  # checkpoints named per set


def unsafe_groups(entries: Sequence[IndexEntry]) -> list[tuple[tuple[str, ...], list[IndexEntry]]]:
    """The unsafe entries grouped by the set of globals they reference (sorted), largest group first: the
    checkpoints of an HF Trainer run all pickle the same TrainingArguments, so one list serves them all."""
    groups: dict[tuple[str, ...], list[IndexEntry]] = {}
    for e in entries:
        if e.safe is False:
            groups.setdefault(tuple(sorted(e.unsafe_globals)), []).append(e)
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


def unsafe_globals_popover(entries: Sequence[IndexEntry], labels: Mapping[str, str]) -> None:
    """A button listing every global the unsafe checkpoints among `entries` reference (the safety column
    counts them when there are several); nothing when none is unsafe."""
    groups = unsafe_groups(entries)
    if not groups:
        return
    n = sum(len(g) for _, g in groups)
    with st.popover(
        f"Unsafe globals ({plural(n, 'checkpoint')})",
        icon=":material/gpp_bad:",
        type="tertiary",
    ):
        blocks = [
            "Globals outside the allowlist, by the checkpoints that reference them (found statically; "
            "nothing was imported or run):"
        ]
        for names, group in groups[:_POPOVER_GROUPS]:
            shown = ", ".join(
                f"{labels[e.run]} / {views.checkpoint_label(e)}" for e in group[:_POPOVER_NAMES]
            )
            more = f" and {len(group) - _POPOVER_NAMES:,} more" if len(group) > _POPOVER_NAMES else ""
            # names come from untrusted files: escaped, never inside a code span they could close
            items = [f"- {md_escape(g)}" for g in names] or ["- (none named: a part could not be checked)"]
            blocks.append(
                "\n".join([f"**{plural(len(group), 'checkpoint')}**: {md_escape(shown + more)}", *items])
            )
        if len(groups) > _POPOVER_GROUPS:
            blocks.append(f"… and {len(groups) - _POPOVER_GROUPS:,} more sets (filter by run to see them)")
        st.markdown("\n\n".join(blocks))


def errors_expander(snap: Snapshot) -> None:
    """Scan errors (unreadable directories and files) in a collapsed expander."""
    errors = sorted(snap.errors)
    if not errors:
        st.caption("No scan errors.")
        return
    with st.expander(f"Scan errors ({len(errors):,})", icon=":material/error:"):
        st.dataframe(
            pd.DataFrame(errors, columns=["path", "error"]),
            hide_index=True,
            key="scan_errors",
            column_config={
                "path": st.column_config.TextColumn("path", width="large"),
                "error": st.column_config.TextColumn("error", width="large"),
            },
        )


def _picker_options() -> dict[str, str]:
    try:
        snap = snapshot(open_index())
        return views.picker_options(snap.entries, snap.labels)
    except CkptlabError as e:  # no index: the path box still works
        log.warning("cannot open the index: %s", e)
        return {}


def _on_pick(pick_key: str) -> None:
    picked = st.session_state.get(pick_key)
    if picked:
        st.session_state[PATH_KEY] = picked


def _indexed_as(path: str, found: Mapping[str, str]) -> str | None:
    """The index's key for a typed path: the same string, or the same place written another way (a trailing
    slash, `./`, `..`, `~`, relative to the app's folder); None when it is not indexed."""
    if not path or path in found:
        return path or None
    try:
        want = os.path.normpath(os.path.abspath(os.path.expanduser(path)))
    except (OSError, ValueError):  # a NUL byte in the box
        return None
    return want if want in found else None


def checkpoint_picker() -> str | None:
    """A path box bound to `?path=` plus, once the index has entries, a selectbox of them (by run, then
    step). Returns the stripped path, or None when nothing is chosen yet."""
    found = _picker_options()
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
        st.session_state[pick_key] = _indexed_as(path, found)
        with left:
            st.selectbox(
                f"Indexed checkpoints ({len(found):,})",
                list(found),
                index=None,
                key=pick_key,
                format_func=found.__getitem__,
                placeholder="Pick one (run / checkpoint)",
                on_change=_on_pick,
                args=(pick_key,),
            )
    return path or None


# ---------------------------------------------------------------------------------------------- cached reads

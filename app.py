"""ckptlab home page: the checkpoint index (roots in the sidebar, scan, summary, table, disk usage, errors).

Run with `streamlit run app.py`. On a fresh machine the built-in demo is built and scanned on first start;
`$CKPTLAB_ROOT` (one or more folders, `os.pathsep`-separated) is scanned instead when set. Pages in `pages/`
are discovered by Streamlit (no `st.navigation`).
"""

from __future__ import annotations

import streamlit as st

from ckptlab import plots, ui
from ckptlab.errors import CkptlabError
from ckptlab.index import views

INSPECT = "pages/1_Inspect.py"

st.set_page_config(page_title="ckptlab", page_icon=":material/inventory_2:", layout="wide")
ui.page_style()

try:
    index = ui.open_index()
except CkptlabError as e:
    ui.show_error(e)
    st.stop()

title, button = st.columns([6, 1], vertical_alignment="bottom")
title.title("ckptlab")
with button:
    ui.scan_button(index)
st.caption(
    "Every checkpoint under your roots, read from headers alone — safetensors, PyTorch (zip, legacy, "
    "TorchScript, sharded, DCP), HF Trainer, Accelerate, Lightning, Keras/HDF5 and the Hugging Face hub "
    "cache. Nothing is unpickled; pickles that reference anything outside an allowlist are flagged. Click a "
    "row to inspect it."
)

ui.scan_pending(index)
snap = ui.snapshot(index)
ui.roots_sidebar(index, snap)
if not snap.entries:
    st.info(
        f"The index is empty. Add a folder in the sidebar (or set ${ui.ROOT_ENV}) and it is scanned; "
        "or add the built-in demo.",
        icon=":material/inventory_2:",
    )
    ui.errors_expander(snap)
    st.stop()

# ------------------------------------------------------------------------------------------- summary
s = views.summarize(snap.entries)
cards = st.columns(5)
cards[0].metric("Checkpoints", f"{s.n_checkpoints:,}", border=True)
cards[1].metric("Runs", f"{s.n_runs:,}", border=True, help="folders holding a series of checkpoints")
cards[2].metric("Total size", s.total_str, border=True, help=f"{s.total_bytes:,} bytes on disk")
cards[3].metric(
    "Unsafe / unreadable",
    f"{s.n_unsafe} / {s.n_unreadable}",
    border=True,
    help="Unsafe: a pickle references globals outside the allowlist (never load it with "
    "weights_only=False). Unreadable: see the reason column.",
)
cards[4].metric(
    "Incomplete / debris",
    f"{s.n_incomplete} / {s.n_debris}",
    border=True,
    help="Incomplete: shards missing. Debris: temporary or zero-byte files, dangling links, saves still "
    "being written.",
)

# ------------------------------------------------------------------------------------------- table
shown = ui.index_filters(snap)
count, unsafe = st.columns([3, 1], vertical_alignment="center")
count.caption(f"{len(shown):,} of {s.n_checkpoints:,} checkpoints · select a row to open it in Inspect")
with unsafe:  # the safety column counts globals; this lists them (nothing when no row shown is unsafe)
    ui.unsafe_globals_popover(shown, snap.labels)
picked = ui.index_table(shown, snap.labels)
if picked:
    st.switch_page(INSPECT, query_params={ui.PATH_KEY: picked})

# ------------------------------------------------------------------------------------------- usage, errors
st.subheader("Disk usage by run")
if len(shown) < s.n_checkpoints:
    st.caption("Of the checkpoints the filters keep.")
st.plotly_chart(plots.disk_usage_figure(views.usage_rows(shown, snap.labels)), key="disk_usage")
ui.errors_expander(snap)

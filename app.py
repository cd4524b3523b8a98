"""ckptlab home page: what it does, and the checkpoints under the chosen folder (default: the built-in demo).

Run with `streamlit run app.py`. Pages in `pages/` are discovered by Streamlit (no `st.navigation`).
"""

from __future__ import annotations

import streamlit as st

from ckptlab import ui
from ckptlab.model import human_bytes, human_count

st.set_page_config(page_title="ckptlab", page_icon=":material/inventory_2:", layout="wide")

ui.page_style()
st.title("ckptlab")
st.markdown(
    "A local lab for model checkpoints. ckptlab reads **safetensors, PyTorch (zip, legacy, TorchScript, "
    "sharded, DCP), HF Trainer, Lightning and Keras/HDF5** checkpoints from their headers alone: it never "
    "unpickles code, and flags pickles that reference anything outside an allowlist. "
    "Open a checkpoint on the **Inspect** page to see its modules, tensors, dtypes and training state, "
    "and compute value statistics on CPU or GPU."
)

root, note = ui.root_selector()
if note:
    st.warning(ui.md_escape(note), icon=":material/warning:")
if root is None:
    st.info(f"Type a folder above, or set ${ui.ROOT_ENV}, to list its checkpoints.")
    st.stop()
if not root.is_dir():
    st.error(ui.md_escape(f"{root}: not a directory"), icon=":material/error:")
    st.stop()

paths = ui.list_checkpoints(root)
if not paths:
    st.info(ui.md_escape(f"No checkpoints found under {root}."))
    st.stop()

df = ui.checkpoint_frame(paths, root)
readable = df[df["format"] != "unreadable"]
n_unsafe = int(readable["safety"].str.contains("UNSAFE").sum())
n_bad = len(df) - len(readable)

cols = st.columns(4)
cols[0].metric("Checkpoints", f"{len(df):,}", border=True)
cols[1].metric("Total size", human_bytes(int(readable["size"].sum())), border=True)
largest = int(readable["params"].max()) if len(readable) else 0
cols[2].metric("Largest model", f"{human_count(largest)} params", border=True)
cols[3].metric(
    "Unsafe / unreadable",
    f"{n_unsafe} / {n_bad}",
    border=True,
    help="Unsafe: a pickle references globals outside the allowlist. Unreadable: see the error column.",
)

st.subheader("Checkpoints")
st.caption(ui.md_escape(f"under {root} · select a row to open it in Inspect"))
columns = ["checkpoint", "format", "size", "params", "tensors", "step", "epoch", "safety"]
if df["error"].fillna("").ne("").any():
    columns.append("error")
event = st.dataframe(
    df,
    hide_index=True,
    column_order=columns,
    column_config=ui.column_config(),
    placeholder="—",
    height=min(38 + 35 * len(df), 38 + 35 * 16),
    on_select="rerun",
    selection_mode="single-row",
    key="checkpoints",
)
selected = event.selection.rows if event is not None else []
if selected:
    row = df.iloc[selected[0]]
    st.page_link(
        "pages/1_Inspect.py",
        label=f"Inspect {row['checkpoint']}",
        icon=":material/arrow_forward:",
        query_params={ui.PATH_KEY: row["path"]},
    )

MAX_LINKS = 120
with st.expander(f"All checkpoints as links ({len(df):,})", expanded=len(df) <= 12):
    if len(df) > MAX_LINKS:
        st.caption(f"The first {MAX_LINKS} are linked; pick any checkpoint on the Inspect page.")
    for group, items in ui.group_by_folder(list(zip(df["checkpoint"], df["path"], strict=True))[:MAX_LINKS]):
        if group:
            st.markdown(f"**{ui.md_escape(group)}/**")
        links = st.columns(3)
        for i, (label, path) in enumerate(items):
            links[i % 3].page_link(
                "pages/1_Inspect.py", label=label, icon=":material/search:", query_params={ui.PATH_KEY: path}
            )

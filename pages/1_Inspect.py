"""Inspect one checkpoint: summary, safety, dtypes, module tree, tensors, entries, and on-demand value stats.

Open with `?path=/some/model.safetensors` to preselect a checkpoint (the home page opens rows that way), pick
one of the indexed checkpoints, or type any path.
"""

from __future__ import annotations

import os

import streamlit as st

from ckptlab import layouts, plots, ui
from ckptlab.errors import CkptlabError
from ckptlab.model import human_bytes, human_count

st.set_page_config(page_title="Inspect · ckptlab", page_icon=":material/search:", layout="wide")
ui.page_style()
st.title("Inspect a checkpoint")

path = ui.checkpoint_picker()
if not path:
    st.info("Pick an indexed checkpoint above, or type the path of a checkpoint file or directory.")
    st.stop()

try:
    meta, sig = ui.load_meta_with_signature(path)  # sig: the cache key of the figures and stats
except CkptlabError as e:
    ui.show_error(e)
    st.stop()

# ------------------------------------------------------------------------------------------- summary
details = [f"framework: {meta.framework}"] if meta.framework else []
details.append(f"layout: {meta.layout}")
if len(meta.files) > 1:
    details.append(f"{len(meta.files)} files")
st.caption(ui.md_escape(f"{meta.path}  ·  " + "  ·  ".join(details)))

# Card widths that fit at 1440 px with the sidebar open (a 980 px row): 'safetensors-sharded', the longest
# format, needs twice a plain card; then sizes up to '999.9 GiB', the 'Parameters' label with its help icon,
# '123,456' tensors, step '100,000', epoch '2.66667'.
cards = st.columns([2.05, 1.2, 1.08, 1, 1.05, 1])
cards[0].metric("Format", meta.format, border=True)
cards[1].metric("Size", meta.size_str, help=f"{meta.size_bytes:,} bytes on disk", border=True)
cards[2].metric("Parameters", meta.n_params_str, help=f"{meta.n_params:,} elements", border=True)
cards[3].metric(
    "Tensors", f"{meta.n_tensors:,}", help=f"{human_bytes(meta.tensor_bytes)} of data", border=True
)
at = layouts.stage(meta.path, meta.step, meta.epoch, meta.metrics)  # the index's rule: content, then name
from_name = f"from the name {os.path.basename(meta.path.rstrip('/'))!r}; the checkpoint does not say"
cards[4].metric(
    "Step",
    "—" if at.step is None else f"{at.step:,}",
    help=from_name if "step" in at.from_name else None,
    border=True,
)
cards[5].metric(
    "Epoch",
    "—" if at.epoch is None else f"{at.epoch:g}",
    help=from_name if "epoch" in at.from_name else None,
    border=True,
)

ui.safety_badge(meta.safety, meta.format)

present = [
    label
    for label, has in (
        ("optimizer state", meta.has_optimizer),
        ("LR scheduler", meta.has_scheduler),
        ("RNG state", meta.has_rng_state),
    )
    if has
]
with st.container(horizontal=True):
    for label in present:
        st.badge(label, icon=":material/check:", color="green")
    if not present:
        st.badge("no optimizer, scheduler or RNG state", color="gray")
    if meta.other_tensors:
        st.badge(f"{len(meta.other_tensors):,} non-model tensors", color="blue")
    for k, v in at.metrics.items():
        st.badge(f"{k} = {v:.4g}{at.note(k)}", color="violet")
for w in meta.warnings:
    st.warning(ui.md_escape(w), icon=":material/warning:")

# ------------------------------------------------------------------------------------------- tabs
figures = ui.checkpoint_figures(meta, sig)
t_overview, t_modules, t_tensors, t_entries, t_stats = st.tabs(
    ["Overview", "Modules", "Tensors", "Entries & metadata", "Tensor stats"]
)

with t_overview:
    left, right = st.columns(2)
    with left:
        st.subheader("Parameters by dtype")
        st.plotly_chart(figures["dtype"], key="dtype_chart")
    with right:
        st.subheader("Largest tensors")
        st.plotly_chart(figures["largest"], key="largest_chart")

with t_modules:
    rows = plots.module_tree(meta.tensors)
    if not rows:
        st.info("Flat state dict: tensor names have no module prefixes.")
    st.plotly_chart(figures["treemap"], key="treemap")
    if rows:
        f1, f2 = st.columns([3, 1])
        query = f1.text_input("Filter modules", key="module_filter", placeholder="e.g. attn or layers.3")
        max_depth = max(r.depth for r in rows)
        depth = (
            f2.slider("Max depth", 0, max_depth, min(max_depth, 2), key="module_depth") if max_depth else 0
        )
        shown = ui.filter_modules(rows, query, depth)
        st.caption(f"{len(shown):,} of {len(rows):,} modules")
        st.dataframe(
            ui.module_frame(shown, meta.n_params),
            hide_index=True,
            column_config=ui.column_config(),
            height=ui.table_height(len(shown)),
            key="module_table",
        )

with t_tensors:
    query = st.text_input("Filter tensors by name", key="tensor_filter", placeholder="e.g. attn weight")
    shown_t = ui.filter_tensors(meta.tensors, query)
    st.caption(f"{len(shown_t):,} of {meta.n_tensors:,} tensors")
    st.dataframe(
        ui.tensor_frame(shown_t),
        hide_index=True,
        column_config=ui.column_config(),
        height=ui.table_height(len(shown_t), max_rows=15),
        key="tensor_table",
    )
    if meta.other_tensors:
        other = ui.filter_tensors(meta.other_tensors, query)
        with st.expander(ui.other_tensors_label(len(other), len(meta.other_tensors), query)):
            if other:
                st.dataframe(
                    ui.tensor_frame(other),
                    hide_index=True,
                    column_config=ui.column_config(),
                    height=ui.table_height(len(other)),
                    key="other_tensor_table",
                )
            else:
                st.caption("No non-model tensor matches the filter.")

with t_entries:
    # Tables first, at full width: in half a page the entries' summaries and the shard names were cut.
    st.subheader("Entries")
    if meta.entries:
        st.dataframe(
            ui.entry_frame(meta.entries),
            hide_index=True,
            column_config=ui.entry_column_config(),
            height=ui.table_height(len(meta.entries)),
            key="entries_table",
        )
    else:
        st.caption("No non-tensor entries.")
    st.subheader("Tied weights")
    if meta.tied:
        st.dataframe(
            [{"storage": k, "tensors": ", ".join(v)} for k, v in meta.tied.items()],
            hide_index=True,
            column_config={"storage": st.column_config.TextColumn("storage", width="small")},
            height=ui.table_height(len(meta.tied)),
            key="tied_table",
        )
    else:
        st.caption("No tensors share storage.")
    if len(meta.files) > 1:
        st.subheader("Files")
        st.dataframe(
            {"file": ui.relative_files(meta.path, meta.files)},
            hide_index=True,
            height=ui.table_height(len(meta.files)),
            key="files_table",
        )
    left, right = st.columns([2, 1]) if meta.metrics else (st.container(), None)
    with left:
        st.subheader("Metadata")
        if meta.metadata:
            st.json(meta.to_json()["metadata"], expanded=2)
        else:
            st.caption("No metadata.")
    if right is not None:
        with right:
            st.subheader("Metrics")
            st.json(dict(meta.metrics))

with t_stats:
    names = [t.name for t in meta.tensors] + [t.name for t in meta.other_tensors]
    if not names:
        st.info("This checkpoint has no tensors.")
    else:
        c1, c2, c3 = st.columns([4, 1, 1])
        name = c1.selectbox("Tensor", names, key="stats_tensor")
        with c2:
            device = ui.device_selector("stats_device")
        bins = c3.number_input("Bins", 8, 512, 64, step=8, key="stats_bins")
        request = (meta.path, name, device, int(bins))
        if st.button("Compute stats", icon=":material/query_stats:", type="primary", key="stats_button"):
            st.session_state["_stats_request"] = request
        if st.session_state.get("_stats_request") == request:
            try:
                with st.spinner(f"Loading {name} on {device}…"):
                    stats, hist = ui.load_stats(meta, name, sig, device, int(bins))
            except Exception as e:  # CkptlabError (device, dtype), or torch itself: one line, no traceback
                ui.show_error(e)
            else:

                def num(v: float | None) -> str:
                    return "—" if v is None else f"{v:.4g}"

                st.caption(ui.md_escape(ui.stats_caption(stats)))
                values = [
                    ("min", num(stats.min)),
                    ("max", num(stats.max)),
                    ("mean", num(stats.mean)),
                    ("std", num(stats.std)),
                    ("L2 norm", num(stats.norm)),
                    ("zeros", f"{stats.zero_count:,}"),
                    ("NaN", f"{stats.nan_count:,}"),
                    ("Inf", f"{stats.inf_count:,}"),
                ]
                for row in (values[:4], values[4:]):
                    for col, (label, value) in zip(st.columns(4), row, strict=True):
                        col.metric(label, value, border=True)
                log_y = st.toggle("Log count axis", key="stats_log")
                st.plotly_chart(plots.histogram_figure(hist, title=name, log_y=log_y), key="histogram")
        else:
            st.caption(
                f"Values are read on demand through the loading layer ({human_count(meta.n_params)} params "
                "in this checkpoint); nothing is unpickled."
            )

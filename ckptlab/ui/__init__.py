"""Shared Streamlit glue for `app.py` and `pages/`: the only place in the package that imports Streamlit.

`common` holds what both pages use (errors, safety badge, device selector, style), `index` the index handle,
scans and the home page's widgets, `inspect` the Inspect page's cached reads and tables. Logic lives
elsewhere in `ckptlab` (what the index table shows is `ckptlab.index.views`); what is here decides how
things are cached and shown.
"""

from .common import (
    PATH_KEY,
    ROOT_ENV,
    TABLE_KEY,
    device_selector,
    md_escape,
    page_style,
    safety_badge,
    show_error,
)
from .index import (
    _demo_root,
    checkpoint_picker,
    env_roots,
    errors_expander,
    index_filters,
    index_table,
    open_index,
    roots_sidebar,
    scan_button,
    scan_pending,
    snapshot,
    unsafe_globals_popover,
)
from .inspect import (
    checkpoint_figures,
    column_config,
    filter_modules,
    filter_tensors,
    load_meta,
    load_meta_with_signature,
    load_stats,
    module_frame,
    shape_str,
    tensor_frame,
)

__all__ = [
    "PATH_KEY",
    "ROOT_ENV",
    "TABLE_KEY",
    "_demo_root",
    "checkpoint_figures",
    "checkpoint_picker",
    "column_config",
    "device_selector",
    "env_roots",
    "errors_expander",
    "filter_modules",
    "filter_tensors",
    "index_filters",
    "index_table",
    "load_meta",
    "load_meta_with_signature",
    "load_stats",
    "md_escape",
    "module_frame",
    "open_index",
    "page_style",
    "roots_sidebar",
    "safety_badge",
    "scan_button",
    "scan_pending",
    "shape_str",
    "show_error",
    "snapshot",
    "tensor_frame",
    "unsafe_globals_popover",
]

"""Pure plotly figure builders: data in, `go.Figure` out. No Streamlit, no I/O, no torch.

Every builder accepts empty input and then returns an empty figure carrying a centred note instead of
raising, so a page can always render what it gets.

Tensor names are split into a module hierarchy on `.` (PyTorch: `encoder.layer.0.attn.q.weight`) and on
`/` (Keras/TF: `model_weights/dense/dense/kernel:0`); both may appear in one name.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal, Protocol

import plotly.graph_objects as go

from .model import TensorMeta, human_bytes, human_count, plural, shape_str, size_unit

_SEP = re.compile(r"[./]")

# Stable colours per dtype family so the same dtype looks the same on every chart and page.
DTYPE_COLORS: dict[str, str] = {
    "float32": "#4C78A8",
    "float64": "#1F3B5C",
    "float16": "#F58518",
    "bfloat16": "#B279A2",
    "int8": "#54A24B",
    "uint8": "#88D27A",
    "int16": "#72B7B2",
    "int32": "#439894",
    "int64": "#2E6E6B",
    "bool": "#9D755D",
}
_FALLBACK_COLORS = ("#E45756", "#EECA3B", "#FF9DA6", "#BAB0AC", "#D67195", "#79706E")
# Treemap branches: calm hues, no red (red reads as an error next to the safety badge).
TREEMAP_COLORS = ("#4C78A8", "#72B7B2", "#54A24B", "#EECA3B", "#B279A2", "#9D755D", "#88D27A", "#BAB0AC")

FIGURE_HEIGHT = 380


class HistogramLike(Protocol):
    """What `histogram_figure` reads: `ckptlab.analysis.stats.Histogram` has this shape."""

    @property
    def edges(self) -> Sequence[float]: ...

    @property
    def counts(self) -> Sequence[int]: ...

    @property
    def nan_count(self) -> int: ...

    @property
    def inf_count(self) -> int: ...


@dataclass(frozen=True)
class ModuleRow:
    """One module prefix of a state dict: `encoder.layer.0` at depth 2 holds n_params in n_tensors."""

    prefix: str
    depth: int  # 0 for a top-level module
    n_params: int
    n_tensors: int


@dataclass
class _Node:
    params: int = 0
    tensors: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def dtype_color(dtype: str) -> str:
    """The colour used for `dtype` on every chart (unknown dtypes get a stable fallback)."""
    if dtype in DTYPE_COLORS:
        return DTYPE_COLORS[dtype]
    return _FALLBACK_COLORS[sum(map(ord, dtype)) % len(_FALLBACK_COLORS)]


def module_prefixes(name: str) -> list[str]:
    """Module prefixes of a tensor name, outermost first (each a substring of `name`).

    >>> module_prefixes("encoder.layer.0.attn.q.weight")
    ['encoder', 'encoder.layer', 'encoder.layer.0', 'encoder.layer.0.attn', 'encoder.layer.0.attn.q']
    >>> module_prefixes("dense_1/kernel:0")
    ['dense_1']
    >>> module_prefixes("weight")
    []
    """
    out: list[str] = []
    prev = -1
    for m in _SEP.finditer(name):
        i = m.start()
        if i > prev + 1:  # skip empty segments ("/a", "a..b", "a//b")
            out.append(name[:i])
        prev = i
    return out


def module_tree(tensors: Iterable[TensorMeta], max_depth: int | None = None) -> list[ModuleRow]:
    """Module prefixes with their parameter and tensor counts, in tree order (depth first, children in
    first-seen order, as a state dict lists them). Tensors themselves are not rows; a flat state dict
    (`weight`, `bias`) has no rows.

    >>> ts = [TensorMeta("enc.q.w", (4, 4), "float32", 64), TensorMeta("enc.q.b", (4,), "float32", 16)]
    >>> [(r.prefix, r.depth, r.n_params, r.n_tensors) for r in module_tree(ts)]
    [('enc', 0, 20, 2), ('enc.q', 1, 20, 2)]
    """
    root = _Node()
    for t in tensors:
        node = root
        for prefix in module_prefixes(t.name):
            node = node.children.setdefault(prefix, _Node())
            node.params += t.numel
            node.tensors += 1
    rows: list[ModuleRow] = []

    def walk(node: _Node, depth: int) -> None:
        for prefix, child in node.children.items():
            if max_depth is None or depth <= max_depth:
                rows.append(ModuleRow(prefix, depth, child.params, child.tensors))
                walk(child, depth + 1)

    walk(root, 0)
    return rows


def empty_figure(message: str, height: int = 220) -> go.Figure:
    """A blank figure with `message` in the middle (used for empty or unusable input)."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14}
    )
    fig.update_layout(
        height=height,
        xaxis={"visible": False},
        yaxis={"visible": False},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return fig


def _pct(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "—"


def dtype_figure(dtypes: Mapping[str, int], kind: Literal["bar", "donut"] = "bar") -> go.Figure:
    """Parameters per dtype (`CheckpointMeta.dtypes`), as horizontal bars (largest on top) or a donut."""
    items = [(d, int(n)) for d, n in dtypes.items()]
    total = sum(n for _, n in items)
    if not items or total == 0:
        return empty_figure("no parameters")
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    names = [d for d, _ in items]
    values = [n for _, n in items]
    colors = [dtype_color(d) for d in names]
    custom = [[human_count(n), _pct(n, total), d] for d, n in items]
    hover = "<b>%{customdata[2]}</b><br>%{customdata[0]} params (%{customdata[1]})<extra></extra>"
    if kind == "donut":
        fig = go.Figure(
            go.Pie(
                labels=names,
                values=values,
                hole=0.55,
                sort=False,
                marker={"colors": colors},
                customdata=custom,
                texttemplate="%{label}<br>%{percent}",
                hovertemplate=hover,
            )
        )
        fig.update_layout(
            showlegend=False,
            annotations=[
                {"text": f"{human_count(total)}<br>params", "showarrow": False, "font": {"size": 16}}
            ],
        )
    else:
        fig = go.Figure(
            go.Bar(
                x=values[::-1],
                y=names[::-1],
                orientation="h",
                marker={"color": colors[::-1]},
                customdata=custom[::-1],
                text=[f"{c[0]} · {c[1]}" for c in custom[::-1]],
                textposition="auto",
                hovertemplate=hover,
            )
        )
        fig.update_xaxes(title="parameters", tickformat="~s")
        fig.update_yaxes(type="category", automargin=True)
    fig.update_layout(
        height=min(FIGURE_HEIGHT, 120 + 40 * len(items)) if kind == "bar" else FIGURE_HEIGHT,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return fig


MAX_TREEMAP_NODES = 4000  # beyond this the browser struggles; big models are drawn coarser


def treemap_data(tensors: Sequence[TensorMeta], max_nodes: int | None = None) -> dict[str, Any]:
    """The ids/labels/parents/values the treemap is drawn from (values are parameter counts; a module's
    value is the sum of its tensors, so plotly's `branchvalues="total"` holds).

    With `max_nodes`, a hierarchy that has more boxes is coarsened: first tensors inside modules are left
    out (modules become the leaves), then the deepest module levels; `note` then says what is shown
    (it is "" when everything is)."""
    tree = module_tree(tensors)
    leaves = list(tensors)
    note = ""
    if max_nodes is not None and len(tree) + len(leaves) > max_nodes:
        leaves = [t for t in tensors if not module_prefixes(t.name)]  # top-level tensors keep the total
        note = f"modules only ({len(tensors):,} tensors not drawn)"
        if len(tree) + len(leaves) > max_nodes:
            per_depth = Counter(r.depth for r in tree)
            kept, limit = len(leaves), -1
            for depth in sorted(per_depth):
                if kept + per_depth[depth] > max_nodes:
                    break
                kept += per_depth[depth]
                limit = depth
            tree = [r for r in tree if r.depth <= limit]
            note = f"modules to depth {limit} only ({len(tensors):,} tensors not drawn)"
    ids: list[str] = []
    labels: list[str] = []
    parents: list[str] = []
    values: list[int] = []
    kinds: list[str] = []
    for r in tree:
        prefixes = module_prefixes(r.prefix)
        parent = prefixes[-1] if prefixes else ""
        ids.append(r.prefix)
        labels.append(r.prefix[len(parent) + 1 :] if parent else r.prefix)
        parents.append(parent)
        values.append(r.n_params)
        kinds.append(f"module · {r.n_tensors:,} tensor{'' if r.n_tensors == 1 else 's'}")
    seen = set(ids)
    for t in leaves:
        prefixes = module_prefixes(t.name)
        parent = prefixes[-1] if prefixes else ""
        leaf_id = t.name
        while leaf_id in seen:  # a tensor named like a module (or a duplicate name): keep ids unique
            leaf_id += " (tensor)"
        seen.add(leaf_id)
        ids.append(leaf_id)
        labels.append(t.name[len(parent) + 1 :] if parent else t.name)
        parents.append(parent)
        values.append(t.numel)
        kinds.append(f"{t.dtype} {list(t.shape)}")
    return {"ids": ids, "labels": labels, "parents": parents, "values": values, "kinds": kinds, "note": note}


def module_treemap(
    tensors: Sequence[TensorMeta], max_depth: int = 3, max_nodes: int | None = MAX_TREEMAP_NODES
) -> go.Figure:
    """Treemap of the module hierarchy sized by parameter count; leaves are tensors.

    `max_depth` limits how many levels are drawn at once (click a box to zoom in); `max_nodes` bounds the
    boxes sent to the browser (see `treemap_data`)."""
    data = treemap_data(tensors, max_nodes=max_nodes)
    total = sum(t.numel for t in tensors)
    if not data["ids"] or total == 0:
        return empty_figure("no tensors" if not data["ids"] else "no parameters (all tensors are empty)")
    ids, labels, parents, values, kinds = (data[k] for k in ("ids", "labels", "parents", "values", "kinds"))
    tops = [v for v, p in zip(values, parents, strict=True) if not p]
    if len(tops) > 1:
        # several top-level boxes: plotly draws an empty header band above them; a root box labelled with
        # the whole model's count fills it, and clicking back out of a module returns to it
        root = _unique("all", set(ids))
        label = f"all · {human_count(sum(tops))} params"  # the header band shows the label only
        ids, labels, values = [root, *ids], [label, *labels], [sum(tops), *values]
        parents = ["", *(p or root for p in parents)]
        kinds = [f"whole checkpoint · {len(tensors):,} tensors", *kinds]
        max_depth += 1
    custom = [[human_count(v), _pct(v, total), k] for v, k in zip(values, kinds, strict=True)]
    fig = go.Figure(
        go.Treemap(
            ids=ids,
            labels=labels,
            parents=parents,
            values=values,
            branchvalues="total",
            maxdepth=max_depth,
            customdata=custom,
            texttemplate="<b>%{label}</b><br>%{customdata[0]}",
            hovertemplate="<b>%{id}</b><br>%{customdata[0]} params (%{customdata[1]})"
            "<br>%{customdata[2]}<extra></extra>",
            marker={"line": {"width": 1}},
            # the path bar (shown once a box is clicked) takes its margin even before: at the top that is a
            # blank band above the boxes, below them it reads as the gap before what follows
            pathbar={"visible": True, "side": "top" if data["note"] else "bottom"},
        )
    )
    fig.update_layout(
        height=520,
        margin={"l": 5, "r": 5, "t": 0, "b": 28},
        treemapcolorway=list(TREEMAP_COLORS),
        extendtreemapcolors=True,
    )
    if data["note"]:  # the title takes the top: the path bar goes under it
        fig.update_layout(title={"text": data["note"], "font": {"size": 12}}, margin={"t": 50, "b": 5})
    return fig


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name (2)`, `name (3)`... when a module or tensor already has it as its id."""
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name} ({n})"
    return out


def largest_tensors_figure(
    tensors: Sequence[TensorMeta], top_n: int = 15, by: Literal["numel", "nbytes"] = "nbytes"
) -> go.Figure:
    """Horizontal bars of the `top_n` largest tensors (by bytes or by parameter count), largest on top."""
    if not tensors:
        return empty_figure("no tensors")
    key = (lambda t: t.nbytes) if by == "nbytes" else (lambda t: t.numel)
    top = sorted(tensors, key=lambda t: (-key(t), t.name))[: max(1, top_n)]
    top.reverse()  # plotly draws the first category at the bottom
    values = [key(t) for t in top]
    text = [human_bytes(v) if by == "nbytes" else human_count(v) for v in values]
    custom = [[t.dtype, shape_str(t.shape), human_bytes(t.nbytes), f"{t.numel:,}"] for t in top]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=[t.name for t in top],
            orientation="h",
            marker={"color": [dtype_color(t.dtype) for t in top]},
            text=text,
            textposition="auto",
            customdata=custom,
            hovertemplate="<b>%{y}</b><br>%{customdata[1]} %{customdata[0]}<br>%{customdata[3]} params · "
            "%{customdata[2]}<extra></extra>",
        )
    )
    fig.update_xaxes(title="bytes" if by == "nbytes" else "parameters", tickformat="~s")
    fig.update_yaxes(type="category", automargin=True)
    fig.update_layout(height=max(220, 60 + 24 * len(top)), margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def histogram_figure(hist: HistogramLike, title: str = "", log_y: bool = False) -> go.Figure:
    """Bars of a precomputed value histogram (`edges` has one more element than `counts`).

    NaN/Inf counts are not in the bins; they are written under the title when present."""
    edges = [float(e) for e in hist.edges]
    counts = [int(c) for c in hist.counts]
    notes = [f"{n:,} {what}" for n, what in ((hist.nan_count, "NaN"), (hist.inf_count, "±Inf")) if n]
    if not counts or len(edges) != len(counts) + 1 or sum(counts) == 0:
        return empty_figure("no finite values" + (f" ({', '.join(notes)})" if notes else ""))
    centers = [(a + b) / 2 for a, b in pairwise(edges)]
    widths = [b - a for a, b in pairwise(edges)]
    fig = go.Figure(
        go.Bar(
            x=centers,
            y=counts,
            width=[w if w > 0 else None for w in widths],
            marker={"color": "#4C78A8", "line": {"width": 0}},
            customdata=list(pairwise(edges)),
            hovertemplate="[%{customdata[0]:.4g}, %{customdata[1]:.4g})<br>%{y:,} values<extra></extra>",
        )
    )
    full_title = title + (f"  ({', '.join(notes)} not shown)" if notes else "")
    fig.update_layout(
        title={"text": full_title, "font": {"size": 14}} if full_title else None,
        bargap=0.02,
        height=FIGURE_HEIGHT,
        margin={"l": 10, "r": 10, "t": 40 if full_title else 10, "b": 10},
    )
    fig.update_xaxes(title="value")
    fig.update_yaxes(title="count", type="log" if log_y else "linear")
    return fig


# Index statuses: the usable blue of every other chart; the problems in warm colours, debris greyed out.
STATUS_COLORS: dict[str, str] = {
    "ok": "#4C78A8",
    "incomplete": "#EECA3B",
    "unreadable": "#E45756",
    "debris": "#BAB0AC",
}


def byte_ticks(max_bytes: int | float, n: int = 5) -> tuple[list[float], list[str]]:
    """About `n` round tick positions from 0 to `max_bytes`, labelled in one binary unit.

    >>> byte_ticks(5 * 1024**2)
    ([0, 1048576, 2097152, 3145728, 4194304, 5242880], ['0', '1 MiB', '2 MiB', '3 MiB', '4 MiB', '5 MiB'])
    >>> byte_ticks(0)
    ([0], ['0'])
    """
    if max_bytes <= 0:
        return [0], ["0"]
    unit, div = size_unit([max_bytes])
    span = max_bytes / div
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.floor(span / step + 1e-9)
    vals = [i * step * div for i in range(count + 1)]
    texts = ["0"] + [f"{i * step:g} {unit}" for i in range(1, count + 1)]
    return [int(v) if float(v).is_integer() else v for v in vals], texts


def disk_usage_figure(rows: Iterable[tuple[str, str, int]]) -> go.Figure:
    """Bytes on disk per run, one horizontal bar per run (largest on top) stacked by checkpoint status,
    with the run's total and checkpoint count written at the end of its bar.

    `rows` are (run, status, bytes), one per checkpoint (`ckptlab.index.views.usage_rows`)."""
    by_run: dict[str, Counter[str]] = {}
    counts: Counter[str] = Counter()
    for run, status, size in rows:
        by_run.setdefault(run, Counter())[status] += int(size)
        counts[run] += 1
    totals = {run: sum(c.values()) for run, c in by_run.items()}
    if not by_run or not any(totals.values()):
        return empty_figure("nothing indexed yet" if not by_run else "no bytes on disk")
    runs = sorted(by_run, key=lambda r: (-totals[r], r))[
        ::-1
    ]  # plotly draws the first category at the bottom
    statuses = [s for s in STATUS_COLORS if any(by_run[r][s] for r in runs)]
    statuses += sorted({s for c in by_run.values() for s in c} - set(statuses))
    fig = go.Figure()
    for status in statuses:
        values = [by_run[r][status] for r in runs]
        fig.add_trace(
            go.Bar(
                name=status,
                x=values,
                y=runs,
                orientation="h",
                marker={"color": STATUS_COLORS.get(status, "#79706E")},
                customdata=[[human_bytes(v), _pct(v, totals[r])] for v, r in zip(values, runs, strict=True)],
                hovertemplate="<b>%{y}</b><br>%{fullData.name}: %{customdata[0]} (%{customdata[1]})"
                "<extra></extra>",
            )
        )
    top = max(totals.values())
    for r in runs:
        n = counts[r]
        fig.add_annotation(
            x=totals[r],
            y=r,
            text=f"{human_bytes(totals[r])} · {plural(n, 'checkpoint')}",
            xanchor="left",
            xshift=6,
            showarrow=False,
            font={"size": 12},
        )
    tickvals, ticktext = byte_ticks(top)
    fig.update_xaxes(title="size on disk", tickvals=tickvals, ticktext=ticktext, range=[0, top * 1.3])
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=runs, automargin=True)
    fig.update_layout(
        barmode="stack",
        height=110 + 34 * len(runs),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0,
            "xanchor": "left",
            "x": 0,
            "title": None,
            "traceorder": "normal",  # plotly reverses stacked bars' legend by default
        },
        showlegend=len(statuses) > 1,
    )
    return fig

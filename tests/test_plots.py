"""Unit tests of the pure figure builders in ckptlab.plots (in-memory TensorMeta, no files, no Streamlit)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import plotly.graph_objects as go
import pytest

from ckptlab.model import TensorMeta
from ckptlab.plots import (
    STATUS_COLORS,
    ModuleRow,
    byte_ticks,
    disk_usage_figure,
    dtype_figure,
    empty_figure,
    histogram_figure,
    largest_tensors_figure,
    module_prefixes,
    module_tree,
    module_treemap,
    treemap_data,
)


def tm(name: str, shape: tuple[int, ...], dtype: str = "float32") -> TensorMeta:
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8}[dtype]
    n = 1
    for s in shape:
        n *= s
    return TensorMeta(name, shape, dtype, n * itemsize)


SMALL = [
    tm("encoder.layer.0.attn.q.weight", (4, 4)),
    tm("encoder.layer.0.attn.q.bias", (4,)),
    tm("encoder.layer.1.mlp.weight", (8, 4), "bfloat16"),
    tm("head.weight", (2, 4), "float16"),
    tm("scale", ()),
]


@dataclass(frozen=True)
class Hist:
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    nan_count: int = 0
    inf_count: int = 0


def _annotation_texts(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


# ---------------------------------------------------------------------------------- module hierarchy


@pytest.mark.parametrize(
    ("name", "prefixes"),
    [
        (
            "encoder.layer.0.attn.q.weight",
            ["encoder", "encoder.layer", "encoder.layer.0", "encoder.layer.0.attn", "encoder.layer.0.attn.q"],
        ),
        ("weight", []),
        ("dense_1/kernel:0", ["dense_1"]),
        (
            "model_weights/dense/dense/kernel:0",
            ["model_weights", "model_weights/dense", "model_weights/dense/dense"],
        ),
        ("layers/dense.vars/0", ["layers", "layers/dense", "layers/dense.vars"]),
        ("/a//b", ["/a"]),  # empty segments are skipped, not nodes
    ],
)
def test_module_prefixes(name: str, prefixes: list[str]) -> None:
    assert module_prefixes(name) == prefixes


def test_module_tree_rows_in_tree_order() -> None:
    assert module_tree(SMALL) == [
        ModuleRow("encoder", 0, 52, 3),
        ModuleRow("encoder.layer", 1, 52, 3),
        ModuleRow("encoder.layer.0", 2, 20, 2),
        ModuleRow("encoder.layer.0.attn", 3, 20, 2),
        ModuleRow("encoder.layer.0.attn.q", 4, 20, 2),
        ModuleRow("encoder.layer.1", 2, 32, 1),
        ModuleRow("encoder.layer.1.mlp", 3, 32, 1),
        ModuleRow("head", 0, 8, 1),
    ]


def test_module_tree_max_depth() -> None:
    assert [(r.prefix, r.depth) for r in module_tree(SMALL, max_depth=1)] == [
        ("encoder", 0),
        ("encoder.layer", 1),
        ("head", 0),
    ]


def test_module_tree_keras_names() -> None:
    ts = [tm("dense/kernel:0", (3, 2)), tm("dense/bias:0", (2,)), tm("dense_1/kernel:0", (2, 1))]
    assert module_tree(ts) == [ModuleRow("dense", 0, 8, 2), ModuleRow("dense_1", 0, 2, 1)]


def test_module_tree_flat_and_empty() -> None:
    assert module_tree([tm("weight", (2, 2)), tm("bias", (2,))]) == []
    assert module_tree([]) == []


# ---------------------------------------------------------------------------------- treemap


def test_treemap_exact_ids_parents_values() -> None:
    ts = [tm("enc.q.weight", (4, 4)), tm("enc.q.bias", (4,)), tm("head.weight", (2, 4)), tm("scale", ())]
    fig = module_treemap(ts)
    (trace,) = fig.data
    assert trace.type == "treemap"
    assert trace.branchvalues == "total"
    # several top-level boxes hang under one root box holding the total (plotly leaves a blank band else)
    assert list(trace.ids) == [
        "all",
        "enc",
        "enc.q",
        "head",
        "enc.q.weight",
        "enc.q.bias",
        "head.weight",
        "scale",
    ]
    assert list(trace.labels) == ["all · 29 params", "enc", "q", "head", "weight", "bias", "weight", "scale"]
    assert list(trace.parents) == ["", "all", "enc", "all", "enc.q", "enc.q", "head", "all"]
    assert list(trace.values) == [29, 20, 20, 8, 16, 4, 8, 1]
    assert trace.maxdepth == 4  # the root takes a level: three below it are drawn, as before
    # a module called "all" keeps its id; the root takes another
    (named,) = module_treemap([tm("all.w", (2,)), tm("b", (3,))]).data
    assert list(named.ids)[:2] == ["all (2)", "all"] and list(named.parents)[:2] == ["", "all (2)"]
    # one top-level box is its own root: nothing added
    (single,) = module_treemap([tm("enc.w", (2,)), tm("enc.b", (3,))]).data
    assert list(single.ids) == ["enc", "enc.w", "enc.b"] and single.maxdepth == 3


def test_treemap_values_are_consistent_totals() -> None:
    data = treemap_data(SMALL)
    value = dict(zip(data["ids"], data["values"], strict=True))
    children: dict[str, int] = {}
    for i, p in zip(data["ids"], data["parents"], strict=True):
        if p:
            children[p] = children.get(p, 0) + value[i]
    for parent, total in children.items():
        assert value[parent] == total, parent
    roots = sum(v for v, p in zip(data["values"], data["parents"], strict=True) if not p)
    assert roots == sum(t.numel for t in SMALL) == 61


def test_treemap_keras_and_single_level() -> None:
    data = treemap_data([tm("dense/kernel:0", (3, 2)), tm("bias", (2,))])
    assert data["ids"] == ["dense", "dense/kernel:0", "bias"]
    assert data["labels"] == ["dense", "kernel:0", "bias"]
    assert data["parents"] == ["", "dense", ""]
    flat = treemap_data([tm("weight", (2, 2)), tm("bias", (2,))])
    assert flat["ids"] == ["weight", "bias"] and flat["parents"] == ["", ""] and flat["values"] == [4, 2]


def test_treemap_tensor_named_like_a_module_keeps_ids_unique() -> None:
    data = treemap_data([tm("pos", (2,)), tm("pos.proj", (3,))])
    assert data["ids"] == ["pos", "pos (tensor)", "pos.proj"]
    assert data["parents"] == ["", "", "pos"]


def test_treemap_coarsens_big_hierarchies() -> None:
    # 8 modules + 5 tensors = 13 boxes
    assert treemap_data(SMALL, max_nodes=13)["note"] == ""
    # tensors inside modules dropped first (top-level 'scale' kept so the total stays right)
    data = treemap_data(SMALL, max_nodes=12)
    assert data["ids"] == [r.prefix for r in module_tree(SMALL)] + ["scale"]
    assert data["note"] == "modules only (5 tensors not drawn)"
    # then the deepest module levels: depth 0 (2) + depth 1 (1) + scale = 4 boxes
    data = treemap_data(SMALL, max_nodes=5)
    assert data["ids"] == ["encoder", "encoder.layer", "head", "scale"]
    assert data["values"] == [52, 52, 8, 1]
    assert data["note"] == "modules to depth 1 only (5 tensors not drawn)"
    fig = module_treemap(SMALL, max_nodes=5)
    assert fig.layout.title.text == "modules to depth 1 only (5 tensors not drawn)"
    assert module_treemap(SMALL).layout.title.text is None


def test_treemap_empty() -> None:
    fig = module_treemap([])
    assert len(fig.data) == 0
    assert _annotation_texts(fig) == ["no tensors"]
    assert _annotation_texts(module_treemap([tm("x.empty", (0, 4))])) == [
        "no parameters (all tensors are empty)"
    ]


# ---------------------------------------------------------------------------------- dtype chart


def test_dtype_bar_values_largest_on_top() -> None:
    fig = dtype_figure({"float16": 8, "float32": 21, "bfloat16": 32})
    (bar,) = fig.data
    assert bar.type == "bar" and bar.orientation == "h"
    # plotly draws the first category at the bottom: reversed so the largest is on top
    assert list(bar.y) == ["float16", "float32", "bfloat16"]
    assert list(bar.x) == [8, 21, 32]
    assert list(bar.text) == ["8 · 13.1%", "21 · 34.4%", "32 · 52.5%"]


def test_dtype_donut() -> None:
    fig = dtype_figure({"float32": 3_000_000, "float16": 1_000_000}, kind="donut")
    (pie,) = fig.data
    assert pie.type == "pie" and pie.hole == 0.55
    assert list(pie.labels) == ["float32", "float16"]
    assert list(pie.values) == [3_000_000, 1_000_000]
    assert _annotation_texts(fig) == ["4M<br>params"]


def test_dtype_empty() -> None:
    assert _annotation_texts(dtype_figure({})) == ["no parameters"]
    assert _annotation_texts(dtype_figure({"float32": 0})) == ["no parameters"]


# ---------------------------------------------------------------------------------- size bars, histogram


def test_largest_tensors_top_n_by_bytes() -> None:
    fig = largest_tensors_figure(SMALL, top_n=3)
    (bar,) = fig.data
    # bytes: q.weight 64, mlp.weight 64 (bf16 32 el), head 16, q.bias 16, scale 4; ties by name
    assert list(bar.y)[::-1] == [
        "encoder.layer.0.attn.q.weight",
        "encoder.layer.1.mlp.weight",
        "encoder.layer.0.attn.q.bias",
    ]
    assert list(bar.x)[::-1] == [64, 64, 16]
    assert list(bar.text)[::-1] == ["64 B", "64 B", "16 B"]


def test_largest_tensors_by_numel_and_empty() -> None:
    (bar,) = largest_tensors_figure(SMALL, top_n=2, by="numel").data
    assert list(bar.y)[::-1] == ["encoder.layer.1.mlp.weight", "encoder.layer.0.attn.q.weight"]
    assert list(bar.x)[::-1] == [32, 16]
    assert _annotation_texts(largest_tensors_figure([])) == ["no tensors"]


def test_histogram_bars() -> None:
    fig = histogram_figure(Hist((0.0, 1.0, 2.0, 4.0), (3, 0, 5)), title="w")
    (bar,) = fig.data
    assert list(bar.x) == [0.5, 1.5, 3.0]
    assert list(bar.y) == [3, 0, 5]
    assert list(bar.width) == [1.0, 1.0, 2.0]
    assert fig.layout.title.text == "w"
    assert fig.layout.yaxis.type == "linear"
    assert histogram_figure(Hist((0.0, 1.0), (1,)), log_y=True).layout.yaxis.type == "log"


def test_histogram_reports_nan_inf_and_handles_empty() -> None:
    fig = histogram_figure(Hist((0.0, 1.0), (2,), nan_count=3, inf_count=1), title="w")
    assert fig.layout.title.text == "w  (3 NaN, 1 ±Inf not shown)"
    assert _annotation_texts(histogram_figure(Hist((), ()))) == ["no finite values"]
    assert _annotation_texts(histogram_figure(Hist((), (), nan_count=4))) == ["no finite values (4 NaN)"]
    assert _annotation_texts(histogram_figure(Hist((0.0, 1.0), (0,)))) == ["no finite values"]


def test_empty_figure_is_blank_with_note() -> None:
    fig = empty_figure("nothing here")
    assert len(fig.data) == 0 and _annotation_texts(fig) == ["nothing here"]
    assert fig.layout.xaxis.visible is False


# ------------------------------------------------------------------------------------------ disk usage

MiB = 1024**2


def test_disk_usage_stacks_statuses_per_run_largest_on_top() -> None:
    rows = [
        ("lightning-run", "ok", 2 * MiB),
        ("lightning-run", "ok", 2 * MiB),
        ("lightning-run", "debris", MiB),
        ("hf-run", "ok", 6 * MiB),
        ("keras-run", "unreadable", MiB // 2),
        ("sharded", "incomplete", MiB),
    ]
    fig = disk_usage_figure(rows)
    assert fig.layout.barmode == "stack"
    # statuses in their fixed order, each with its colour; runs by total, the largest drawn on top (last)
    assert [t.name for t in fig.data] == ["ok", "incomplete", "unreadable", "debris"]
    assert [t.marker.color for t in fig.data] == [STATUS_COLORS[t.name] for t in fig.data]
    runs = ["keras-run", "sharded", "lightning-run", "hf-run"]
    assert all(list(t.y) == runs for t in fig.data)
    by_status = {t.name: list(t.x) for t in fig.data}
    assert by_status == {
        "ok": [0, 0, 4 * MiB, 6 * MiB],
        "incomplete": [0, MiB, 0, 0],
        "unreadable": [MiB // 2, 0, 0, 0],
        "debris": [0, 0, MiB, 0],
    }
    # totals in binary units with the checkpoint count at the end of each bar
    assert _annotation_texts(fig) == [
        "512.0 KiB · 1 checkpoint",
        "1.0 MiB · 1 checkpoint",
        "5.0 MiB · 3 checkpoints",
        "6.0 MiB · 1 checkpoint",
    ]
    assert [a.x for a in fig.layout.annotations] == [MiB // 2, MiB, 5 * MiB, 6 * MiB]
    assert list(fig.layout.xaxis.ticktext) == ["0", "2 MiB", "4 MiB", "6 MiB"]
    assert list(fig.data[0].customdata[2]) == ["4.0 MiB", "80.0%"]  # hover: human bytes and share
    assert fig.layout.showlegend is True


def test_disk_usage_single_status_has_no_legend_and_empty_inputs_say_why() -> None:
    fig = disk_usage_figure([("a", "ok", 10), ("b", "ok", 2000)])
    assert [t.name for t in fig.data] == ["ok"]
    assert fig.layout.showlegend is False
    assert list(fig.data[0].y) == ["a", "b"]
    assert _annotation_texts(disk_usage_figure([])) == ["nothing indexed yet"]
    assert _annotation_texts(disk_usage_figure([("a", "debris", 0)])) == ["no bytes on disk"]


@pytest.mark.parametrize(
    ("top", "texts"),
    [
        (0, ["0"]),
        (700, ["0", "200 B", "400 B", "600 B"]),
        (5 * MiB, ["0", "1 MiB", "2 MiB", "3 MiB", "4 MiB", "5 MiB"]),
        (1.5 * MiB, ["0", "0.5 MiB", "1 MiB", "1.5 MiB"]),
        (140 * 1024**3, ["0", "50 GiB", "100 GiB"]),
    ],
)
def test_byte_ticks(top: float, texts: list[str]) -> None:
    vals, labels = byte_ticks(top)
    assert labels == texts
    assert vals[0] == 0 and all(b > a for a, b in pairwise(vals)) and vals[-1] <= top

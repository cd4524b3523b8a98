"""The Streamlit pages driven headlessly with streamlit.testing (AppTest), plus ckptlab.ui's pure helpers.

Every test points CKPTLAB_ROOT at a folder in tmp_path, so nothing builds the demo in the real user dir.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from ui_fixtures import PT_PARAMS, ST_PARAMS, build_ui_root, write_safetensors

from ckptlab import ui
from ckptlab.model import TensorMeta, human_bytes

PROJECT = Path(__file__).resolve().parent.parent
INSPECT = "pages/1_Inspect.py"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = tmp_path / "root"
    out = build_ui_root(root)
    monkeypatch.setenv(ui.ROOT_ENV, str(root))
    monkeypatch.chdir(PROJECT)
    return out


def home() -> AppTest:
    return AppTest.from_file(str(PROJECT / "app.py"), default_timeout=60)


def inspect(path: Path | str | None = None) -> AppTest:
    at = home().run()
    at.switch_page(INSPECT)
    if path is not None:
        at.query_params[ui.PATH_KEY] = str(path)
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: AppTest, first_column: str) -> pd.DataFrame:
    """The dataframe shown whose first column is `first_column`."""
    for df in at.dataframe:
        v = df.value
        if isinstance(v, pd.DataFrame) and len(v.columns) and v.columns[0] == first_column:
            return v
    raise AssertionError(f"no table starting with column {first_column!r}")


def alerts(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# ------------------------------------------------------------------------------------------ home page


def test_home_lists_checkpoints(files: dict[str, Path]) -> None:
    at = home().run()
    assert not at.exception
    assert at.title[0].value == "ckptlab"
    df = frame(at, "checkpoint").set_index("checkpoint")
    assert list(df.index) == ["broken.pt", "evil.pt", "model.safetensors", "run/last.pt"]
    assert list(df["format"]) == ["unreadable", "torch-zip", "safetensors", "torch-zip"]
    assert df.loc["model.safetensors", "params"] == ST_PARAMS
    assert df.loc["model.safetensors", "tensors"] == 4
    assert df.loc["model.safetensors", "size"] == files["safetensors"].stat().st_size
    assert df.loc["run/last.pt", "params"] == PT_PARAMS
    assert (df.loc["run/last.pt", "step"], df.loc["run/last.pt", "epoch"]) == (120, 3)
    assert df.loc["model.safetensors", "safety"] == "safe"
    assert df.loc["evil.pt", "safety"] == "⚠ UNSAFE: posix.system"
    assert df.loc["broken.pt", "error"].startswith("not a PyTorch checkpoint")
    assert metrics(at) == {
        "Checkpoints": "4",
        "Total size": human_bytes(sum(f.stat().st_size for f in files.values() if f.name != "broken.pt")),
        "Largest model": f"{ST_PARAMS} params",
        "Unsafe / unreadable": "1 / 1",
    }
    # every checkpoint links to Inspect with ?path=, grouped by folder ("run/" holds last.pt)
    links = {link.label: link.proto for link in at.get("page_link")}
    assert sorted(links) == ["broken.pt", "evil.pt", "last.pt", "model.safetensors"]
    assert links["last.pt"].page == "Inspect"
    assert links["last.pt"].query_string == "path=" + quote(str(files["torch"]), safe="")
    assert [m.value for m in at.markdown if m.value.startswith("**")] == ["**run/**"]
    # an error column is shown because broken.pt is unreadable
    assert at.dataframe[0].proto.column_order == [
        "checkpoint",
        "format",
        "size",
        "params",
        "tensors",
        "step",
        "epoch",
        "safety",
        "error",
    ]


def test_home_selected_row_links_to_inspect(files: dict[str, Path]) -> None:
    at = home().run()
    at.session_state["checkpoints"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    link = at.get("page_link")[0].proto
    assert (link.label, link.page) == ("Inspect model.safetensors", "Inspect")
    assert link.query_string == "path=" + quote(str(files["safetensors"]), safe="")


def test_home_empty_and_missing_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    monkeypatch.setenv(ui.ROOT_ENV, str(tmp_path))
    at = home().run()
    assert not at.exception
    assert "No checkpoints found" in at.info[0].value
    monkeypatch.setenv(ui.ROOT_ENV, str(tmp_path / "nope"))
    at = home().run()
    assert not at.exception
    assert alerts(at) == [ui.md_escape(f"{tmp_path / 'nope'}: not a directory")]


def test_home_root_box_changes_the_listing(files: dict[str, Path]) -> None:
    at = home().run()
    at.text_input(key="_ckptlab_root_box").input(str(files["torch"].parent)).run()
    assert not at.exception
    assert list(frame(at, "checkpoint")["checkpoint"]) == ["last.pt"]


def test_home_rescan_finds_new_checkpoints(files: dict[str, Path]) -> None:
    at = home().run()
    write_safetensors(files["safetensors"].parent / "new.safetensors")
    at.run()
    assert "new.safetensors" not in list(frame(at, "checkpoint")["checkpoint"])  # listing cached for 15 s
    at.button(key="_ckptlab_rescan").click().run()
    assert not at.exception
    assert "new.safetensors" in list(frame(at, "checkpoint")["checkpoint"])


def test_home_builds_the_demo_when_no_root_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    write_safetensors(demo_dir / "demo.safetensors")
    calls: list[int] = []

    def ensure_demo() -> Path:
        calls.append(1)
        return demo_dir

    monkeypatch.setitem(sys.modules, "ckptlab.demo", types.SimpleNamespace(ensure_demo=ensure_demo))
    monkeypatch.delenv(ui.ROOT_ENV, raising=False)
    monkeypatch.chdir(PROJECT)
    ui._demo_root.clear()
    try:
        at = home().run()
        assert not at.exception
        assert list(frame(at, "checkpoint")["checkpoint"]) == ["demo.safetensors"]
        assert "error" not in at.dataframe[0].proto.column_order  # nothing unreadable: no error column
        home().run()
        assert calls == [1]  # built once per process (st.cache_resource), not per run
    finally:
        ui._demo_root.clear()


def test_home_survives_a_failing_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def ensure_demo() -> Path:
        raise RuntimeError("no space left")

    monkeypatch.setitem(sys.modules, "ckptlab.demo", types.SimpleNamespace(ensure_demo=ensure_demo))
    monkeypatch.delenv(ui.ROOT_ENV, raising=False)
    monkeypatch.chdir(PROJECT)
    ui._demo_root.clear()
    try:
        at = home().run()
        assert not at.exception
        assert "RuntimeError: no space left" in at.warning[0].value.replace("\\", "")
        assert at.info[0].value.startswith("Type a folder above")
    finally:
        ui._demo_root.clear()


# ------------------------------------------------------------------------------------------ inspect page


def test_inspect_safetensors_from_query_param(files: dict[str, Path]) -> None:
    at = inspect(files["safetensors"])
    assert not at.exception
    assert not alerts(at)
    assert metrics(at) == {
        "Format": "safetensors",
        "Size": ui.load_meta(files["safetensors"]).size_str,
        "Parameters": str(ST_PARAMS),
        "Tensors": "4",
        "Step": "—",
        "Epoch": "—",
    }
    assert at.success[0].value.startswith("**Safe**")
    tensors = frame(at, "tensor")
    assert tensors.to_dict("records") == [
        {"tensor": "encoder.layer.0.attn.q.bias", "shape": "8", "dtype": "float32", "params": 8, "bytes": 32},
        {
            "tensor": "encoder.layer.0.attn.q.weight",
            "shape": "8 × 8",
            "dtype": "float32",
            "params": 64,
            "bytes": 256,
        },
        {"tensor": "head.bias", "shape": "4", "dtype": "float16", "params": 4, "bytes": 8},
        {"tensor": "head.weight", "shape": "4 × 8", "dtype": "float16", "params": 32, "bytes": 64},
    ]
    modules = frame(at, "module")
    assert modules[["module", "depth", "params", "tensors"]].to_dict("records") == [
        {"module": "encoder", "depth": 0, "params": 72, "tensors": 2},
        {"module": "encoder.layer", "depth": 1, "params": 72, "tensors": 2},
        {"module": "encoder.layer.0", "depth": 2, "params": 72, "tensors": 2},
        {"module": "head", "depth": 0, "params": 36, "tensors": 2},
    ]
    assert json.loads(at.json[0].value) == {"format": "pt", "note": "ckptlab ui fixture"}
    # the picker shows the same file
    assert at.selectbox(key="_ckptlab_pick").value == str(files["safetensors"])


def test_inspect_filters(files: dict[str, Path]) -> None:
    at = inspect(files["safetensors"])
    at.text_input(key="tensor_filter").input("HEAD weight").run()
    assert list(frame(at, "tensor")["tensor"]) == ["head.weight"]
    at.text_input(key="module_filter").input("layer").run()
    at.slider(key="module_depth").set_value(3).run()
    assert list(frame(at, "module")["module"]) == ["encoder.layer", "encoder.layer.0", "encoder.layer.0.attn"]
    assert not at.exception


def test_inspect_torch_file_and_stats(files: dict[str, Path]) -> None:
    at = inspect()
    assert at.info[0].value.startswith("Pick a checkpoint")
    at.text_input(key=ui.PATH_KEY).input(str(files["torch"])).run()
    assert not at.exception
    m = metrics(at)
    assert (m["Format"], m["Parameters"], m["Tensors"], m["Step"], m["Epoch"]) == (
        "torch-zip",
        str(PT_PARAMS),
        "2",
        "120",
        "3",
    )
    assert list(frame(at, "tensor")["shape"]) == ["5 × 3", "5"]
    assert frame(at, "name").to_dict("records") == [
        {"name": "epoch", "kind": "int", "summary": "3"},
        {"name": "global_step", "kind": "int", "summary": "120"},
    ]
    assert "min" not in metrics(at)
    at.selectbox(key="stats_tensor").select("fc.weight")
    at.selectbox(key="stats_device").select("cpu")
    at.button(key="stats_button").click().run()
    assert not at.exception
    assert not alerts(at)
    m = metrics(at)
    # fc.weight = arange(15): exact stats
    assert {k: m[k] for k in ("min", "max", "mean", "std", "zeros", "NaN", "Inf")} == {
        "min": "0",
        "max": "14",
        "mean": "7",
        "std": "4.472",
        "zeros": "1",
        "NaN": "0",
        "Inf": "0",
    }
    assert len(at.get("plotly_chart")) == 4  # dtype, largest, treemap (all tabs run) + the histogram
    # a later rerun (another widget) keeps the result on screen
    at.toggle(key="stats_log").set_value(True).run()
    assert metrics(at)["max"] == "14"


def test_inspect_training_state_tied_weights_and_odd_dtypes(
    files: dict[str, Path], zip_pt: Path, train_pt: Path
) -> None:
    # zip_pt (the lead's conftest): tied embed/head weights, bf16, fp8, a strided view, an int64 scalar
    at = inspect(zip_pt)
    assert not at.exception and not alerts(at)
    tied = frame(at, "storage")
    assert tied["tensors"].tolist() == ["embed.weight, head.weight"]
    assert sorted(frame(at, "tensor")["dtype"].unique()) == ["bfloat16", "float32", "float8_e4m3fn", "int64"]
    at.selectbox(key="stats_tensor").select("head.scale")
    at.selectbox(key="stats_device").select("cpu")
    at.button(key="stats_button").click().run()
    assert not at.exception and not alerts(at)
    assert (metrics(at)["min"], metrics(at)["max"]) == ("0.5", "1.5")
    # train_pt: model + Adam + StepLR + RNG state, as the PyTorch tutorial saves it
    at = inspect(train_pt)
    assert not at.exception
    badges = [m.value for m in at.markdown if "-badge[" in m.value]  # st.badge renders as markdown
    assert badges[:3] == [
        ":green-badge[:material/check: optimizer state]",
        ":green-badge[:material/check: LR scheduler]",
        ":green-badge[:material/check: RNG state]",
    ]
    assert metrics(at)["Epoch"] == "3"


def test_inspect_picker_selects_a_checkpoint(files: dict[str, Path]) -> None:
    at = inspect()
    at.selectbox(key="_ckptlab_pick").select(str(files["torch"])).run()
    assert not at.exception
    assert at.text_input(key=ui.PATH_KEY).value == str(files["torch"])
    assert metrics(at)["Format"] == "torch-zip"


def test_inspect_unsafe_file_shows_red_badge(files: dict[str, Path]) -> None:
    at = inspect(files["unsafe"])
    assert not at.exception
    (err,) = alerts(at)
    assert err.startswith("**Unsafe:** `posix.system`")
    assert "pickle references posix\\.system \\(not imported or called\\)" in err
    assert metrics(at)["Format"] == "torch-zip"


@pytest.mark.parametrize(
    ("role", "cause"),
    [
        ("pickle", "not a PyTorch checkpoint"),
        (None, "no such file or directory"),
    ],
)
def test_inspect_errors_are_one_line(
    files: dict[str, Path], tmp_path: Path, role: str | None, cause: str
) -> None:
    path = files[role] if role else tmp_path / "missing.pt"
    at = inspect(path)
    assert not at.exception
    (err,) = alerts(at)
    text = err.replace("\\", "")
    assert text.startswith(f"{path}: {cause}")
    assert "\n" not in text and "Traceback" not in text
    assert not at.metric


# ------------------------------------------------------------------------------------------ ui helpers


def test_find_checkpoints_groups_multi_file_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoint-500").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-500" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "run" / "checkpoint-500" / "optimizer.pt").write_bytes(b"x")
    (tmp_path / "dcp").mkdir()
    (tmp_path / "dcp" / ".metadata").write_bytes(b"x")
    (tmp_path / "dcp" / "__0_0.distcp").write_bytes(b"x")
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text("{}")
    (tmp_path / "sharded" / "model-00001-of-00002.safetensors").write_bytes(b"x")
    (tmp_path / "sharded" / "model-00002-of-00002.safetensors").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "hidden.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "model.ckpt").write_bytes(b"x")
    (tmp_path / "weights.h5").write_bytes(b"x")
    found = [str(p.relative_to(tmp_path)) for p in ui.find_checkpoints(tmp_path)]
    assert found == [
        "dcp",
        "model.ckpt",
        "run/checkpoint-500",
        "sharded/model.safetensors.index.json",
        "weights.h5",
    ]
    assert len(ui.find_checkpoints(tmp_path, limit=2)) == 2
    assert ui.find_checkpoints(tmp_path / "absent") == []


def test_group_by_folder() -> None:
    items = [
        ("a.pt", "/r/a.pt"),
        ("run/x.pt", "/r/run/x.pt"),
        ("run/sub/y.pt", "/r/run/sub/y.pt"),
        ("z.pt", "/r/z.pt"),
    ]
    assert ui.group_by_folder(items) == [
        ("", [("a.pt", "/r/a.pt"), ("z.pt", "/r/z.pt")]),
        ("run", [("x.pt", "/r/run/x.pt"), ("sub/y.pt", "/r/run/sub/y.pt")]),
    ]
    assert ui.group_by_folder([]) == []


def test_natural_sort() -> None:
    names = ["checkpoint-128", "checkpoint-64", "checkpoint-1000", "best"]
    assert sorted(names, key=ui.natural_key) == ["best", "checkpoint-64", "checkpoint-128", "checkpoint-1000"]


def test_table_helpers() -> None:
    ts = [
        TensorMeta("enc.attn.q.weight", (4, 4), "float32", 64),
        TensorMeta("enc.mlp.weight", (4,), "float16", 8),
        TensorMeta("step", (), "int64", 8),
    ]
    assert [t.name for t in ui.filter_tensors(ts, "  ATTN  weight ")] == ["enc.attn.q.weight"]
    assert [t.name for t in ui.filter_tensors(ts, "")] == [t.name for t in ts]
    assert ui.filter_tensors(ts, "nothing") == []
    assert ui.tensor_frame(ts).to_dict("records")[2] == {
        "tensor": "step",
        "shape": "scalar",
        "dtype": "int64",
        "params": 1,
        "bytes": 8,
    }
    assert ui.shape_str((4096, 11008)) == "4096 × 11008"
    assert ui.md_escape("posix.system_x") == "posix\\.system\\_x"
    assert ui.relative("/a/b/c.pt", Path("/a")) == "b/c.pt"
    assert ui.relative("/x/c.pt", Path("/a")) == "/x/c.pt"

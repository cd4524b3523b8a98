"""The Streamlit pages driven headlessly with streamlit.testing (AppTest), plus ckptlab.ui's table helpers.

Every test points CKPTLAB_DB at a database in tmp_path and CKPTLAB_ROOT at a folder in tmp_path (or mocks the
demo), so nothing touches the real user cache or data dirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from ui_fixtures import INDEX_ROWS, PT_PARAMS, ST_PARAMS, backdate, build_ui_root, write_safetensors

from ckptlab import ui
from ckptlab.demo import DEMO_VERSION, MARKER
from ckptlab.model import TensorMeta, TensorStats, human_bytes
from ckptlab.ui.inspect import other_tensors_label, relative_files, stats_caption, table_height

PROJECT = Path(__file__).resolve().parent.parent
INSPECT = "pages/1_Inspect.py"
REAL_HF = Path(__file__).parent / "data" / "real" / "hf" / "checkpoint-12"  # a real HF Trainer folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh index database and the project as the working directory; no root set."""
    monkeypatch.setenv("CKPTLAB_DB", str(tmp_path / "index.sqlite"))
    monkeypatch.delenv(ui.ROOT_ENV, raising=False)
    monkeypatch.chdir(PROJECT)
    return tmp_path


@pytest.fixture
def files(env: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = env / "root"
    out = build_ui_root(root)
    monkeypatch.setenv(ui.ROOT_ENV, str(root))
    return out


@pytest.fixture
def fake_demo(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """`ensure_demo` returns a finished one-file demo (written just now); returns the list of calls."""
    demo_dir = env / "demo"
    demo_dir.mkdir()
    write_safetensors(demo_dir / "demo.safetensors")
    (demo_dir / MARKER).write_text(json.dumps({"demo_version": DEMO_VERSION}))
    calls: list[Path] = []

    def ensure_demo() -> Path:
        calls.append(demo_dir)
        return demo_dir

    monkeypatch.setattr("ckptlab.demo.ensure_demo", ensure_demo)
    ui._demo_root.clear()
    yield calls
    ui._demo_root.clear()


def home() -> AppTest:
    return AppTest.from_file(str(PROJECT / "app.py"), default_timeout=90)


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


def column_config(at: AppTest, first_column: str) -> dict:
    """The column config sent with the table whose first column is `first_column`."""
    for df in at.dataframe:
        v = df.value
        if isinstance(v, pd.DataFrame) and len(v.columns) and v.columns[0] == first_column:
            return json.loads(df.proto.columns)
    raise AssertionError(f"no table starting with column {first_column!r}")


def index_rows(at: AppTest) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in frame(at, "run")[["run", "checkpoint", "status"]].itertuples(index=False)]


def chart(at: AppTest) -> dict:
    (fig,) = at.get("plotly_chart")
    return json.loads(fig.proto.spec)


def alerts(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def scan_lines(at: AppTest) -> list[str]:
    return [a.value.replace("\\", "") for a in [*at.success, *at.warning] if "Scanned:" in a.value]


# ------------------------------------------------------------------------------------------ home page


def test_home_indexes_the_root_on_first_start(files: dict[str, Path]) -> None:
    at = home().run()
    assert not at.exception
    assert at.title[0].value == "ckptlab"
    (line,) = scan_lines(at)
    assert line.startswith("Scanned: 6 checkpoints (4 read, 0 unchanged), 1 error in ")
    sizes = {role: p.stat().st_size for role, p in files.items()}
    sizes["incomplete"] += files["incomplete"].with_name("model-00001-of-00002.safetensors").stat().st_size
    assert metrics(at) == {
        "Checkpoints": "6",
        "Runs": "3",
        "Total size": human_bytes(sum(sizes.values())),
        "Unsafe / unreadable": "1 / 1",
        "Incomplete / debris": "1 / 1",
    }
    assert index_rows(at) == INDEX_ROWS
    df = frame(at, "run").set_index("checkpoint")
    st_row, pt_row = df.loc["model.safetensors"], df.loc["last.pt"]
    assert (st_row["format"], st_row["params"], st_row["safety"], st_row["layout"]) == (
        "safetensors",
        ST_PARAMS,
        "safe",
        "file",
    )
    assert st_row["size"] == pytest.approx(sizes["safetensors"] / 1024)  # KiB: the largest file is < 1 MiB
    assert (pt_row["format"], pt_row["params"], pt_row["step"], pt_row["epoch"]) == (
        "torch-zip",
        PT_PARAMS,
        120,
        3,
    )
    assert df.loc["evil.pt", "safety"] == "⚠ unsafe: posix.system"
    assert df.loc["broken.pt", "reason"].startswith("not a PyTorch checkpoint")
    assert pd.isna(df.loc["broken.pt", "safety"])  # nothing could be checked
    assert df.loc["step_200.pt.tmp", "reason"] == "temporary file (*.tmp)"
    assert (
        df.loc["model.safetensors.index.json", "reason"]
        == "missing shard(s): model-00002-of-00002.safetensors"
    )
    assert df.loc["model.safetensors.index.json", "path"] == str(files["incomplete"])
    table = at.dataframe[0].proto
    assert table.column_order == [
        "run",
        "checkpoint",
        "step",
        "epoch",
        "format",
        "size",
        "params",
        "status",
        "safety",
        "metrics",
        "layout",
        "reason",
    ]  # `path` is kept for the selection but not shown
    assert json.loads(table.columns)["size"]["label"] == "size (KiB)"
    # scan errors: the unreadable file
    (errors,) = at.expander
    assert errors.label == "Scan errors (1)"
    assert frame(at, "path")["path"].tolist() == [str(files["pickle"])]
    # disk usage: one bar per run, stacked by status, largest run on top
    fig = chart(at)
    assert [t["name"] for t in fig["data"]] == ["ok", "incomplete", "unreadable", "debris"]
    ok = fig["data"][0]
    assert dict(zip(ok["y"], ok["x"], strict=True)) == {
        "run": sizes["torch"],
        "root": sizes["safetensors"] + sizes["unsafe"],
        "sharded": 0,
    }
    assert ok["y"][-1] == "run"  # drawn at the top: run holds the most bytes (last.pt + the debris)
    # the sidebar lists the root
    assert [m.value for m in at.sidebar.markdown] == ["**root**"]
    caption = at.sidebar.caption[0].value.replace("\\", "")
    assert caption == f"{files['safetensors'].parent}  \n6 checkpoints · scanned just now"


def test_home_filters_narrow_the_table(files: dict[str, Path]) -> None:
    at = home().run()
    assert [m.options for m in at.multiselect] == [
        ["root", "run", "sharded"],
        ["(none)", "safetensors", "torch-zip"],
        ["ok", "unreadable", "incomplete", "debris"],
        ["safe", "unsafe", "unchecked"],
    ]
    at.multiselect(key="filter_status").select("ok").run()
    assert index_rows(at) == [r for r in INDEX_ROWS if r[2] == "ok"]
    assert at.main.caption[1].value.startswith("3 of 6 checkpoints")
    at.multiselect(key="filter_run").select("run").run()
    assert index_rows(at) == [("run", "last.pt", "ok")]
    assert [t["y"] for t in chart(at)["data"]] == [["run"]]  # the chart follows the filters
    at.multiselect(key="filter_status").unselect("ok").run()
    at.multiselect(key="filter_run").unselect("run").select("root").run()
    at.multiselect(key="filter_safety").select("unsafe").run()
    assert index_rows(at) == [("root", "evil.pt", "ok")]
    at.multiselect(key="filter_safety").unselect("unsafe").run()
    at.multiselect(key="filter_format").select("(none)").run()
    assert index_rows(at) == [("root", "broken.pt", "unreadable")]
    assert not at.exception
    # the filters survive a visit to Inspect (widget state alone would not)
    at.switch_page(INSPECT).run()
    at.switch_page("app.py").run()
    assert not at.exception
    assert index_rows(at) == [("root", "broken.pt", "unreadable")]


def test_home_second_visit_reuses_the_index(files: dict[str, Path]) -> None:
    home().run()
    at = home().run()  # a new session: the root is indexed already, so nothing is scanned
    assert not at.exception
    assert scan_lines(at) == []
    assert index_rows(at) == INDEX_ROWS
    at.button(key="_ckptlab_scan").click().run()
    (line,) = scan_lines(at)
    # incremental: nothing read again; everything but the debris (never reused) is "unchanged"
    # the unchanged unreadable file is reused, and still reported as an error
    assert line.startswith("Scanned: 6 checkpoints (0 read, 5 unchanged), 1 error in ")
    assert frame(at, "path")["path"].tolist() == [str(files["pickle"])]  # still listed as an error


def test_home_scan_finds_new_changed_and_deleted_checkpoints(files: dict[str, Path]) -> None:
    at = home().run()
    root = files["safetensors"].parent
    new = write_safetensors(root / "run" / "epoch=4-step=300.safetensors")
    then = files["torch"].stat().st_mtime
    os.utime(new, (then, then))  # settled; the other files keep their mtimes, so they are not read again
    files["unsafe"].unlink()
    at.run()
    assert ("run", "epoch=4-step=300.safetensors", "ok") not in index_rows(at)  # no scan without asking
    at.button(key="_ckptlab_scan").click().run()
    assert not at.exception
    (line,) = scan_lines(at)
    assert line.startswith("Scanned: 6 checkpoints (1 read, 4 unchanged)")  # the new one read; debris redone
    rows = index_rows(at)
    assert ("run", "epoch=4-step=300.safetensors", "ok") in rows
    assert ("root", "evil.pt", "ok") not in rows
    assert metrics(at)["Unsafe / unreadable"] == "0 / 1"


def test_home_selecting_a_row_opens_inspect(files: dict[str, Path]) -> None:
    at = home().run()
    row = [c for _r, c, _s in INDEX_ROWS].index("model.safetensors")
    at.session_state[ui.TABLE_KEY] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert at.title[0].value == "Inspect a checkpoint"
    assert at.query_params[ui.PATH_KEY] == str(files["safetensors"])
    assert metrics(at)["Format"] == "safetensors"
    assert at.selectbox(key="_ckptlab_pick").value == str(files["safetensors"])
    at.switch_page("app.py").run()  # back home: the old selection does not bounce to Inspect again
    assert not at.exception
    assert at.title[0].value == "ckptlab"


def test_home_add_and_forget_roots(files: dict[str, Path], env: Path) -> None:
    other = env / "more"
    (other / "exp1").mkdir(parents=True)
    write_safetensors(other / "exp1" / "checkpoint_epoch_2.safetensors")
    backdate(other)
    at = home().run()
    at.sidebar.text_input(key="_ckptlab_add_root").input(str(env / "missing")).run()
    assert [e.value.replace("\\", "") for e in at.sidebar.error] == [f"{env / 'missing'}: not a directory"]
    at.sidebar.text_input(key="_ckptlab_add_root").input(str(other)).run()
    assert not at.exception and not at.sidebar.error
    (line,) = scan_lines(at)
    assert line.startswith("Scanned: 1 checkpoint (1 read, 0 unchanged), 0 errors")
    assert [m.value for m in at.sidebar.markdown] == ["**more**", "**root**"]
    assert metrics(at)["Checkpoints"] == "7"
    assert ("exp1", "checkpoint_epoch_2.safetensors", "ok") in index_rows(at)
    assert at.sidebar.text_input(key="_ckptlab_add_root").value == ""  # cleared for the next one
    at.sidebar.button(key="_ckptlab_forget_0").click().run()  # "more": roots are listed by path
    assert not at.exception
    assert [m.value for m in at.sidebar.markdown] == ["**root**"]
    assert index_rows(at) == INDEX_ROWS
    # forgetting the $CKPTLAB_ROOT root too leaves an empty index (not rescanned behind the user's back)
    at.sidebar.button(key="_ckptlab_forget_0").click().run()
    assert not at.exception
    assert at.info[0].value.startswith("The index is empty")
    assert "not indexed: press Scan" in at.sidebar.caption[0].value.replace("\\", "")


def test_home_scans_every_root_of_the_env_variable(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = env / "a", env / "b"
    for d in (a, b):
        d.mkdir()
        write_safetensors(d / "model.safetensors")
        backdate(d)
    monkeypatch.setenv(ui.ROOT_ENV, os.pathsep.join([str(a), str(b), str(env / "gone")]))
    at = home().run()
    assert not at.exception
    (line,) = scan_lines(at)
    assert line.startswith("Scanned: 2 checkpoints (2 read, 0 unchanged), 1 error")
    missing, _line = (w.value.replace("\\", "") for w in at.warning)
    assert missing == f"{env / 'gone'}: no such file or directory"
    # two roots whose checkpoints lie in the root itself: the runs are labelled by the roots' names
    assert index_rows(at) == [("a", "model.safetensors", "ok"), ("b", "model.safetensors", "ok")]


def test_home_builds_and_scans_the_demo_on_first_start(fake_demo: list[Path]) -> None:
    at = home().run()
    assert not at.exception
    # the demo's files were written just now, yet they are read (a finished demo is never a save in progress)
    assert index_rows(at) == [("demo", "demo.safetensors", "ok")]
    assert at.sidebar.markdown[0].value == "**demo** :blue-badge[demo]"
    assert "_ckptlab_add_demo" not in [b.key for b in at.sidebar.button]
    home().run()
    assert fake_demo == [fake_demo[0]]  # built (here: asked for) once per process, not per session


def test_home_add_the_demo_from_the_sidebar(files: dict[str, Path], fake_demo: list[Path]) -> None:
    at = home().run()
    assert fake_demo == []  # $CKPTLAB_ROOT is set: no demo
    at.sidebar.button(key="_ckptlab_add_demo").click().run()
    assert not at.exception
    assert ("demo", "demo.safetensors", "ok") in index_rows(at)
    assert metrics(at)["Checkpoints"] == "7"


def test_home_survives_a_failing_demo(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def ensure_demo() -> Path:
        raise RuntimeError("no space left")

    monkeypatch.setattr("ckptlab.demo.ensure_demo", ensure_demo)
    ui._demo_root.clear()
    try:
        at = home().run()
        assert not at.exception
        assert "RuntimeError: no space left" in at.warning[0].value.replace("\\", "")
        assert at.info[0].value.startswith("The index is empty")
    finally:
        ui._demo_root.clear()


@pytest.mark.slow
def test_home_on_the_real_demo(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's acceptance check: a fresh start builds the real demo, scans it and shows all of it."""
    pytest.importorskip("torch")
    from ckptlab.demo import RUNS, build_demo

    demo_dir = build_demo(env / "demo")  # the real training run, ~5 s
    monkeypatch.setattr("ckptlab.demo.ensure_demo", lambda: demo_dir)
    ui._demo_root.clear()
    try:
        at = home().run()
    finally:
        ui._demo_root.clear()
    assert not at.exception
    (line,) = scan_lines(at)
    assert line.startswith("Scanned: 28 checkpoints (28 read, 0 unchanged), 0 errors")
    m = metrics(at)
    # HF Trainer's training_args.bin pickles a TrainingArguments: the three checkpoint-N dirs are unsafe
    assert (m["Checkpoints"], m["Runs"], m["Unsafe / unreadable"], m["Incomplete / debris"]) == (
        "28",
        "7",
        "3 / 0",
        "0 / 0",
    )
    df = frame(at, "run")
    assert set(df["run"]) == {*RUNS, "plain-pytorch/exports"}
    assert set(df["status"]) == {"ok"}
    assert set(df["format"]) == {
        "safetensors",
        "safetensors-sharded",
        "torch-zip",
        "torch-legacy",
        "torch-dcp",
        "hdf5",
    }
    assert df[df["run"] == "lightning-run"]["checkpoint"].tolist()[-1] == "checkpoints/last.ckpt"
    assert df[df["run"] == "hf-run"]["step"].dropna().tolist() == [64, 128, 192]
    assert json.loads(at.dataframe[0].proto.columns)["size"]["label"] == "size (MiB)"
    assert at.main.caption[1].value.startswith("28 of 28 checkpoints")
    assert sorted(chart(at)["data"][0]["y"]) == sorted(set(df["run"]))
    assert at.main.caption[-1].value == "No scan errors."


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


def test_inspect_fills_step_epoch_and_metrics_from_the_name(env: Path) -> None:
    """What the checkpoint does not hold comes from its name, as in the index table, and says so."""
    path = write_safetensors(env / "epoch=4-step=500-val_loss=0.25.safetensors")
    at = inspect(path)
    assert not at.exception
    shown = {m.label: m for m in at.metric}
    assert (shown["Step"].value, shown["Epoch"].value) == ("500", "4")
    assert "from the name" in shown["Step"].proto.help and "from the name" in shown["Epoch"].proto.help
    assert not shown["Format"].proto.help
    badges = [m.proto.body for m in at.markdown if "val_loss" in m.proto.body]
    assert any("val_loss = 0.25 (from the name)" in b for b in badges)


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
    assert at.info[0].value.startswith("Pick an indexed checkpoint")
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
    caption = next(c.value for c in at.caption if "computed on" in c.value).replace("\\", "")
    assert caption == "fc.weight  ·  float32 [5 × 3]  ·  15 values  ·  computed on cpu"
    assert len(at.get("plotly_chart")) == 4  # dtype, largest, treemap (all tabs run) + the histogram
    # a later rerun (another widget) keeps the result on screen
    at.toggle(key="stats_log").set_value(True).run()
    assert metrics(at)["max"] == "14"


# Run in a fresh interpreter: other tests in this process have imported torch already.
_NO_TORCH_SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=90)
at.query_params["path"] = sys.argv[2]
at.run()
devices = at.selectbox(key="stats_device").options
print(json.dumps({"exception": len(at.exception), "torch": "torch" in sys.modules, "devices": devices}))
"""


def test_inspect_metadata_never_imports_torch(env: Path) -> None:
    """Rendering every tab of a safetensors file, Tensor stats included, leaves torch unimported until
    "Compute stats" is pressed; the device box offers auto/cpu/cuda meanwhile."""
    path = write_safetensors(env / "model.safetensors")
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(PROJECT / INSPECT), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "exception": 0,
        "torch": False,
        "devices": ["auto", "cpu", "cuda"],
    }


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


def test_inspect_tables_of_a_trainer_folder() -> None:
    """Tensor bytes are exact numbers (Streamlit's format="bytes" writes decimal '524.3KB' where the rest of
    the app writes KiB), the non-model expander says when the tensor filter narrows it, the folder's files
    are named relative to it, and the entries' summary gets most of the width."""
    at = inspect(REAL_HF)
    assert not at.exception
    bytes_col = column_config(at, "tensor")["bytes"]
    assert bytes_col["type_config"]["format"] == "localized"
    assert frame(at, "tensor")["bytes"].dtype.kind == "i"  # numbers: the column sorts as numbers
    (other,) = at.expander
    assert other.label == "Non-model tensors (optimizer state etc.): 124"
    at.text_input(key="tensor_filter").input("attention").run()
    assert len(frame(at, "tensor")) == 20
    (other,) = at.expander
    assert other.label == "Non-model tensors (optimizer state etc.): 0 of 124 match the filter"
    assert "No non-model tensor matches the filter." in [c.value for c in other.caption]
    at.text_input(key="tensor_filter").input("exp_avg_sq").run()
    assert at.expander[0].label.endswith(": 41 of 124 match the filter")
    # every file of the folder, by its name in it (not the absolute path that cut the shard names)
    assert frame(at, "file")["file"].tolist() == sorted(os.listdir(REAL_HF))
    entries = column_config(at, "name")
    assert entries["summary"]["width"] > 2 * (entries["name"]["width"] + entries["kind"]["width"])
    summary = frame(at, "name").set_index("name")["summary"]
    assert summary["training_args.bin"].startswith("TrainingArguments: lr=0.03")


def test_inspect_picker_lists_the_index(files: dict[str, Path]) -> None:
    at = inspect()
    pick = at.selectbox(key="_ckptlab_pick")
    assert pick.label == "Indexed checkpoints (6)"
    assert pick.options == [
        "root / broken.pt · unreadable",
        "root / evil.pt · unsafe",
        "root / model.safetensors",
        "run / last.pt · step 120",
        "run / step_200.pt.tmp · step 200 · debris",
        "sharded / model.safetensors.index.json · incomplete",
    ]
    pick.select(str(files["torch"])).run()
    assert not at.exception
    assert at.text_input(key=ui.PATH_KEY).value == str(files["torch"])
    assert metrics(at)["Format"] == "torch-zip"
    # the same file typed another way (`./`, `..`) is still the indexed one the picker shows
    torch_file = files["torch"]
    typed = f"{torch_file.parent}/./../{torch_file.parent.name}/{torch_file.name}"
    at.text_input(key=ui.PATH_KEY).input(typed).run()
    assert not at.exception
    assert at.selectbox(key="_ckptlab_pick").value == str(torch_file)


def test_inspect_before_anything_is_indexed(env: Path) -> None:
    at = AppTest.from_file(str(PROJECT / INSPECT), default_timeout=90).run()
    assert not at.exception
    assert not at.selectbox  # an empty index: just the path box
    assert at.info[0].value.startswith("Pick an indexed checkpoint")


def test_inspect_badge_lists_one_files_globals_in_one_line() -> None:
    # a real HF Trainer folder: the nine globals of training_args.bin are one bullet, the headline names three
    at = inspect(Path(__file__).parent / "data" / "real" / "hf" / "checkpoint-12")
    assert not at.exception
    (err,) = alerts(at)
    head, *bullets = err.split("\n")
    assert " and 6 more — never load `training_args.bin`" in head
    assert len(bullets) == 1
    first = "- training\\_args\\.bin\\: pickle references 9 globals outside the allowlist"
    assert bullets[0].startswith(first)


def test_inspect_badge_of_a_keras_file_advises_on_keras() -> None:
    # a real Keras 3 file with a Lambda layer: the advice is about keras.models.load_model, not torch.load
    at = inspect(Path(__file__).parent / "data" / "real" / "keras" / "lambda_model.keras")
    assert not at.exception
    (err,) = alerts(at)
    assert "`keras.models.load_model` only if you trust it" in err and "torch.load" not in err


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
    # whole rows: a 35 px header and 35 px rows (+3 px border); at most max_rows, never less than one
    assert [table_height(n, max_rows=12) for n in (0, 1, 11, 12, 500)] == [73, 73, 423, 458, 458]
    assert other_tensors_label(3, 10, "") == "Non-model tensors (optimizer state etc.): 10"
    assert (
        other_tensors_label(3, 1234, "exp")
        == "Non-model tensors (optimizer state etc.): 3 of 1,234 match the filter"
    )


def test_relative_files() -> None:
    # a folder checkpoint: its files by name, a file elsewhere in full
    assert relative_files("/r/ckpt-12/", ["/r/ckpt-12/a.bin", "/r/ckpt-12/sub/b.bin", "/r/other.bin"]) == [
        "a.bin",
        "sub/b.bin",
        "/r/other.bin",
    ]
    # a shard index: relative to its folder; a name that only starts like the folder is not inside it
    index = "/r/m/model.safetensors.index.json"
    assert relative_files(index, [index, "/r/m/model-00001.safetensors", "/r/m2/x"]) == [
        "model.safetensors.index.json",
        "model-00001.safetensors",
        "/r/m2/x",
    ]
    assert relative_files("/", ["/a.pt"]) == ["a.pt"]


def test_stats_caption() -> None:
    def stats(shape: tuple[int, ...], numel: int) -> TensorStats:
        return TensorStats("w", "float32", shape, numel, 0.0, 1.0, 0.5, 0.1, 1.0, 0, 0, 0, "cpu")

    assert stats_caption(stats((), 1)) == "w  ·  float32 scalar  ·  1 value  ·  computed on cpu"
    assert stats_caption(stats((8,), 8)) == "w  ·  float32 [8]  ·  8 values  ·  computed on cpu"
    assert stats_caption(stats((1000, 1000), 10**6)).endswith(
        "[1000 × 1000]  ·  1,000,000 values  ·  computed on cpu"
    )
    assert stats_caption(stats((0,), 0)).endswith("[0]  ·  0 values  ·  computed on cpu")


def test_inspect_module_doctests() -> None:
    import doctest

    import ckptlab.ui.inspect

    result = doctest.testmod(ckptlab.ui.inspect)
    assert result.attempted >= 5 and result.failed == 0


def test_env_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ui.ROOT_ENV, os.pathsep.join(["/a", " ", "~/b "]))
    assert ui.env_roots() == [Path("/a"), Path("~/b").expanduser()]
    monkeypatch.delenv(ui.ROOT_ENV)
    assert ui.env_roots() == []

"""The home page's index table: its short safety cells, the list of unsafe globals beside it, and column
widths that keep run ... safety on one screen at 1440 px (AppTest, and once in a real Chromium)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from ui_fixtures import streamlit_server

from ckptlab import ui
from ckptlab.index import views
from ckptlab.index.store import Store
from ckptlab.model import IndexEntry, size_unit
from ckptlab.ui.index import column_widths, index_frame, safety_cell, text_px, unsafe_groups

PROJECT = Path(__file__).resolve().parent.parent
REAL = PROJECT / "tests" / "data" / "real"  # real framework checkpoints: long run labels, HF's 9 globals
IMPORTANT = ("run", "checkpoint", "step", "epoch", "format", "size", "params", "status", "safety")
# at a 1440 px window with the sidebar open the table is 980 px wide: 946 px once the row-selection column's
# 32 are taken (measured in Chromium; test_the_important_columns_fit_at_1440px checks it still holds)
ROOM_AT_1440 = 946
HF_GLOBALS = (
    "transformers.training_args.TrainingArguments",
    "transformers.trainer_utils.SchedulerType",
    "transformers.training_args.OptimizerNames",
    "transformers.trainer_utils.IntervalStrategy",
    "transformers.trainer_utils.SaveStrategy",
    "transformers.trainer_utils.HubStrategy",
    "transformers.trainer_pt_utils.AcceleratorConfig",
    "accelerate.state.PartialState",
    "accelerate.utils.dataclasses.DistributedType",
)


def entry(path: str, run: str, **kw: object) -> IndexEntry:
    return IndexEntry(path, run, "/r", kw.pop("layout", "file"), kw.pop("status", "ok"), "", **kw)  # type: ignore[arg-type]


def unsafe(*names: str) -> IndexEntry:
    return entry("/r/x.pt", "/r", safe=False, unsafe_globals=names)


# ------------------------------------------------------------------------------------------ safety cell


def test_safety_cell_is_the_verdict_in_brief() -> None:
    assert safety_cell(entry("/r/a.pt", "/r", safe=True)) == "safe"
    assert safety_cell(entry("/r/a.pt", "/r", status="unreadable")) is None  # nothing could be checked
    assert safety_cell(unsafe()) == "⚠ unsafe"  # a part could not be checked; no global named
    assert safety_cell(unsafe("posix.system")) == "⚠ unsafe: posix.system"  # short: named whole
    assert safety_cell(unsafe("keras.layers.Lambda")) == "⚠ unsafe: …Lambda"  # long: by its last part
    assert safety_cell(unsafe("realgen>Scale")) == "⚠ unsafe: …Scale"  # a Keras registered name
    assert safety_cell(unsafe("transformers.training_args.TrainingArguments")) == "⚠ unsafe: 1 global"
    assert safety_cell(unsafe(*HF_GLOBALS)) == "⚠ unsafe: 9 globals"


def test_every_safety_cell_fits_its_column() -> None:
    cells = [
        safety_cell(unsafe(*g)) for g in [("a" * 200,), ("x." + "W" * 40,), HF_GLOBALS * 12, ("os.system",)]
    ]
    df = pd.DataFrame({"safety": cells})
    assert all(text_px(c) + 18 <= column_widths(_frame_like(df))["safety"] for c in cells if c)


def test_text_px_is_close_to_what_chromium_draws() -> None:
    """Widths measured with canvas measureText in Source Sans 14 px (the grid's font): the estimate may be
    a little wide, never much narrow (that would cut text the widths were chosen to show)."""
    measured = {
        "lightning/csv/version_0": 138,
        "hf_v4_export_bin_sharded": 158,
        "plain-pytorch/exports": 127,
        "checkpoints/epoch=2-step=12-val_loss=2.89.ckpt": 287,
        "⚠ unsafe: posix.system": 136,
        "⚠ unsafe: 9 globals": 113,
        "safetensors-sharded": 119,
        "unreadable": 67,
    }
    for text, px in measured.items():
        assert px - 2 <= text_px(text) <= px * 1.06, text


# ------------------------------------------------------------------------------------------ frame, widths


def _frame_like(df: pd.DataFrame) -> pd.DataFrame:
    """`df`'s columns plus every other index_frame column, empty, for column_widths."""
    n = len(df)
    base = {c: [None] * n for c in views.TABLE_COLUMNS}
    base["step"] = pd.array([None] * n, dtype="Int64")  # type: ignore[assignment]
    return pd.DataFrame({**base, **{c: df[c] for c in df.columns}})


def _real_frame(tmp_path: Path) -> pd.DataFrame:
    from ckptlab.index.scan import scan

    with Store(tmp_path / "index.sqlite") as store:
        scan([str(REAL)], store, settle_seconds=0.0)
        entries = list(store.entries(with_meta=False))
    return index_frame(entries, views.run_labels(entries), size_unit(e.size_bytes for e in entries))


def test_index_frame_keeps_numbers_numeric(tmp_path: Path) -> None:
    df = _real_frame(tmp_path)
    assert (str(df["step"].dtype), str(df["params"].dtype), df["size"].dtype.kind) == ("Int64", "Int64", "f")
    # sorting by params is by count (a text column would put "1.7K" before "10" and "178")
    ordered = df.sort_values("params", kind="stable")["params"].dropna().tolist()
    assert ordered == sorted(ordered) and ordered[0] == 10 and ordered[-1] == 1706
    hf = df[df["run"] == "hf"]
    assert set(hf["safety"]) == {"⚠ unsafe: 9 globals"}


def test_the_important_columns_fit_on_real_checkpoints(tmp_path: Path) -> None:
    df = _real_frame(tmp_path)
    w = column_widths(df, {"size": "size (KiB)"})
    assert sum(w[c] for c in IMPORTANT) <= ROOM_AT_1440 - 10  # and room for a scrollbar
    # nothing but run and checkpoint is cut: each other column is as wide as its widest cell
    for c in ("format", "status", "safety"):
        assert w[c] >= max(text_px(v) for v in df[c].dropna()) + 16, c
    assert w["run"] >= 100 and w["checkpoint"] >= 100


def test_run_and_checkpoint_take_what_they_need_when_it_fits() -> None:
    df = _frame_like(pd.DataFrame({"run": ["hf"], "checkpoint": ["checkpoint-12"], "metrics": ["loss=0.5"]}))
    w = column_widths(df)
    # no wider than their content (run: its least width): the metrics column comes into view
    assert (w["run"], w["checkpoint"]) == (56, math.ceil(text_px("checkpoint-12") + 18))
    assert w["metrics"] == 67  # as wide as loss=0.5 (and 64 at least)


def test_long_names_share_the_room_in_proportion() -> None:
    df = _frame_like(pd.DataFrame({"run": ["r" * 100], "checkpoint": ["c" * 300]}))
    w = column_widths(df)
    assert sum(w[c] for c in IMPORTANT) <= ROOM_AT_1440
    assert 100 <= w["run"] < w["checkpoint"]


def test_an_empty_table_has_widths() -> None:
    w = column_widths(index_frame([], {}, ("KiB", 1024)))
    assert set(w) >= set(IMPORTANT) and all(v > 0 for v in w.values())


def test_unsafe_groups_share_one_list_per_set_of_globals() -> None:
    hf = [
        entry(f"/r/hf/checkpoint-{i}", "/r/hf", safe=False, unsafe_globals=HF_GLOBALS[::-1]) for i in (1, 2)
    ]
    hf.append(entry("/r/hf4/checkpoint-6", "/r/hf4", safe=False, unsafe_globals=HF_GLOBALS))  # other order
    evil = entry("/r/evil.pt", "/r", safe=False, unsafe_globals=("posix.system",))
    groups = unsafe_groups([evil, *hf, entry("/r/ok.pt", "/r", safe=True)])
    assert [(names, len(g)) for names, g in groups] == [
        (tuple(sorted(HF_GLOBALS)), 3),
        (("posix.system",), 1),
    ]


# ------------------------------------------------------------------------------------------ the app


@pytest.fixture
def real_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CKPTLAB_DB", str(tmp_path / "index.sqlite"))
    monkeypatch.setenv(ui.ROOT_ENV, str(REAL))
    monkeypatch.chdir(PROJECT)
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=90).run()
    assert not at.exception
    return at


def test_home_table_on_real_checkpoints(real_home: AppTest) -> None:
    table = real_home.dataframe[0]
    cols = json.loads(table.proto.columns)
    assert sum(cols[c]["width"] for c in IMPORTANT) <= ROOM_AT_1440 - 10
    assert cols["params"]["type_config"]["format"] == "compact"  # numeric, so it sorts by count
    df = table.value.set_index("checkpoint")
    assert df.loc["checkpoint-12", "safety"] == "⚠ unsafe: 9 globals"
    assert df.loc["lambda_model.keras", "safety"] == "⚠ unsafe: …Lambda"
    # the globals the cells count are all listed beside the table
    text = "\n".join(m.value for m in real_home.markdown).replace("\\", "")
    for name in (*HF_GLOBALS, "keras.layers.Lambda", "realgen>Scale", "argparse.Namespace"):
        assert f"- {name}" in text, name
    assert "**3 checkpoints**: hf / checkpoint-12, hf / hf/ (final save), hf_v4 / checkpoint-6" in text


def test_no_unsafe_globals_button_when_no_row_shown_is_unsafe(real_home: AppTest) -> None:
    real_home.multiselect(key="filter_safety").select("safe").run()
    assert not real_home.exception
    assert not any("Globals outside the allowlist" in m.value for m in real_home.markdown)


# ------------------------------------------------------------------------------------------ in Chromium

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")
def test_the_important_columns_fit_at_1440px(tmp_path: Path) -> None:
    """The premise of the widths: at 1440 x 900 with the sidebar open the grid shows 946 px of columns, and
    the columns drawn are the ones column_widths chose (the grid's full width is theirs plus 32)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    db = tmp_path / "index.sqlite"
    env = {"CKPTLAB_DB": str(db), ui.ROOT_ENV: str(REAL), "HOME": str(tmp_path)}
    with streamlit_server(env, tmp_path / "streamlit.log") as url, sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = b.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.get_by_text("Scanned: 26 checkpoints").wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"] .dvn-scroller').first.wait_for()
            page.wait_for_timeout(500)
            client, full = page.evaluate(
                """() => { const s = document.querySelector('[data-testid="stDataFrame"] .dvn-scroller');
                    return [s.clientWidth, s.scrollWidth] }"""
            )
        finally:
            b.close()
    entries = list(Store(db).entries(with_meta=False))
    df = index_frame(entries, views.run_labels(entries), size_unit(e.size_bytes for e in entries))
    w = column_widths(df, {"size": "size (KiB)"})
    shown = [c for c in views.TABLE_COLUMNS if c not in ("path", "reason")]  # no row has a reason
    assert full == 32 + sum(w[c] for c in shown)
    assert client - 32 >= ROOM_AT_1440
    assert 32 + sum(w[c] for c in IMPORTANT) <= client

"""The dashboard in a real browser: `streamlit run app.py` + headless Debian Chromium driven by playwright.

The server gets a fresh index database and `CKPTLAB_ROOT` pointing at the UI fixture tree, so the first
page load scans it. Screenshots go to tmp_path and are copied to /tmp/ckptlab-shots/ for a human to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from ui_fixtures import INDEX_ROWS, PT_PARAMS, ST_PARAMS, build_ui_root, streamlit_server

from ckptlab.model import human_bytes

CHROMIUM = Path("/usr/bin/chromium")
PROJECT = Path(__file__).resolve().parent.parent
SHOTS = Path("/tmp/ckptlab-shots")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_ui_root(tmp_path_factory.mktemp("ui") / "root")


@pytest.fixture(scope="module")
def server(fixture_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("home")
    env = {
        "CKPTLAB_ROOT": str(fixture_files["safetensors"].parent),
        "CKPTLAB_DB": str(home / "index.sqlite"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
    }
    with streamlit_server(env, home / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    ctx = browser.new_context(viewport={"width": 1440, "height": 1600})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        ctx.close()


_SETTLED_JS = """() => {
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;   // script still running
  // elements not drawn yet, progress bars or spinners of a run in flight, elements of the previous run
  if (document.querySelector('[data-testid="stSkeleton"], [data-testid="stProgress"], '
      + '[data-testid="stSpinner"], [data-stale="true"]')) return false;
  const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
      .filter(e => e.offsetParent !== null);                                     // visible tab only
  return charts.every(e => e.querySelector('.main-svg'));
}"""


def _settle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until the script run finished and every visible element (plotly charts included) is drawn."""
    page.wait_for_function(_SETTLED_JS, timeout=30_000)
    page.wait_for_timeout(300)


def _shot(page, tmp_path: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, SHOTS / out.name)
    return out


def _assert_clean(page) -> None:  # type: ignore[no-untyped-def]
    text = page.inner_text("body")
    assert "Traceback" not in text
    assert page.locator('[data-testid="stException"]').count() == 0


def _metrics(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {k.strip(): v.strip() for k, v in zip(labels, values, strict=True)}


def test_home_scans_and_lists_the_index(server: str, page, fixture_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(server)
    page.get_by_text("Scanned: 6 checkpoints").wait_for()  # the first load scans $CKPTLAB_ROOT
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    _settle(page)
    _shot(page, tmp_path, "home")
    _assert_clean(page)
    assert _metrics(page) == {
        "Checkpoints": "6",
        "Runs": "3",
        "Total size": human_bytes(
            sum(f.stat().st_size for f in fixture_files["safetensors"].parent.rglob("*") if f.is_file())
        ),
        "Unsafe / unreadable": "1 / 1",
        "Incomplete / debris": "1 / 1",
    }
    assert "6 of 6 checkpoints" in page.inner_text("body")
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "root" in sidebar and "6 checkpoints" in sidebar
    assert page.locator(".js-plotly-plot").count() == 1  # disk usage by run
    page.get_by_text("Scan errors (1)").click()
    page.get_by_text("Scan errors (1)").scroll_into_view_if_needed()
    _settle(page)
    _shot(page, tmp_path, "home_errors")
    _assert_clean(page)


def test_home_filter_then_select_a_row_opens_inspect(
    server: str, page, fixture_files, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    page.goto(server)
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    _settle(page)
    page.locator('[data-testid="stMultiSelect"]').filter(has_text="status").click()
    page.get_by_role("option", name="ok", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_text("3 of 6 checkpoints").wait_for()
    _settle(page)
    _shot(page, tmp_path, "home_filtered")
    _assert_clean(page)
    # the grid is drawn on a canvas: click the selection box of the third row (run/last.pt)
    ok_rows = [c for _r, c, s in INDEX_ROWS if s == "ok"]
    grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    row = ok_rows.index("last.pt")
    page.mouse.click(grid["x"] + 16, grid["y"] + 35 + 35 * row + 17)
    page.wait_for_url("**/Inspect?path=*")
    page.locator('[data-testid="stMetricValue"]').first.wait_for()
    _settle(page)
    _assert_clean(page)
    assert _metrics(page)["Format"] == "torch-zip"
    assert unquote(page.url.split("?path=", 1)[1]) == str(fixture_files["torch"])
    # back home through the sidebar: the filter is kept, and the old selection does not open Inspect again
    page.locator('[data-testid="stSidebarNav"] a').first.click()
    page.get_by_text("3 of 6 checkpoints").wait_for()
    _settle(page)
    page.wait_for_timeout(500)
    assert "/Inspect" not in page.url
    _assert_clean(page)


def test_inspect_safetensors(server: str, page, fixture_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server}/Inspect?path={quote(str(fixture_files['safetensors']))}")
    page.locator('[data-testid="stMetricValue"]').first.wait_for()
    _settle(page)
    _shot(page, tmp_path, "inspect_safetensors")
    _assert_clean(page)
    m = _metrics(page)
    assert m["Format"] == "safetensors"
    assert m["Parameters"] == str(ST_PARAMS)
    assert m["Tensors"] == "4"
    assert "Safe" in page.inner_text('[data-testid="stAlert"]')
    assert page.locator(".js-plotly-plot").count() >= 2
    for tab in ("Modules", "Tensors", "Entries & metadata"):
        page.get_by_role("tab", name=tab).click()
        _settle(page)
        _shot(page, tmp_path, "inspect_safetensors_" + tab.split()[0].lower())
        _assert_clean(page)


def test_inspect_torch_stats(server: str, page, fixture_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server}/Inspect?path={quote(str(fixture_files['torch']))}")
    page.locator('[data-testid="stMetricValue"]').first.wait_for()
    _settle(page)
    page.get_by_role("tab", name="Tensor stats").click()
    page.get_by_role("button", name="Compute stats").click()
    page.get_by_text("L2 norm").wait_for()
    _settle(page)
    _shot(page, tmp_path, "inspect_torch_stats")
    _assert_clean(page)
    m = _metrics(page)
    assert (m["Format"], m["Parameters"], m["Step"], m["Epoch"]) == ("torch-zip", str(PT_PARAMS), "120", "3")
    assert (m["min"], m["max"], m["mean"]) == ("0", "14", "7")


def test_inspect_unsafe_and_unreadable(server: str, page, fixture_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server}/Inspect?path={quote(str(fixture_files['unsafe']))}")
    page.get_by_text("Unsafe:").wait_for()
    _settle(page)
    _shot(page, tmp_path, "inspect_unsafe")
    _assert_clean(page)
    assert "posix.system" in page.inner_text('[data-testid="stAlert"]')

    page.goto(f"{server}/Inspect?path={quote(str(fixture_files['pickle']))}")
    page.get_by_text("not a PyTorch checkpoint").wait_for()
    _settle(page)
    _shot(page, tmp_path, "inspect_unreadable")
    _assert_clean(page)
    alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert len(alerts) == 1 and "broken.pt" in alerts[0]

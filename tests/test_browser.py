"""A real browser: JupyterLab served on 127.0.0.1, notebooks run in Debian's headless chromium (Playwright), each up
to the widget under test (tests/test_notebooks.py runs them in full): in 01 the eps slider moved with the keyboard,
in 03 the loss landscape's model picker changed, in 04 the training panel driven as a learner drives it (sliders,
Train, Stop, Train again), and each plotly figure checked to have been redrawn. Skipped cleanly when
/usr/bin/chromium or playwright is missing (``./kit.sh test`` installs chromium with apt)."""

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# the explorer's figure: the last one whose title says "... at eps = ..." (the first look above it is a static panel
# of the same kind); trace 4 = probabilities on the adversary
EXPLORER = """() => {
  const d = Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot'))
      .filter(d => d.layout && d.layout.title && String(d.layout.title.text || '').includes('at eps =')).pop();
  return d ? {title: String(d.layout.title.text), y: Array.from(d.data[4].y), z: JSON.stringify(d.data[2].z)} : null;
}"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def _server(tmp_path_factory):
    """One JupyterLab server for the three tests (each opens its own notebook and kernel, and shuts its kernel
    down when done)."""
    tmp_path = tmp_path_factory.mktemp("lab")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyter is not installed next to this python")
    root = tmp_path / "served"
    root.mkdir()
    # the notebooks' own cells up to the widget under test (the papermill test runs them in full): never the
    # committed copies, which JupyterLab would autosave
    _up_to(root / "01_explorer.ipynb", "01_adversarial_examples", "gl.widgets.attack_explorer(",
           "explorer.eps.value = 0.3")
    _up_to(root / "03_landscape.ipynb", "03_logit_distance", "gl.widgets.landscape_explorer(")
    _panel_notebook(root / "04_panel.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "GMREG_SMOKE": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-3000:])
                time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def lab_server(_server):
    """The module's JupyterLab server; the kernels a test started are shut down after it (an idle kernel of an
    earlier test would hold its memory, a busy one would slow the next test)."""
    yield _server
    url, token = _server
    import json

    with urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10) as r:
        kernels = json.load(r)
    for k in kernels:
        req = urllib.request.Request(f"{url}/api/kernels/{k['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()


@contextlib.contextmanager
def _browser_page(errors):
    """A headless chromium page; page errors are appended to ``errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            browser.close()


READY = "ready for the browser"


def _up_to(dest: Path, name: str, widget_call: str, then: str = "") -> None:
    """Notebook ``name``'s cells up to the one calling ``widget_call``, then a cell running ``then`` and printing
    ``READY``."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    end = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and widget_call in c.source) + 1
    nb.cells = nb.cells[:end] + [nbformat.v4.new_code_cell(f"{then}\nprint({READY!r})")]
    nbformat.write(nb, dest)


def _open_url(url, token, notebook):
    """``notebook`` alone in a workspace of its own: the server is shared, and JupyterLab would otherwise reopen the
    tabs of the tests before (hidden cells that a click cannot reach)."""
    return f"{url}/lab/workspaces/{Path(notebook).stem}/tree/{notebook}?token={token}&reset"


def _start_run_all(page, url, token, notebook):
    """Open ``notebook`` in JupyterLab and click Run All Cells (returns at once)."""
    page.goto(_open_url(url, token, notebook))
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Escape")                          # command mode, or Run All does nothing
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _run_all(page, url, token, notebook, timeout_ms, done: str = READY):
    """Open ``notebook`` in JupyterLab, Run All Cells, and wait until a cell printed ``done``."""
    _start_run_all(page, url, token, notebook)
    # printed by the last cell: looked for in the outputs, not in the cell's source
    page.locator(".jp-OutputArea-output", has_text=done).wait_for(timeout=timeout_ms)


def test_notebook_01_in_a_real_browser(lab_server, tmp_path):
    url, token = lab_server
    errors = []
    with _browser_page(errors) as page:
        _run_all(page, url, token, "01_explorer.ipynb", 240_000)   # (the last cell sets eps 0.3)
        page.wait_for_function(f"() => {{ const f = ({EXPLORER})(); return f && f.title.includes('0.3'); }}",
                               timeout=60_000)
        before = page.evaluate(EXPLORER)
        page.screenshot(path=str(tmp_path / "before.png"), full_page=True)
        handle = page.locator(".widget-slider .noUi-handle").first   # the explorer's eps slider
        handle.click()
        handle.press("ArrowRight")                              # step 0.01: 0.30 -> 0.32
        handle.press("ArrowRight")
        page.wait_for_function(
            f"() => {{ const f = ({EXPLORER})(); return f && f.title.includes('eps = 0.32'); }}", timeout=60_000)
        after = page.evaluate(EXPLORER)
        page.screenshot(path=str(tmp_path / "after.png"), full_page=True)
    assert after["title"] != before["title"] and "0.32" in after["title"], (before["title"], after["title"])
    assert after["y"] != before["y"] and after["z"] != before["z"]   # probabilities and adversarial image redrawn
    assert (tmp_path / "after.png").stat().st_size > 10_000
    assert not errors, errors


# the loss landscape of notebook 03: the figure whose title names the landscape
LANDSCAPE = """() => {
  const d = Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot'))
      .find(d => d.layout && d.layout.title && String(d.layout.title.text || '').includes('loss landscape'));
  return d ? {title: String(d.layout.title.text), z: JSON.stringify(d.data[0].z)} : null;
}"""


def test_notebook_03_landscape_model_picker_in_a_real_browser(lab_server, tmp_path):
    url, token = lab_server
    errors = []
    with _browser_page(errors) as page:
        _run_all(page, url, token, "03_landscape.ipynb", 420_000)
        page.wait_for_function(f"() => ({LANDSCAPE})() !== null", timeout=60_000)
        before = page.evaluate(LANDSCAPE)
        picker = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="PGD-AT"))
        picker.first.select_option(label="PGD-AT")             # what a learner does with the model picker
        page.wait_for_function(
            f"() => {{ const f = ({LANDSCAPE})(); return f && f.title.startsWith('PGD-AT:'); }}", timeout=90_000)
        after = page.evaluate(LANDSCAPE)
        page.screenshot(path=str(tmp_path / "landscape.png"), full_page=True)
    assert after["z"] != before["z"], "the loss surface was redrawn for the picked model"
    assert not errors, errors


# --- notebook 04's training panel -------------------------------------------------------------------------------------
PANEL_CELL = 'gl.lab.recipe("panel", smoke=SMOKE)'


def _panel_notebook(dest: Path) -> None:
    """Notebook 04 up to its panel (the notebook's own cells), with a smoke budget long enough to press Stop in:
    200 iterations, a probe row after each."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "04_regularized_training.ipynb", as_version=4)
    end = next(i for i, c in enumerate(nb.cells) if PANEL_CELL in c.source) + 1
    nb.cells = nb.cells[:end]
    nb.cells[-1].source = nb.cells[-1].source.replace(PANEL_CELL, 'gl.lab.recipe("panel", smoke=SMOKE, limit=6400)')
    assert "limit=6400" in nb.cells[-1].source
    nbformat.write(nb, dest)


# the panel's figure of every run: the one whose title names the current run ("λ = ..., ε = ...: state")
PANEL = """() => {
  const d = Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot'))
      .find(d => d.layout && d.layout.title && /ε = /.test(String(d.layout.title.text || '')));
  return d ? {title: String(d.layout.title.text), names: d.data.map(t => t.name),
              n: d.data.map(t => (t.x || []).length)} : null;
}"""


def test_notebook_04_training_panel_in_a_real_browser(lab_server, tmp_path):
    url, token = lab_server
    errors = []
    with _browser_page(errors) as page:
        _start_run_all(page, url, token, "04_panel.ipynb")
        train = page.locator(".jupyter-button", has_text="Train")
        stop = page.locator(".jupyter-button", has_text="Stop")
        train.wait_for(timeout=180_000)
        handles = page.locator(".widget-slider .noUi-handle")
        lam, eps = handles.nth(0), handles.nth(1)
        lam.click()
        lam.press("ArrowLeft")                                  # λ 5 -> 4.5 (step 0.5)
        eps.click()
        eps.press("ArrowRight")                                 # ε 0.3 -> 0.31
        train.click()
        # the live figure gains points while the run trains
        page.wait_for_function(f"() => {{ const f = ({PANEL})(); return f && f.title.startsWith('λ = 4.5, ε = 0.31')"
                               f" && f.n[0] >= 3; }}", timeout=120_000)
        stop.click()
        page.wait_for_function(f"() => {{ const f = ({PANEL})(); return f && f.title.includes('stopped'); }}",
                               timeout=60_000)
        first = page.evaluate(PANEL)
        page.wait_for_timeout(1500)
        assert page.evaluate(PANEL)["n"] == first["n"], "a stopped run gains no more points"
        lam.click()
        lam.press("ArrowLeft")                                  # λ 4.5 -> 4: a second run
        train.click()
        page.wait_for_function(f"() => {{ const f = ({PANEL})(); return f && f.names.length === 6 && f.n[3] >= 2; }}",
                               timeout=120_000)
        stop.click()
        page.wait_for_function(f"() => {{ const f = ({PANEL})(); return f && f.title.includes('stopped'); }}",
                               timeout=60_000)
        second = page.evaluate(PANEL)
        page.screenshot(path=str(tmp_path / "panel.png"), full_page=True)
    assert first["names"][::3] == ["λ = 4.5, ε = 0.31"] and first["n"][0] >= 3
    assert second["names"][::3] == ["λ = 4.5, ε = 0.31", "λ = 4, ε = 0.31"], second["names"]
    assert second["n"][0] == first["n"][0], "the first run's trace stays as it was"
    assert (tmp_path / "panel.png").stat().st_size > 10_000
    assert not errors, errors

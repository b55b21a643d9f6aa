"""The executed course (``./kit.sh course``, gmreg_lab/runners/course.py): its pages are static and small, and
every committed page is current (made from the notebook as it is now)."""
import json
import re
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from gmreg_lab.runners import course

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "course"
MANIFEST = COURSE / "MANIFEST.json"


def test_page_draws_figures_with_one_shared_plotly_and_notes_widgets():
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[3, 1, 2], name="a curve"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A title"),
                nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
                    "display_data", data={course.PLOTLY_MIME: json.loads(pio.to_json(fig))})]),
                nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output(
                    "display_data", data={course.WIDGET_MIME: {"model_id": "x", "version_major": 2}})])]
    html = course.to_html(nb, "> banner: made by the test")
    assert "banner: made by the test" in html and "A title" in html
    assert "a curve" in html and "Plotly.newPlot" in html            # the figure is drawn, from its data
    assert html.count('<script src="plotly.min.js"') == 1             # plotly.js shared, not inlined
    assert len(html) < 1_000_000                                      # (inlined plotly.js alone is ~3.5 MB)
    assert "interactive widget stood here" in html
    nb.cells.append(nbformat.v4.new_code_cell("train", outputs=[nbformat.v4.new_output(   # a tqdm.notebook bar
        "display_data", data={course.WIDGET_MIME: {"model_id": "y", "version_major": 2},
                              "text/plain": "trains pgd, 1000 iterations: about 4.1 min on this machine:   0%|"
                                            "          | 0/1000 [00:00<?, ?it/s]"})]))
    html = course.to_html(nb, "> banner")
    assert "(progress bar) trains pgd, 1000 iterations: about 4.1 min on this machine</em>" in html
    assert html.count("interactive widget stood here") == 1          # a progress bar is not called a widget
    nb.cells.append(nbformat.v4.new_code_cell("print(...)", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="data: 600 images\nNOTE: this run uses a GENERATED STAND-IN\n")]))
    html = course.to_html(nb, "> banner")
    body = html[html.index("<body"):]
    assert body.index("GENERATED STAND-IN") < body.index("A title"), "a notebook's NOTE: lines are repeated on top"


def _manifest():
    if not MANIFEST.exists():
        pytest.skip("no executed course committed (course/MANIFEST.json)")
    return json.loads(MANIFEST.read_text())


def test_committed_course_is_current_or_says_it_is_not_and_small():
    """Every page was made from its notebook as it is now, or carries the "out of date" banner for exactly the
    notebook as it is now (``python -m gmreg_lab.runners.course --mark-stale``): a learner is never shown a stale page
    unwarned."""
    manifest = _manifest()
    unmarked = {}
    for name, e in manifest.items():
        current = course.sha256(ROOT / e["notebook"])
        page = (COURSE / e["html"]).read_text()
        if current == e["sha256"]:
            assert "stale" not in e and course.STALE_MARK not in page, f"{name} is current but marked stale"
        elif (e.get("stale") or {}).get("notebook_sha256") != current or course.STALE_MARK not in page:
            unmarked[name] = e["notebook"]
    assert not unmarked, (f"notebooks changed after their course page was made: {unmarked}; rerun "
                          f"`./kit.sh course --only {','.join(n[:2] for n in unmarked)}` (or, until the course is "
                          f"re-made, `python -m gmreg_lab.runners.course --mark-stale`)")
    for e in manifest.values():
        page = COURSE / e["html"]
        assert page.exists(), page
        assert e["sha256"][:16] in page.read_text(), f"{page} does not record its notebook's hash"
        assert e["command"] == course.COMMAND and e["machine"] and e["started"], e
    size = sum(p.stat().st_size for p in COURSE.rglob("*") if p.is_file())
    assert size < 15e6, f"course/ is {size / 1e6:.1f} MB"


def test_committed_course_covers_every_notebook_and_says_which_failed():
    manifest = _manifest()
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert set(manifest) == notebooks, (f"pages without a notebook: {set(manifest) - notebooks}; notebooks without "
                                        f"a page (run `./kit.sh course --only NN`): {notebooks - set(manifest)}")
    index = (COURSE / "index.html").read_text()
    for e in manifest.values():
        assert e["html"] in index
        if not e["passed"]:
            assert "FAILED" in (COURSE / e["html"]).read_text()


def test_two_course_runs_side_by_side_keep_each_others_pages(tmp_path):
    """``--only 01`` and ``--only 02`` in two processes share one course/: each merges its entry into the manifest
    as it is on disk at that moment, so the later one does not drop the earlier one's page."""
    a = {"notebook": "notebooks/01_a.ipynb", "html": "01_a.html", "seconds": 60.0, "passed": True, "started": "t0"}
    b = {**a, "notebook": "notebooks/02_b.ipynb", "html": "02_b.html", "passed": False}
    course._record(tmp_path, {"01_a": a})
    merged = course._record(tmp_path, {"02_b": b})
    assert merged == {"01_a": a, "02_b": b} == json.loads((tmp_path / "MANIFEST.json").read_text())
    index = (tmp_path / "index.html").read_text()
    assert "01_a.html" in index and "02_b.html" in index and "FAILED" in index
    assert course._record(tmp_path, {"01_a": {**a, "seconds": 1.0}})["01_a"]["seconds"] == 1.0   # a rerun replaces
    assert sorted(p.name for p in tmp_path.iterdir()) == [".executed", "MANIFEST.json", "index.html"]


def test_a_changed_notebook_marks_its_page_out_of_date_and_a_restored_one_lifts_it(tmp_path):
    nb = tmp_path / "notebooks" / "01_a.ipynb"
    nb.parent.mkdir()
    nb.write_text("version 1")
    out = tmp_path / "course"
    out.mkdir()
    (out / "01_a.html").write_text("<html><body class='x'><h1>A page</h1></body></html>")
    e = {"notebook": "notebooks/01_a.ipynb", "html": "01_a.html", "sha256": course.sha256(nb), "seconds": 6.0,
         "passed": True, "started": "t0"}
    course._record(out, {"01_a": e})
    assert course.mark_stale(out, tmp_path) == []
    nb.write_text("version 2")
    assert course.mark_stale(out, tmp_path) == ["01_a"]
    page = (out / "01_a.html").read_text()
    assert page.index("This page is out of date") < page.index("A page") and page.count(course.STALE_MARK) == 2
    m = json.loads((out / "MANIFEST.json").read_text())["01_a"]
    assert m["stale"]["notebook_sha256"] == course.sha256(nb) and "out of date" in (out / "index.html").read_text()
    assert course.mark_stale(out, tmp_path) == ["01_a"] and (out / "01_a.html").read_text() == page   # idempotent
    nb.write_text("version 1")
    assert course.mark_stale(out, tmp_path) == []
    assert course.STALE_MARK not in (out / "01_a.html").read_text()
    assert "stale" not in json.loads((out / "MANIFEST.json").read_text())["01_a"]


def test_no_page_loads_anything_from_the_network():
    html = ('<head><script src="https://cdn.example/mathjax.js?config=X"></script>\n'
            '<script src="plotly.min.js" charset="utf-8"></script></head>')
    assert course.strip_network_scripts(html) == '<head><script src="plotly.min.js" charset="utf-8"></script></head>'
    for page in COURSE.glob("*.html"):
        text = page.read_text()
        assert 'src="http' not in text and "href=\"http" not in text.split("<body")[0], page


def _page(title="04 · The cure"):
    return ('<html><head><meta charset="utf-8"><title>Notebook</title>\n'
            '<style type="text/css">body { color: red; }</style>\n'
            '<script src="https://cdn.example/mathjax.js"></script>\n'
            '<script type="text/x-mathjax-config">init_mathjax = 1;</script>\n</head>\n'
            f'<body><div class="jp-RenderedMarkdown"><h1 id="x">{title}<a class="anchor-link">¶</a></h1>'
            '<p>$$L = \\frac{1}{m}$$</p></div></body></html>')


def test_finish_page_gives_offline_maths_a_title_links_and_the_shared_stylesheet(tmp_path):
    css = "<style type=\"text/css\">body { color: red; }</style>\n"
    page = course.finish_page(_page(), css)
    assert "cdn.example" not in page and "x-mathjax-config" not in page
    assert page.count(f'<script src="{course.MATHJAX}"') == 1 and page.count('src="plotly.min.js"') == 1
    assert '<link rel="stylesheet" href="course.css">' in page and "color: red" not in page.split("<body")[0]
    assert "<title>04 · The cure</title>" in page
    assert course.finish_page(page, css) == page                       # idempotent
    other = course.finish_page(_page(), "<style>something else</style>")
    assert "color: red" in other                                       # styles that differ stay inline
    out = tmp_path / "course"
    out.mkdir()
    names = ["01_a.html", "02_b.html", "03_c.html"]
    (out / "MANIFEST.json").write_text(json.dumps({n[:-5]: {"html": n} for n in names}))
    for n in names:
        (out / n).write_text(_page(n[3]))
    assert course.refresh_pages(out) == names
    middle = (out / "02_b.html").read_text()
    assert '<a href="01_a.html">← 01_a</a><a href="index.html">index</a><a href="03_c.html">03_c →</a>' in middle
    assert '<a href="01_a.html">' not in (out / "01_a.html").read_text().split("</nav>")[0]
    assert "color: red" in (out / "course.css").read_text() and (out / course.MATHJAX).is_file()
    again = {n: (out / n).read_text() for n in names}
    course.refresh_pages(out)
    assert again == {n: (out / n).read_text() for n in names}          # refreshing twice changes nothing


TEX = re.compile(r"\$\$|\\[A-Za-z]{2,}")
OFFLINE_CHECK = """() => {
  const md = Array.from(document.querySelectorAll('.jp-RenderedMarkdown')).map(e => {
    const c = e.cloneNode(true);
    c.querySelectorAll('code, pre, mjx-container, mjx-assistive-mml').forEach(x => x.remove());
    return c.textContent; });
  return {text: md.join('\\n'), maths: document.querySelectorAll('mjx-container').length, title: document.title};
}"""


@pytest.mark.browser
def test_every_page_typesets_its_maths_offline_in_a_real_browser():
    """Each committed page opened from file:// in headless chromium with every non-file request blocked: no request
    tries to leave the machine, MathJax (vendored) typesets every formula, no TeX source is left in the text."""
    import os

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    pages = sorted(COURSE.glob("[0-9][0-9]_*.html"))
    if not pages:
        pytest.skip("no executed course committed")
    results = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking", "--disable-component-update"])
        try:
            for path in pages:
                page, outside, errors = browser.new_page(), [], []

                def gate(route, outside=outside):     # file: and data: only; anything else is recorded and refused
                    if route.request.url.startswith(("file:", "data:")):
                        return route.continue_()
                    outside.append(route.request.url)
                    return route.abort()

                page.route("**/*", gate)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.as_uri())
                page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                       timeout=60_000)
                page.evaluate("() => MathJax.startup.promise")
                results[path.name] = {**page.evaluate(OFFLINE_CHECK), "outside": outside, "errors": errors}
                page.close()
        finally:
            browser.close()
    for name, r in results.items():
        assert not r["outside"], f"{name} tried the network: {r['outside'][:3]}"
        assert not TEX.search(r["text"]), f"{name} shows TeX source: {TEX.findall(r['text'])[:5]}"
        assert r["title"] != "Notebook" and r["title"][:2] == name[:2], (name, r["title"])
        assert not r["errors"], (name, r["errors"][:3])
    assert sum(r["maths"] for r in results.values()) > 20, "the pages' formulas were typeset"


def test_index_says_first_run_training_cached_and_exercise_costs(tmp_path):
    """run_one's accounting: which runs a notebook trained (metrics.json written during it) and for how long, so the
    index can give the first-run time, the training in it, and the time with runs cached; and the exercises' cost."""
    import os
    import time

    runs = tmp_path / "runs"
    for name in ("old", "new"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
        (runs / name / "metrics.json").write_text("{}")
    before = course.run_stamps(runs)
    t0 = time.time()
    os.utime(runs / "new" / "config.json", (t0 + 5, t0 + 5))       # started 5 s in, finished 65 s in
    os.utime(runs / "new" / "metrics.json", (t0 + 65, t0 + 65))
    trained = course.trained_since(runs, before, t0)
    assert trained == {"new": pytest.approx(60.0)}                  # the cached "old" run did not train
    (runs / "side").mkdir()                                          # a run side by side: 35 s to 95 s
    (runs / "side" / "config.json").write_text("{}")
    (runs / "side" / "metrics.json").write_text("{}")
    os.utime(runs / "side" / "config.json", (t0 + 35, t0 + 35))
    os.utime(runs / "side" / "metrics.json", (t0 + 95, t0 + 95))
    assert course.training_wall_seconds(runs, before, t0) == pytest.approx(90.0), "5-95 s: the union, not 120 s"
    x = course.exercises(ROOT / "notebooks" / "04_regularized_training.ipynb")
    assert x == {"count": 2, "train": 1}                              # exercise 2's lambda sweep trains runs
    assert course.notebook_title(ROOT / "notebooks" / "04_regularized_training.ipynb").startswith("04 · The cure")
    e = {"html": "04_x.html", "title": "04 · The cure", "seconds": 600.0, "passed": True, "started": "today",
         "trained_runs": 3, "training_seconds": 420.0, "exercises": x, "machine": "a 2-core CPU"}
    page = course.index_html({"04_x": e})
    assert "04 · The cure" in page
    assert "first run 10.0 min, 7.0 min of it with runs training (wall clock, probes included: 3 run(s))" in page
    assert "with the runs cached about 3.0 min" in page and "2 exercise(s), 1 of them trains a model" in page
    assert "a 2-core CPU" in page
    cached = course.index_html({"04_x": {**e, "trained_runs": 0, "training_seconds": 0.0}})
    assert "its runs were cached already" in cached


def test_a_cached_rebuild_keeps_the_last_measured_first_run(tmp_path):
    """Re-making a page whose runs are cached measures only the cached time; the index keeps the first run measured
    before (and keeps it through further cached rebuilds), and a build that trains again replaces it."""
    first = {"html": "04_x.html", "seconds": 600.0, "passed": True, "started": "2026-12-02T08:00", "machine": "cpu",
             "trained_runs": 3, "training_seconds": 420.0, "sha256": "a"}
    course._record(tmp_path, {"04_x": first})
    cached = {**first, "seconds": 120.0, "trained_runs": 0, "training_seconds": 0.0, "started": "2026-12-02T09:00"}
    m = course._record(tmp_path, {"04_x": cached})
    assert m["04_x"]["first_run"]["seconds"] == 600.0 and m["04_x"]["seconds"] == 120.0
    m = course._record(tmp_path, {"04_x": {**cached, "seconds": 110.0}})
    assert m["04_x"]["first_run"]["started"] == "2026-12-02T08:00", "kept through a second cached rebuild"
    index = (tmp_path / "index.html").read_text()
    assert "first run 10.0 min (build of 2026-12-02T08:00), 7.0 min of it with runs training" in index
    assert "earlier version" not in index
    m = course._record(tmp_path, {"04_x": {**cached, "sha256": "b"}})
    assert "first run 10.0 min (build of 2026-12-02T08:00 on an earlier version of the notebook)" in \
        (tmp_path / "index.html").read_text()
    assert "with the runs cached 1.8 min (that build)" in index
    m = course._record(tmp_path, {"04_x": {**cached, "trained_runs": 1, "training_seconds": 30.0}})
    assert m["04_x"]["first_run"]["seconds"] == 600.0, "one run trained again (a stopped panel run): not a first run"
    m = course._record(tmp_path, {"04_x": {**first, "seconds": 500.0}})
    assert "first_run" not in m["04_x"] and m["04_x"]["seconds"] == 500.0


def test_banner_machine_says_when_the_precision_is_forced(monkeypatch):
    from gmreg_lab import runtime
    from gmreg_lab.runners import course as course_mod

    try:
        monkeypatch.setenv(runtime.ENV_PRECISION, "fp32")
        runtime._auto_precision.cache_clear()
        assert "precision auto = fp32 (forced by $GMREG_PRECISION)," in course_mod.machine()
        monkeypatch.delenv(runtime.ENV_PRECISION)
        runtime._auto_precision.cache_clear()
        assert "forced" not in course_mod.machine()
    finally:
        runtime._auto_precision.cache_clear()

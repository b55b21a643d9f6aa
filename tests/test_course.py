"""The executed course (``./kit.sh course``, gmreg_lab/course.py): its pages are static and small, and every committed
page is current (made from the notebook as it is now)."""
import json
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from gmreg_lab import course

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
    nb.cells.append(nbformat.v4.new_code_cell("print(...)", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="data: 600 images\nNOTE: this run uses a GENERATED STAND-IN\n")]))
    html = course.to_html(nb, "> banner")
    assert html.index("GENERATED STAND-IN") < html.index("A title"), "a notebook's NOTE: lines are repeated on top"


def _manifest():
    if not MANIFEST.exists():
        pytest.skip("no executed course committed (course/MANIFEST.json)")
    return json.loads(MANIFEST.read_text())


def test_committed_course_is_current_or_says_it_is_not_and_small():
    """Every page was made from its notebook as it is now, or carries the "out of date" banner for exactly the
    notebook as it is now (``python -m gmreg_lab.course --mark-stale``): a learner is never shown a stale page
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
                          f"re-made, `python -m gmreg_lab.course --mark-stale`)")
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

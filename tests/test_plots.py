"""plots: figures built from plain data, with the data they were given (no compute inside)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

go = pytest.importorskip("plotly.graph_objects")
from gmreg_lab.errors import GmregError
from gmreg_lab.views import plots

ROWS = [{"event": "log", "iteration": i, "loss": 2.0 / i, "ce": 1.5 / i, "reg": 0.1 * i, "logit_dist": 0.5 * i,
         "acc_clean": 50 + i, "acc_fgsm": 40 + 2 * i, "acc_pgd": 30 - i, "loss_fgsm": 1.0, "loss_pgd": 1.0 + i}
        for i in range(1, 6)] + [{"event": "epoch", "iteration": 5, "epoch": 1, "epoch_seconds": 3.0}]
SWEEP = {"eps": [0.0, 0.1, 0.3], "fgsm": {"acc": [99.0, 60.0, 20.0], "loss": [0.1, 1.0, 3.0]},
         "pgd-40": {"acc": [99.0, 40.0, 1.0], "loss": [0.1, 2.0, 9.0]}}


def test_compute_modules_never_import_plotly_or_ipywidgets():
    code = ("import sys, gmreg_lab, gmreg_lab.views.lab, gmreg_lab.fixtures; "
            "bad = [m for m in ('plotly', 'ipywidgets', 'anywidget') if m in sys.modules]; "
            "assert not bad, bad; import gmreg_lab as gl; gl.plots; assert 'plotly' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_curves_use_the_log_rows_only():
    fig = plots.training_curves(ROWS, ("acc_clean", "acc_pgd"))
    assert isinstance(fig, go.Figure) and [t.name for t in fig.data] == ["CLEAN", "PGD"]
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5] and list(fig.data[1].y) == [29, 28, 27, 26, 25]


def test_series_skips_missing_values():
    rows = [{"event": "log", "iteration": 1, "reg": None}, {"event": "log", "iteration": 2, "reg": 0.5}]
    assert plots.series(rows, "reg") == ([2], [0.5])
    assert plots.series(rows, "absent") == ([], [])


def test_dashboard_has_one_trace_per_declared_series():
    fig = plots.training_dashboard(ROWS)
    assert len(fig.data) == len(plots.DASHBOARD_TRACES)
    for trace, (_, _, key, name) in zip(fig.data, plots.DASHBOARD_TRACES):
        assert trace.name == name and list(trace.y) == [float(r[key]) for r in ROWS[:5]]
    empty = plots.training_dashboard([])
    assert all(len(t.x) == 0 for t in empty.data)


def test_masking_diagnostic_shows_distance_and_loss_gap():
    fig = plots.masking_diagnostic({"a": ROWS, "b": ROWS[:2]})
    assert len(fig.data) == 4
    assert list(fig.data[1].y) == [float(i) for i in range(1, 6)]   # loss_pgd - loss_fgsm
    assert plots.loss_gap(ROWS) == ([1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_compare_runs_log_axis():
    fig = plots.compare_runs({"x": ROWS, "y": ROWS}, "logit_dist", log_y=True)
    assert fig.layout.yaxis.type == "log" and [t.name for t in fig.data] == ["x", "y"]


def test_sweep_figures():
    fig = plots.sweep_figure(SWEEP, "loss", train_eps=0.3)
    assert [list(t.y) for t in fig.data] == [SWEEP["fgsm"]["loss"], SWEEP["pgd-40"]["loss"]]
    assert fig.layout.shapes and fig.layout.shapes[0].x0 == 0.3          # dashed training-eps line
    grid = plots.sweep_grid({"early": SWEEP, "late": SWEEP}, "acc")
    assert len(grid.data) == 4 and sum(t.showlegend is not False for t in grid.data) == 2
    assert grid.layout.yaxis.type != "log"
    logged = plots.sweep_grid({"early": SWEEP, "late": SWEEP}, "loss", log_y=True)
    assert logged.layout.yaxis.type == "log" and logged.layout.yaxis2.type == "log"
    assert "log scale" in logged.layout.yaxis.title.text
    with pytest.raises(ValueError, match="log_y"):
        plots.sweep_grid({"early": SWEEP}, "acc", log_y=True)
    models = plots.sweep_models({"m1": SWEEP, "m2": SWEEP}, "pgd-40")
    assert [t.name for t in models.data] == ["m1", "m2"]
    with pytest.raises(ValueError, match="metric"):
        plots.sweep_figure(SWEEP, "accuracy")
    with pytest.raises(ValueError, match="sweep"):
        plots.sweep_figure({"fgsm": {}})
    with pytest.raises(ValueError, match="no 'ifgsm-40'"):
        plots.sweep_models({"m": SWEEP}, "ifgsm-40")


def test_adversarial_panel_shows_images_perturbation_and_probabilities():
    x = torch.rand(1, 28, 28)
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    p0, p1 = torch.softmax(torch.randn(10), 0), torch.softmax(torch.randn(10), 0)
    fig = plots.adversarial_panel(x, x_adv, p0, p1, eps=0.1, label=3, attack="fgsm")
    assert [type(t).__name__ for t in fig.data] == ["Heatmap", "Heatmap", "Heatmap", "Bar", "Bar"]
    assert np.allclose(np.asarray(fig.data[1].z)[::-1], (x_adv - x)[0].numpy(), atol=1e-6)
    assert np.allclose(fig.data[4].y, p1.numpy()) and "true class 3" in fig.layout.title.text
    rgb = plots.adversarial_panel(torch.rand(3, 32, 32), torch.rand(3, 32, 32), p0, p1, eps=8 / 255,
                                  classes=plots.CIFAR10_CLASSES)
    assert type(rgb.data[0]).__name__ == "Image" and list(rgb.data[3].x) == plots.CIFAR10_CLASSES
    with pytest.raises(ValueError, match="one image"):
        plots.adversarial_panel(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28), p0, p1, eps=0.1)


def test_bars_and_tables():
    tables = {"m1": {"clean": {"acc": 99.0, "loss": 0.1}, "pgd-40": {"acc": 1.0, "loss": 9.0}},
              "m2": {"clean": {"acc": 98.0, "loss": 0.1}}}
    fig = plots.table_bars(tables)
    assert list(fig.data[0].x) == ["CLEAN", "PGD-40"] and list(fig.data[1].y) == [98.0, None]
    v = plots.value_bars({"a": 1.0, "b": 2.5})
    assert list(v.data[0].y) == [1.0, 2.5]
    grid = plots.image_grid(torch.rand(7, 1, 28, 28), list("abcdefg"), cols=3)
    assert len(grid.data) == 7
    lay = grid.layout
    assert lay.yaxis.scaleanchor == "x" and lay.yaxis7.scaleanchor == "x7", "square pixels in every panel"


def test_checklist_figure_shows_masking_reports():
    from gmreg_lab.diagnostics import Check, MaskingReport

    a = MaskingReport([Check("c_one", True, "d1", {}), Check("c_two", False, "d2", {"x": 1.0}),
                       Check("c_three", None, "skipped", {})])
    b = MaskingReport([Check("c_two", True, "ok2", {})])
    t = plots.checklist_figure({"a": a, "b": b.to_dict()})       # reports or their to_dict()
    cells = t.data[0].cells
    assert list(cells.values[0]) == ["c one", "c two", "c three"]
    assert list(cells.values[1]) == ["✔ d1", "✘ d2", "– skipped"] and list(cells.values[2]) == ["", "✔ ok2", ""]
    assert list(cells.fill.color[1]) == ["#d3f9d8", "#ffe3e3", "#f1f3f5"]
    with pytest.raises(ValueError):
        plots.checklist_figure({})
    with pytest.raises(ValueError, match="masking report"):
        plots.checklist_figure({"m": [{"check": "c1", "ok": True, "detail": "d1"}]})


def test_checklist_figure_colours_only_masking_failures_red():
    """A failed convergence or label-leaking check is not a sign of masking: amber and labelled, never red; the
    kit's table matches the kinds in gl.diagnostics (reports saved without kinds are read by the check's name)."""
    from gmreg_lab import diagnostics
    from gmreg_lab.diagnostics import Check, MaskingReport

    assert plots.CHECK_KIND_OF == diagnostics.KIND_OF
    r = MaskingReport([Check("fgsm_below_pgd_gap", False, "gap", {}),
                       Check("no_label_leaking", False, "leak", {}, kind="leaking"),
                       Check("more_steps_and_restarts_dont_help", False, "drop", {}, kind="convergence")])
    old = r.to_dict()
    for c in old["checks"]:
        del c["kind"]
    for report in (r, old):
        t = plots.checklist_figure({"m": report})
        fills = list(t.data[0].cells.fill.color[1])
        assert fills == ["#ffe3e3", "#fff3bf", "#fff3bf"], fills
        cells = list(t.data[0].cells.values[1])
        assert "label leaking, not masking" in cells[1] and "not converged, not masking" in cells[2]
        assert "not masking" not in cells[0]
        assert list(t.data[0].cells.values[0])[1:] == ["no label leaking (leaking)",
                                                       "more steps and restarts don't help (convergence)"]


def test_checklist_table_is_tall_enough_for_every_wrapped_row():
    """plotly scrolls a go.Table inside its height and hides the rows below: the figure must be tall enough."""
    from gmreg_lab.diagnostics import Check, MaskingReport

    short = MaskingReport([Check(f"c{i}", True, "ok", {}) for i in range(8)])
    long = MaskingReport([Check(f"c{i}", True, "a long detail " * 12, {}) for i in range(8)])
    h_short = plots.checklist_figure({"m": short}).layout.height
    h_long = plots.checklist_figure({"m": long, "n": long}).layout.height
    assert h_short >= 130 + 8 * 28 and h_long >= 130 + 8 * 3 * 18, (h_short, h_long)


def test_training_curves_draw_a_recorded_run_first_faint_and_dashed():
    rec = {"rows": ROWS[:3], "label": "recorded: a CPU, 2026-12-02"}
    fig = plots.training_curves(ROWS, ("acc_clean", "acc_pgd"), recorded=rec)
    assert [t.name for t in fig.data] == ["CLEAN, earlier run (recorded: a CPU, 2026-12-02)",
                                          "PGD, earlier run (recorded: a CPU, 2026-12-02)", "CLEAN, this run",
                                          "PGD, this run"]
    assert fig.data[0].line.dash == "dash" and fig.data[2].line.dash is None
    assert list(fig.data[1].y) == [29, 28, 27] and list(fig.data[3].x) == [1, 2, 3, 4, 5]
    assert fig.data[0].line.color == fig.data[2].line.color


def _lines(fig):
    """(orientation, position, label) of every line shape, labels from the annotations in order."""
    labels = [a.text for a in fig.layout.annotations if a.text and ("limit" in a.text or "collapse" in a.text)]
    out = []
    for sh in fig.layout.shapes:
        out.append(("h", sh.y0) if sh.y0 == sh.y1 and sh.x0 != sh.x1 and sh.xref.endswith("domain") else ("v", sh.x0))
    return out, labels


def test_threshold_line_and_marks_are_drawn_where_asked():
    fig = plots.compare_runs({"x": ROWS}, "logit_dist", log_y=True, limit=2.0, limit_label="checklist limit",
                             marks={"collapse": 3})
    lines, labels = _lines(fig)
    assert sorted(lines) == [("h", 2.0), ("v", 3)] and labels == ["checklist limit 2", "collapse"]
    label = next(a for a in fig.layout.annotations if a.text == "checklist limit 2")
    assert label.y == pytest.approx(math.log10(2.0)), "on a log axis the label sits at the line, not at 10**2"
    lin = plots.compare_runs({"x": ROWS}, "logit_dist", limit=2.0)
    assert next(a for a in lin.layout.annotations if a.text.endswith("2")).y == 2.0
    assert plots.compare_runs({"x": ROWS}, "logit_dist").layout.shapes == ()            # nothing unless asked
    fig = plots.masking_diagnostic({"a": ROWS}, limit=2.0, marks={"collapse": 4})
    lines, _ = _lines(fig)
    assert sorted(lines) == [("h", 2.0), ("v", 4), ("v", 4)]                             # the mark on both panels
    assert [sh.xref for sh in fig.layout.shapes if sh.y0 == 2.0 and sh.y1 == 2.0][0] in ("x domain", "x")   # left
    assert [(a.xref, a.yref) for a in fig.layout.annotations if a.text == "limit 2"] == [("x domain", "y")]
    assert plots.compare_runs({"x": ROWS}, "logit_dist", marks={"none": None}).layout.shapes == ()


def test_attack_names_keep_their_restarts_readable_and_log_axes_label_decades():
    assert plots.attack_label("apgd-100x3") == "APGD-100×3" and plots.attack_label("pgd-40") == "PGD-40"
    fig = plots.table_bars({"m": {"apgd-100x3": {"acc": 1.0}, "fgsm": {"acc": 2.0}}})
    assert list(fig.data[0].x) == ["APGD-100×3", "FGSM"]
    wide = [dict(r, logit_dist=10.0 ** -(i % 4)) for i, r in enumerate(ROWS)]       # spans 1e-3 .. 1
    assert plots.compare_runs({"x": wide}, "logit_dist", log_y=True).layout.yaxis.dtick == 1
    narrow = [dict(r, logit_dist=1.0 + i) for i, r in enumerate(ROWS)]               # within one decade
    assert plots.compare_runs({"x": narrow}, "logit_dist", log_y=True).layout.yaxis.dtick is None
    assert plots.compare_runs({"x": wide}, "logit_dist").layout.yaxis.dtick is None  # linear: untouched


def test_setting_search_draws_every_run_where_its_method_batch_and_value_put_it():
    rows = [dict(method="proposed", batch=32, value=v, warmup=w, worst=50 + v + 10 * w, collapsed=False,
                 did_not_learn=False, chosen=(v == 10 and w)) for v in (2.0, 5.0, 10.0) for w in (False, True)]
    rows += [dict(method="fgsm", batch=64, value=None, warmup=False, worst=0.0, collapsed=True, did_not_learn=False,
                  chosen=True),
             dict(method="fgsm", batch=64, value=None, warmup=True, worst=0.0, collapsed=True, did_not_learn=False,
                  chosen=False),
             dict(method="proposed", batch=64, value=2.0, warmup=False, worst=11.5, collapsed=False,
                  did_not_learn=True, chosen=False)]
    rows[0]["edge"] = rows[1]["edge"] = True                                         # lambda 2: an edge step here
    fig = plots.setting_search(rows, names={"fgsm": "FGSM-AT"}, axis_names={"proposed": "λ"},
                               notes={("proposed", 64): "choice waits for<br>its edge step"})
    data = [t for t in fig.data if t.showlegend is False]
    on = [t for t in data if t.name == "ε warm-up on" and t.xaxis == "x"]          # proposed, batch 32
    assert len(on) == 1 and list(on[0].y) == [62.0, 65.0, 70.0]
    assert [round(x, 2) for x in on[0].x] == [0.13, 1.13, 2.13], "warm-up on sits just right of each value"
    rings = [t for t in data if t.name == "chosen"]
    # the chosen FGSM-AT run (warm-up off, left) is ringed, not its warm-up-on twin drawn at the same height
    assert sorted((round(t.x[0], 2), t.y[0]) for t in rings) == [(-0.13, 0.0), (2.13, 70.0)]
    dead = [t for t in data if "square-open" in list(t.marker.symbol)]
    assert len(dead) == 1 and list(dead[0].y) == [0.0], "a run that did not learn has no worst case: drawn at 0"
    notes = [a.text for a in fig.layout.annotations]
    assert "proposed<br>batch 32" in notes and "FGSM-AT<br>batch 64" in notes
    assert "no runs finished<br>yet" in notes, "FGSM-AT at batch 32 has no run"
    assert "choice waits for<br>its edge step" in notes
    assert fig.layout.xaxis3.title.text == "λ" and fig.layout.xaxis4.ticktext == ("—",)
    assert fig.layout.xaxis.ticktext == ("(2)", "5", "10"), "an edge step's value in parentheses"
    assert [t.name for t in fig.data if t.showlegend is not False] == [
        "ε warm-up off", "ε warm-up on", "collapsed or fell", "did not learn (drawn at 0)", "chosen"]
    with pytest.raises(GmregError):
        plots.setting_search([])

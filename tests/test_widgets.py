"""widgets: the eps explorer redraws, live figures follow training, and the training panel runs one job at a time,
stops on Stop, and always shows the current run."""

import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
import gmreg_lab as gl
from gmreg_lab.views import lab, widgets


@pytest.fixture(scope="module")
def explorer_model():
    torch.manual_seed(0)
    return gl.models.build("lenet_plus", "mnist").eval()


def _until(cond, timeout=60.0):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def test_explorer_redraws_on_eps_attack_and_image(explorer_model, small_batch):
    x, y = small_batch
    ex = widgets.attack_explorer(explorer_model, x[:8], y[:8], eps=0.0)
    p_adv = list(ex.fig.data[4].y)
    assert p_adv == pytest.approx(list(ex.fig.data[3].y))        # eps = 0: the adversary is the clean image
    ex.eps.value = 0.3
    assert list(ex.fig.data[4].y) != p_adv and "eps = 0.3" in ex.fig.layout.title.text
    assert ex.fig.data[1].zmax == pytest.approx(0.3)
    xi, xa, _, _ = ex.adversary()
    assert (xa - xi).abs().max() <= 0.3 + 1e-6
    fgsm_z = np.array(ex.fig.data[2].z)
    ex.attack.value = "pgd"
    assert not np.array_equal(np.array(ex.fig.data[2].z), fgsm_z) and "PGD-40" in ex.fig.layout.title.text
    ex.index.value = 3
    assert f"true class {int(y[3])}" in ex.fig.layout.title.text
    with pytest.raises(ValueError, match="unknown attack"):
        widgets.attack_explorer(explorer_model, x, y, attacks=("cw",))


def test_live_figure_batches_redraws_and_shows_history(monkeypatch):
    monkeypatch.setattr(widgets.time, "monotonic", lambda: 3.0)   # a machine booted 3 s ago: the clock is small
    live = widgets.live_figure(gl.plots.training_curves, keys=("acc_pgd",), min_interval=1000.0)
    rows = [{"event": "log", "iteration": i, "acc_pgd": float(i)} for i in range(1, 6)]
    for r in rows:
        assert live.callback(r) is None                           # never stops training
    assert live.redraws == 1 and list(live.fig.data[0].y) == [1.0]  # throttled: one redraw for five rows
    live.callback({"event": "end"})
    assert live.redraws == 2 and list(live.fig.data[0].y) == [1.0, 2.0, 3.0, 4.0, 5.0]
    live.show(rows[:2])
    assert list(live.fig.data[0].x) == [1, 2]


def _long_cfg():
    # a run that lasts long enough to click twice and press Stop (1000 images, log every iteration)
    return lab.recipe("fgsm", smoke=True, limit=1000, probe_size=8, probe_pgd_steps=1)


def test_train_twice_starts_one_job_and_stop_stops_it():
    panel = widgets.training_panel(_long_cfg(), min_interval=0.0)
    panel.train_button.click()
    panel.train_button.click()                                    # second click while running: ignored
    assert panel.jobs_started == 1 and panel.running
    assert panel.train_button.disabled and panel.lam.disabled and not panel.stop_button.disabled
    _until(lambda: len(panel.rows) >= 1)
    panel.lam.value = 7.0                                         # moving a slider during a run starts nothing
    assert panel.jobs_started == 1 and panel.last_config.lam == 5.0
    assert threading.active_count() >= 2
    panel.stop_button.click()
    res = panel.wait(timeout=60)
    assert res.stopped and res.metrics["iterations"] < 32        # 32 iterations would be the whole epoch
    assert not panel.running and not panel.train_button.disabled and panel.stop_button.disabled
    assert "stopped" in panel.status.value and "stopped" in panel.fig.layout.title.text
    n_rows = len(lab.log_rows(res.history))
    assert len(panel.fig.data[0].x) == n_rows


def test_one_run_at_a_time_across_panels_and_the_figure_shows_the_current_run():
    a = widgets.training_panel(_long_cfg(), min_interval=0.0)
    b = widgets.training_panel(lab.recipe("normal", smoke=True), min_interval=0.0)
    assert a.start()
    assert not b.start() and b.jobs_started == 0 and "another panel" in b.status.value
    a.stop()
    first = a.wait(60)
    res = b.train_blocking(timeout=60, method="normal")          # the lock was released
    assert not res.stopped and b.jobs_started == 1
    assert b.last_config.method == "normal"
    res2 = a.train_blocking(timeout=120, method="normal", eps=0.1)  # a new run joins the old one's curves
    assert a.jobs_started == 2 and a.last_config.eps == 0.1 and not res2.stopped
    assert [t.name for t in a.fig.data][::3] == ["fgsm, ε = 0.3", "normal, ε = 0.1"]   # 3 traces per run
    assert list(a.fig.data[0].x) == [r["iteration"] for r in lab.log_rows(first.history)]
    assert list(a.fig.data[3].x) == [r["iteration"] for r in lab.log_rows(res2.history)]
    assert list(a.dashboard.data[-1].x) == list(a.fig.data[3].x)  # the detail dashboard shows the current run
    assert [r["run"] for r in a.summary()] == ["fgsm, ε = 0.3", "normal, ε = 0.1"]
    assert a.summary()[0]["stopped"] == "by you" and a.summary()[1]["stopped"] is False


def test_panel_settings_and_errors(tmp_path):
    panel = widgets.training_panel(lab.recipe("proposed", smoke=True))
    assert panel.lam.continuous_update is False and panel.eps.continuous_update is False
    assert panel.lam.max == 20 and panel.eps.max == 0.5
    panel.eps.value = 0.005 + panel.eps.min                       # alpha follows eps when eps < alpha
    assert panel.config().alpha <= panel.config().eps
    with pytest.raises(ValueError, match="unknown setting"):
        panel.train_blocking(batch_size=3)
    cifar = widgets.training_panel(gl.TrainConfig(dataset="cifar10", model="resnet18", **lab.SMOKE),
                                   data_dir=tmp_path)              # no CIFAR-10 there
    assert cifar.eps.max == pytest.approx(16 / 255)
    with pytest.raises(FileNotFoundError, match="CIFAR-10"):
        cifar.train_blocking(timeout=60)
    assert not cifar.running and "error" in cifar.status.value
    with pytest.raises(ValueError, match="TrainConfig"):
        widgets.training_panel({"method": "fgsm"})


def test_panel_caches_runs_in_out_dir(tmp_path):
    panel = widgets.training_panel(lab.recipe("normal", smoke=True), out_dir=tmp_path)
    first = panel.train_blocking(timeout=60)
    assert (tmp_path / lab.run_name(panel.last_config)).is_dir()
    again = panel.train_blocking(timeout=60)                      # from the panel's memory: nothing trains
    assert again is first and panel.jobs_started == 2 and "from memory" in panel.status.value
    assert len(panel.fig.data) == 3 and len(panel.fig.data[0].x) == len(lab.log_rows(first.history))
    fresh = widgets.training_panel(lab.recipe("normal", smoke=True), out_dir=tmp_path)   # a later session
    cached = fresh.train_blocking(timeout=60)                     # from the disk cache: the same run, not retrained
    assert cached.history == first.history and cached.metrics["iterations"] == first.metrics["iterations"]
    assert [s["cached"] for s in panel.summary()] == [False], "the first session trained it"
    assert [s["cached"] for s in fresh.summary()] == [True] and "(cached: trained earlier)" in fresh.status.value


def test_panel_remembers_every_run_and_builds_the_lambda_curve():
    panel = widgets.training_panel(lab.recipe("proposed", smoke=True), min_interval=0.0)
    for lam, eps in ((0.0, 0.3), (5.0, 0.3), (5.0, 0.1)):
        panel.train_blocking(timeout=120, lam=lam, eps=eps)
    labels = ["λ = 0, ε = 0.3", "λ = 5, ε = 0.3", "λ = 5, ε = 0.1"]
    assert [t.name for t in panel.fig.data][::3] == labels and len(panel.fig.data) == 9
    rows = panel.summary()
    assert [(r["lam"], r["eps"]) for r in rows] == [(0.0, 0.3), (5.0, 0.3), (5.0, 0.1)]
    assert all(r["verdict"] in ("no masking", "not robust yet", "masking") and r["iterations"] >= 1 for r in rows)
    by_name = {(t.xaxis, t.name): t for t in panel.summary_fig.data}
    assert list(by_name[("x", "ε = 0.3")].x) == [0.0, 5.0]         # final PGD probe vs lambda, per eps
    assert list(by_name[("x", "ε = 0.3")].y) == [rows[0]["pgd"], rows[1]["pgd"]]
    assert list(by_name[("x2", "λ = 5")].x) == [0.1, 0.3]          # ... and vs eps, per lambda
    panel.train_blocking(timeout=60, lam=0.0, eps=0.3)             # back to a setting it ran: from memory
    assert len(panel.fig.data) == 9 and "from memory" in panel.status.value and panel.jobs_started == 4


def test_panel_stops_a_run_once_the_verdict_says_it_masks(monkeypatch):
    def fake_verdict(rows, finished=False):     # "masks" from the second probe row on: the panel must stop there
        n = len([r for r in rows if r.get("event") == "log"])
        kind = "masking" if n >= 2 else "undecided"
        return {"verdict": kind, "iteration": n, "text": kind, "pgd": 0.0, "fgsm": 0.0, "logit_dist": 0.0}

    monkeypatch.setattr(widgets, "live_verdict", fake_verdict)
    panel = widgets.training_panel(lab.recipe("fgsm", smoke=True, limit=320, probe_size=8, probe_pgd_steps=1),
                                   min_interval=0.0)             # 10 iterations, a probe row after each
    res = panel.train_blocking(timeout=60)
    assert res.stopped and len(lab.log_rows(res.history)) == 2 and "it masks" in panel.status.value
    assert panel.summary()[0]["stopped"] == "at the verdict" and panel.summary()[0]["verdict"] == "masking"
    panel.stop_at_verdict.value = False                            # unticked: the run goes to its end
    res = panel.train_blocking(timeout=120, eps=0.2)
    assert not res.stopped and res.metrics["iterations"] == panel.last_config.iterations

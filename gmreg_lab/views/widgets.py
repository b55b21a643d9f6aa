"""Interactive widgets on top of :mod:`gmreg_lab.views.plots` (ipywidgets + plotly ``FigureWidget``, which needs
anywidget).

* :func:`attack_explorer` - an eps slider (and attack / image pickers) redraw the clean image, the perturbation, the
  adversarial image and the class probabilities.
* :func:`live_figure` - a figure that follows a training run through ``gl.train``'s ``callback``.
* :func:`training_panel` - lambda and eps sliders, Train and Stop buttons; every run since the panel was made stays
  on its figure (probe accuracies, logit distance), a summary of final PGD probe vs lambda and eps grows with each
  run, a verdict (masks or not) is read from the probe rows, and the current run is shown in detail. Training runs
  in a background thread; one run at a time (across all panels); Stop sets a ``threading.Event`` that the training
  loop checks every iteration.

Figures are updated in place inside ``fig.batch_update()``, at most every ``min_interval`` seconds while training.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import ipywidgets as W
import plotly.graph_objects as go
import torch

from . import plots
from .. import config
from ..config import TrainConfig
from ..errors import GmregError
from ..evaluate import parse_attack
from ..models import to_model_device
from ..diagnostics import live_verdict
from ..training import train

EPS_RANGE = {"mnist": (0.5, 0.01), "cifar10": (16 / 255, 1 / 255)}   # slider max and step, pixel units
ATTACK_SPECS = {"fgsm": "fgsm", "rfgsm": "rfgsm", "ifgsm": "ifgsm:10", "pgd": "pgd:40"}
ATTACK_NAMES = {"fgsm": "FGSM", "rfgsm": "R-FGSM", "ifgsm": "I-FGSM-10", "pgd": "PGD-40"}


def _copy_traces(fig: go.FigureWidget, new: go.Figure, layout_title: Optional[str] = None) -> None:
    """Copy the data of ``new``'s traces into ``fig``'s (same structure), in one batched update: x, y, z, hover text
    and marker symbols."""
    with fig.batch_update():
        for t, nt in zip(fig.data, new.data):
            for attr in ("x", "y", "z", "text"):
                if attr in nt and nt[attr] is not None:
                    t[attr] = nt[attr]
            if "marker" in nt and getattr(nt.marker, "symbol", None) is not None:
                t.marker.symbol = nt.marker.symbol
        if layout_title is not None:
            fig.layout.title.text = layout_title


class _Displayable:
    widget: W.Widget

    def _repr_mimebundle_(self, **kw):
        return self.widget._repr_mimebundle_(**kw)


# --- attack explorer ------------------------------------------------------------------------------------------------
class AttackExplorer(_Displayable):
    """See one image, its adversary and the predicted probabilities; sliders for eps and the image."""

    def __init__(self, model, x, y, *, attacks: Sequence[str] = ("fgsm", "rfgsm", "ifgsm", "pgd"), eps: float = 0.1,
                 eps_max: Optional[float] = None, eps_step: Optional[float] = None, index: int = 0,
                 classes: Optional[Sequence[str]] = None, seed: int = 0):
        if len(x) == 0 or len(x) != len(y):
            raise GmregError(f"need matching, non-empty images and labels (got {len(x)} images, {len(y)} labels)")
        unknown = [a for a in attacks if a not in ATTACK_SPECS]
        if unknown:
            raise GmregError(f"unknown attack(s) {unknown}; valid: {', '.join(ATTACK_SPECS)}")
        self.model, self.x, self.y, self.seed = model.eval(), x, y, seed
        self.dataset = getattr(model, "dataset", "mnist")
        top, step = EPS_RANGE.get(self.dataset, EPS_RANGE["mnist"])
        self.classes = list(classes or (plots.CIFAR10_CLASSES if self.dataset == "cifar10" else plots.MNIST_CLASSES))
        self.eps = W.FloatSlider(value=eps, min=0.0, max=eps_max or top, step=eps_step or step, description="ε",
                                 readout_format=".3f", continuous_update=True, layout=W.Layout(width="360px"))
        self.attack = W.Dropdown(options=[(ATTACK_NAMES[a], a) for a in attacks], value=attacks[0],
                                 description="attack", layout=W.Layout(width="220px"))
        self.index = W.IntSlider(value=index, min=0, max=len(x) - 1, description="image",
                                 continuous_update=False, layout=W.Layout(width="320px"))
        self.fig = go.FigureWidget(self._figure())
        for w in (self.eps, self.attack, self.index):
            w.observe(self.update, names="value")
        self.widget = W.VBox([W.HBox([self.attack, self.eps, self.index]), self.fig])

    def adversary(self, eps: Optional[float] = None, attack: Optional[str] = None, index: Optional[int] = None):
        """``(x, x_adv, probs_clean, probs_adv)`` for one image (defaults: the widgets' current values)."""
        eps = self.eps.value if eps is None else eps
        attack = self.attack.value if attack is None else attack
        i = self.index.value if index is None else index
        xi, yi = to_model_device(self.model, self.x[i:i + 1], self.y[i:i + 1])
        gen = torch.Generator(device=xi.device).manual_seed(self.seed)  # same eps -> same picture
        x_adv = parse_attack(ATTACK_SPECS[attack], self.dataset).run(self.model, xi, yi, float(eps), generator=gen)
        with torch.no_grad():
            probs = torch.softmax(self.model(torch.cat([xi, x_adv])).float(), 1)
        return xi[0], x_adv[0], probs[0], probs[1]

    def _figure(self) -> go.Figure:
        xi, xa, p0, p1 = self.adversary()
        return plots.adversarial_panel(xi, xa, p0, p1, eps=self.eps.value, classes=self.classes,
                                       label=int(self.y[self.index.value]), attack=ATTACK_NAMES[self.attack.value])

    def update(self, *_):
        new = self._figure()
        with self.fig.batch_update():
            _copy_traces(self.fig, new, new.layout.title.text)
            self.fig.data[1].zmin, self.fig.data[1].zmax = new.data[1].zmin, new.data[1].zmax


def attack_explorer(model, x, y, **kw) -> AttackExplorer:
    """An eps slider that redraws clean image, perturbation, adversarial image and class probabilities."""
    return AttackExplorer(model, x, y, **kw)


# --- a figure that follows training -----------------------------------------------------------------------------------
class LiveFigure(_Displayable):
    """A ``FigureWidget`` redrawn from history rows by ``make(rows, **kw)`` (a :mod:`plots` function).

    Pass ``live.callback`` to ``gl.train(..., callback=...)``; call ``live.show(history)`` to draw a finished run.
    """

    def __init__(self, make: Callable, history=(), *, min_interval: float = 0.5, **kw):
        self.make, self.kw, self.min_interval = make, kw, min_interval
        self.rows: list = list(history)
        self.fig = go.FigureWidget(make(self.rows, **kw))
        self.widget = self.fig
        self._last = -math.inf   # the first row always draws (monotonic time may be small on a fresh machine)
        self.redraws = 0

    def callback(self, row) -> None:
        self.rows.append(row)
        if row.get("event") != "log" and row.get("event") != "end":
            return None
        now = time.monotonic()
        if row.get("event") == "end" or now - self._last >= self.min_interval:
            self.redraw()
        return None  # never stops training

    def show(self, history) -> "LiveFigure":
        self.rows = list(history)
        self.redraw()
        return self

    def redraw(self) -> None:
        _copy_traces(self.fig, self.make(self.rows, **self.kw))
        self._last = time.monotonic()
        self.redraws += 1


def live_figure(make: Callable = plots.training_curves, history=(), **kw) -> LiveFigure:
    return LiveFigure(make, history, **kw)


# --- training panel -------------------------------------------------------------------------------------------------
_ONE_RUN = threading.Lock()   # one training run at a time in this kernel, whatever the number of panels


def run_label(cfg: TrainConfig) -> str:
    """The legend name of a panel run: ``"λ = 5, ε = 0.3"`` (proposed) or ``"fgsm, ε = 0.3"``."""
    head = f"λ = {cfg.lam:g}" if cfg.method == "proposed" else cfg.method
    return f"{head}, ε = {cfg.eps:.3g}"


def _sync_figure(fig: go.FigureWidget, new: go.Figure, title: Optional[str] = None) -> None:
    """Make ``fig`` show ``new``'s traces: copied in place when the structure is the same, else replaced."""
    if len(fig.data) == len(new.data) and all(a.name == b.name for a, b in zip(fig.data, new.data)):
        return _copy_traces(fig, new, title)
    with fig.batch_update():
        fig.data = []
        fig.add_traces(list(new.data))
        if title is not None:
            fig.layout.title.text = title


class TrainingPanel(_Displayable):
    """λ / ε sliders, method picker, Train and Stop; every run made since the panel was created stays on its figure
    (PGD and FGSM probe accuracy and the logit distance, one colour per run, λ and ε in the legend), a summary of
    each run's final PGD probe against λ and against ε grows with each run, and a 2x2 dashboard shows the current
    run in detail (loss, regulariser, logit distance, probes).

    Each run gets a verdict from :func:`gmreg_lab.diagnostics.live_verdict` while it trains; with "stop once it
    masks" ticked (the default) a run stops at the probe row where the masking signature is confirmed. A setting
    already run in this panel comes back at once from memory; with ``out_dir`` finished runs are also cached on disk
    (``gl.lab.run_dir``), so they come back at once in a later session too."""

    METHODS = ("proposed", *(m for m in config.METHODS if m not in ("proposed", "eat")))   # EAT needs sources

    def __init__(self, base: TrainConfig, *, out_dir=None, data_dir=None, device="auto", lam_max: float = 20.0,
                 eps_max: Optional[float] = None, min_interval: float = 0.5, stop_at_verdict: bool = True,
                 note: str = ""):
        if not isinstance(base, TrainConfig):
            raise GmregError("base must be a TrainConfig (e.g. gl.lab.recipe('panel'))")
        self.base, self.data_dir, self.device = base, data_dir, device
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.min_interval = min_interval
        top, step = EPS_RANGE[base.dataset]
        slider = dict(continuous_update=False, layout=W.Layout(width="330px"), style={"description_width": "60px"})
        self.lam = W.FloatSlider(value=base.lam, min=0.0, max=lam_max, step=0.5, description="λ",
                                 readout_format=".1f", **slider)
        self.eps = W.FloatSlider(value=base.eps, min=step, max=eps_max or top, step=step, description="ε",
                                 readout_format=".3f", **slider)
        methods = self.METHODS if base.method in self.METHODS else (base.method, *self.METHODS)
        self.method = W.Dropdown(options=methods, value=base.method, description="method",
                                 layout=W.Layout(width="230px"))
        self.train_button = W.Button(description="Train", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.stop_at_verdict = W.Checkbox(value=stop_at_verdict, description="stop once it masks", indent=False,
                                          layout=W.Layout(width="150px"))
        self.status = W.HTML("ready")
        self.budget = W.HTML(self._budget_text(note))
        self.fig = go.FigureWidget(plots.panel_runs({}, title="press Train"))
        self.summary_fig = go.FigureWidget(plots.panel_summary([]))
        self.dashboard = go.FigureWidget(plots.training_dashboard(title="the current run in detail"))
        self.train_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        details = W.Accordion(children=[self.dashboard])
        details.set_title(0, "the current run in detail: loss, regulariser, logit distance, probes")
        self.widget = W.VBox([W.HBox([self.method, self.lam, self.eps]),
                              W.HBox([self.train_button, self.stop_button, self.stop_at_verdict]),
                              self.status, self.budget, self.fig, self.summary_fig, details])
        self._lock = threading.Lock()
        self._busy = False
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._run_id = 0
        self._last_draw = -math.inf
        self._t0 = 0.0
        self.jobs_started = 0
        self.memory: dict = {}    # run label -> {"config", "rows", "verdict", "seconds", "stopped", "result"}
        self.rows: list = []
        self.result = None
        self.error: Optional[BaseException] = None
        self.last_config: Optional[TrainConfig] = None

    # state ----------------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._busy

    def config(self) -> TrainConfig:
        """The config the next Train click would run (the base config with the sliders' values)."""
        eps = round(float(self.eps.value), 6)
        return self.base.replace(method=self.method.value, lam=float(self.lam.value), eps=eps,
                                 alpha=min(self.base.alpha, eps))

    def summary(self) -> list:
        """One dict per run of this panel (the summary figure's data): method, λ, ε, final PGD / FGSM probe
        (%), logit distance, verdict, iterations, seconds."""
        out = []
        for label, m in self.memory.items():
            cfg, v = m["config"], m["verdict"]
            last = [r for r in m["rows"] if r.get("event") == "log"]
            out.append({"run": label, "method": cfg.method, "lam": cfg.lam, "eps": cfg.eps,
                        "pgd": last[-1]["acc_pgd"] if last else None, "fgsm": last[-1]["acc_fgsm"] if last else None,
                        "logit_dist": last[-1]["logit_dist"] if last else None, "verdict": v["verdict"],
                        "verdict_text": v["text"], "iterations": last[-1]["iteration"] if last else 0,
                        "seconds": m["seconds"], "stopped": m["stopped"], "cached": bool(m.get("cached"))})
        return out

    def _budget_text(self, note: str) -> str:
        b = self.base
        return (f"<small>Each run: {b.iterations} iterations of {b.batch_size} images (lr {b.lr:g}), probed every "
                f"{b.log_every} iterations with FGSM and PGD-{b.probe_pgd_steps} on {b.probe_size} validation "
                f"images. A short budget that shows whether a setting masks; notebooks 04-05 and REPRODUCTION.md "
                f"train the longer runs. {note}</small>")

    def _title(self, cfg: TrainConfig, state: str) -> str:
        return f"{run_label(cfg)}: {state}"

    def _set_controls(self, running: bool) -> None:
        self.train_button.disabled = running
        self.stop_button.disabled = not running
        for w in (self.lam, self.eps, self.method, self.stop_at_verdict):
            w.disabled = running

    # actions --------------------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a run with the current slider values; returns False (and starts nothing) if one is running. A
        setting this panel already ran comes back at once from memory (no training)."""
        with self._lock:
            if self._busy:
                self.status.value = "a run is in progress: press Stop first"
                return False
            if not _ONE_RUN.acquire(blocking=False):
                self.status.value = "another panel is training: stop it first"
                return False
            try:
                cfg = self.config()
            except GmregError as e:
                _ONE_RUN.release()
                self.status.value = f"<b>bad settings</b>: {e}"
                self.error = e
                return False
            label = run_label(cfg)
            self._run_id += 1
            self.jobs_started += 1
            self.error, self.last_config = None, cfg
            known = self.memory.get(label)
            if known is not None and known["config"] == cfg and not known["stopped"] == "by you":
                _ONE_RUN.release()
                self.rows, self.result, self._thread = list(known["rows"]), known["result"], None
                self._draw(self._title(cfg, "from memory"))
                self._draw_summary()
                self.status.value = f"{label}: from memory. {known['verdict']['text']}"
                return True
            self._busy = True
            self._stop = threading.Event()
            self.rows, self.result = [], None
            self.memory.pop(label, None)          # a re-run goes to the end of the legend
            self.memory[label] = {"config": cfg, "rows": self.rows, "verdict": live_verdict([]),
                                  "seconds": None, "stopped": False, "result": None}
            self._set_controls(True)
            self._t0 = time.perf_counter()
            self._draw(self._title(cfg, "starting"))
            self.status.value = f"training {label}..."
            self._thread = threading.Thread(target=self._work, args=(self._run_id, cfg, self._stop),
                                            name="gmreg-training-panel", daemon=True)
            self._thread.start()
            return True

    def stop(self) -> None:
        """Ask the current run to stop (it stops within one iteration)."""
        self._stop.set()
        if self._busy:
            self.status.value = "stopping..."

    def wait(self, timeout: Optional[float] = None):
        """Block until the current run ends; return its TrainResult, re-raise its error."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                raise TimeoutError(f"training still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def train_blocking(self, timeout: Optional[float] = None, **settings):
        """Set ``method`` / ``lam`` / ``eps`` (as the sliders would), train, wait, and return the TrainResult."""
        for key in settings:
            if key not in ("method", "lam", "eps"):
                raise GmregError(f"unknown setting {key!r}; valid: method, lam, eps")
            getattr(self, key).value = settings[key]
        if not self.start():
            raise GmregError(self.status.value)
        return self.wait(timeout)

    # worker ---------------------------------------------------------------------------------------------------------
    def _on_row(self, run_id: int, cfg: TrainConfig, row) -> Optional[bool]:
        if run_id != self._run_id:
            return True
        self.rows.append(row)
        if row.get("event") != "log":
            return None
        mem = self.memory[run_label(cfg)]
        mem["verdict"] = live_verdict(self.rows)
        masked = mem["verdict"]["verdict"] == "masking"
        if masked and self.stop_at_verdict.value:
            mem["stopped"] = "at the verdict"
            return True
        if time.monotonic() - self._last_draw >= self.min_interval:
            it, total = row["iteration"], cfg.iterations
            took = time.perf_counter() - self._t0
            left = took / max(it, 1) * (total - it)
            self._draw(self._title(cfg, f"iteration {it}"))
            self.status.value = (f"training {run_label(cfg)}: iteration {it} / {total}, {took:.0f} s, about "
                                 f"{left:.0f} s left. {mem['verdict']['text']}")
        return None

    def _draw(self, title: str) -> None:
        runs = {label: m["rows"] for label, m in self.memory.items()}
        names = [t.name for t in self.fig.data][::len(plots.PANEL_TRACES)]
        if names == list(runs):      # the same runs: only their data changed (cheap: no figure is built)
            with self.fig.batch_update():
                for t, (xs, ys) in zip(self.fig.data, plots.panel_runs_xy(runs)):
                    t.x, t.y = xs, ys
                self.fig.layout.title.text = title
        else:
            _sync_figure(self.fig, plots.panel_runs(runs), title)
        with self.dashboard.batch_update():
            for t, (xs, ys) in zip(self.dashboard.data, plots.dashboard_xy(self.rows)):
                t.x, t.y = xs, ys
            self.dashboard.layout.title.text = title
        self._last_draw = time.monotonic()

    def _draw_summary(self) -> None:
        _sync_figure(self.summary_fig, plots.panel_summary(self.summary()))

    def _work(self, run_id: int, cfg: TrainConfig, stop: threading.Event) -> None:
        label = run_label(cfg)
        mem = self.memory[label]
        try:
            out = None
            if self.out_dir is not None:
                from .lab import _finished, run_dir
                out = run_dir(cfg, root=self.out_dir)   # the same cache as lab.cached_train
                mem["cached"] = _finished(out, cfg)    # trained earlier (another session, the course build)
            res = train(cfg, out, resume=out is not None, device=self.device, data_dir=self.data_dir,
                        callback=lambda row: self._on_row(run_id, cfg, row), stop=stop, progress=False)
            seconds = time.perf_counter() - self._t0
            self.result = res
            self.rows[:] = list(res.history)
            if res.stopped and not mem["stopped"]:
                mem["stopped"] = "by you"
            mem.update(verdict=live_verdict(self.rows, finished=not res.stopped or mem["stopped"] != "by you"),
                       seconds=seconds, result=res)
            state = {False: "done", "by you": "stopped", "at the verdict": "stopped: it masks"}[mem["stopped"]]
            self._draw(self._title(cfg, f"{state} after {res.metrics.get('iterations', '?')} iterations"))
            self._draw_summary()
            cached = " (cached: trained earlier)" if mem.get("cached") else ""
            self.status.value = f"{label}: {state} in {seconds:.1f} s{cached}. {mem['verdict']['text']}"
        except BaseException as e:  # shown in the panel; wait() re-raises it
            self.error = e
            self.memory.pop(label, None)
            self.status.value = f"<b>error</b>: {type(e).__name__}: {e}"
        finally:
            with self._lock:
                self._busy = False
                _ONE_RUN.release()
                self._set_controls(False)


def training_panel(base: TrainConfig, **kw) -> TrainingPanel:
    """λ / ε sliders (``continuous_update=False``), Train / Stop, every run's curves and a growing λ / ε summary;
    one run at a time; see :class:`TrainingPanel`."""
    return TrainingPanel(base, **kw)


# --- the loss landscape, live -----------------------------------------------------------------------------------------
class LandscapeExplorer(_Displayable):
    """Pick a model, an image and the R-FGSM noise α: the loss over a slice of the ε-ball (FGSM's gradient axis x
    PGD's adversarial axis orthogonal to it, :func:`gmreg_lab.landscape.loss_landscape`) redraws on one fixed log
    colour scale, with the decision boundary, x, x_fgsm, x', x_rfgsm and the PGD adversary marked, beside the FGSM
    and R-FGSM logits; the title reads the loss at distance ε along each axis. ``seconds`` holds the time of the
    last redraw (compute and figure update)."""

    def __init__(self, models: dict, x, y, *, eps: float, alpha: float, grid: int = 41, index: int = 0,
                 alpha_max: Optional[float] = None, pgd_steps: int = 40):
        if not models:
            raise GmregError("landscape_explorer needs at least one model: {name: model}")
        if len(x) == 0 or len(x) != len(y):
            raise GmregError(f"need matching, non-empty images and labels (got {len(x)} images, {len(y)} labels)")
        self.models, self.x, self.y = dict(models), x, y
        self.eps, self.grid, self.pgd_steps = eps, grid, pgd_steps
        self.model = W.Dropdown(options=list(self.models), value=next(iter(self.models)), description="model",
                                layout=W.Layout(width="300px"))
        self.index = W.IntSlider(value=index, min=0, max=len(x) - 1, description="image", continuous_update=False,
                                 layout=W.Layout(width="300px"))
        top = alpha_max or eps
        self.alpha = W.FloatSlider(value=alpha, min=top / 100, max=top, step=top / 100, description="α",
                                   readout_format=".3f", continuous_update=False, layout=W.Layout(width="300px"))
        self.seconds = 0.0
        self.data = self._compute()
        first = plots.landscape_figure(self.data)
        first.layout.title.text = f"{self.model.value}: {first.layout.title.text}"
        self.fig = go.FigureWidget(first)
        for w in (self.model, self.index, self.alpha):
            w.observe(self.update, names="value")
        self.widget = W.VBox([W.HBox([self.model, self.index, self.alpha]), self.fig])

    def _compute(self) -> dict:
        from ..landscape import loss_landscape

        i = self.index.value
        return loss_landscape(self.models[self.model.value], self.x[i:i + 1], self.y[i], self.eps,
                              float(self.alpha.value), grid=self.grid, pgd_steps=self.pgd_steps)

    def update(self, *_):
        t0 = time.perf_counter()
        self.data = self._compute()
        new = plots.landscape_figure(self.data)
        with self.fig.batch_update():
            for t, nt in zip(self.fig.data, new.data):
                for attr in ("x", "y", "z", "customdata"):
                    if attr in nt and nt[attr] is not None:
                        t[attr] = nt[attr]
            self.fig.layout.title.text = f"{self.model.value}: {new.layout.title.text}"
            self.fig.layout.annotations[1].text = new.layout.annotations[1].text
        self.seconds = time.perf_counter() - t0


def landscape_explorer(models: dict, x, y, **kw) -> LandscapeExplorer:
    """The loss landscape of one image under each of ``models`` (``{name: model}``), with model / image / α
    pickers; see :class:`LandscapeExplorer`."""
    return LandscapeExplorer(models, x, y, **kw)


# --- scrubbing through one run's snapshots ----------------------------------------------------------------------------
class SnapshotScrubber(_Displayable):
    """An iteration slider over snapshots of one run: loss vs eps of FGSM, R-FGSM and PGD (the paper's Fig. 1,
    bottom) redraws for the weights kept after each iteration. ``sweeps`` maps iteration -> a
    :func:`gmreg_lab.evaluate.sweep` result (computed by :func:`snapshot_scrubber`)."""

    def __init__(self, sweeps: dict, *, train_eps: Optional[float] = None, metric: str = "loss"):
        if not sweeps:
            raise GmregError("no snapshots to scrub through")
        self.sweeps = dict(sorted(sweeps.items()))
        self.metric, self.train_eps = metric, train_eps
        its = list(self.sweeps)
        self.iteration = W.SelectionSlider(options=its, value=its[0], description="iteration",
                                           continuous_update=True, layout=W.Layout(width="600px"))
        self.fig = go.FigureWidget(self._figure(its[0]))
        self.iteration.observe(self.update, names="value")
        self.widget = W.VBox([self.iteration, self.fig])

    def _figure(self, it) -> go.Figure:
        return plots.sweep_figure(self.sweeps[it], self.metric, train_eps=self.train_eps,
                                  title=f"after iteration {it}: mean {'loss' if self.metric == 'loss' else 'accuracy'}"
                                        f" vs eps")

    def update(self, *_):
        new = self._figure(self.iteration.value)
        _copy_traces(self.fig, new, new.layout.title.text)


def snapshot_scrubber(run_dir, x, y, *, attacks: str = "fgsm,rfgsm,pgd:40", eps_list=(0.0, 0.1, 0.2, 0.3, 0.4),
                      train_eps: Optional[float] = None, progress: bool = False) -> SnapshotScrubber:
    """Sweep every snapshot that the run in ``run_dir`` kept (``snapshot_at``) once, then scrub through them."""
    from tqdm.auto import tqdm

    from ..evaluate import sweep
    from ..runs import load_checkpoint, load_model

    its = sorted(load_checkpoint(run_dir).get("snapshots") or {})
    if not its:
        raise GmregError(f"{run_dir} kept no snapshots: train it with snapshot_at=(...)")
    sweeps = {it: sweep(load_model(run_dir, which=f"iter:{it}", device=x.device), x, y, attacks, eps_list)
              for it in tqdm(its, desc="snapshots", disable=not progress)}
    return SnapshotScrubber(sweeps, train_eps=train_eps)

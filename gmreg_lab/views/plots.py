"""plotly figures of the paper's plots. Every function takes plain data (history rows, ``sweep`` / ``evaluate``
outputs, arrays) and returns a ``go.Figure``; nothing here trains or attacks.

History rows are the dicts ``gl.train`` records (``row["event"] == "log"`` rows hold the probe measurements).
Figures render with plotly's default renderer (the ``application/vnd.plotly`` mimetype in Jupyter; no CDN).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import GmregError
from ..runs import log_rows

COLORS = {"clean": "#2b8a3e", "fgsm": "#d9480f", "rfgsm": "#f59f00", "pgd": "#1c7ed6", "ifgsm": "#7048e8",
          "loss": "#212529", "ce": "#868e96", "reg": "#c2255c", "logit_dist": "#c2255c"}
PALETTE = ["#1c7ed6", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#f59f00", "#0c8599", "#5c940d", "#862e9c"]
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# The live training dashboard (widgets.TrainingPanel updates these traces in place, in this order).
DASHBOARD_PANELS = ("loss (Eq. 8) and its cross-entropy term", "regulariser (Eq. 8: squared logit distance)",
                    "FGSM / R-FGSM logit distance (L2)", "probe accuracy (%)")
DASHBOARD_TRACES = (  # (row, col, history key, legend name)
    (1, 1, "loss", "loss"), (1, 1, "ce", "cross-entropy"),
    (1, 2, "reg", "regulariser"),
    (2, 1, "logit_dist", "logit distance"),
    (2, 2, "acc_clean", "clean"), (2, 2, "acc_fgsm", "FGSM"), (2, 2, "acc_pgd", "PGD probe"),
)


def _color(key: str) -> Optional[str]:
    for name in ("rfgsm", "ifgsm", "fgsm", "pgd", "clean", "logit_dist", "reg", "ce", "loss"):
        if name in key:
            return COLORS[name]
    return None


def series(history: Iterable[Mapping], key: str, x: str = "iteration") -> tuple[list, list]:
    """``(xs, ys)`` of ``key`` over the log rows that have it (missing or None values are skipped)."""
    xs, ys = [], []
    for r in log_rows(history):
        if r.get(key) is not None and r.get(x) is not None:
            xs.append(r[x])
            ys.append(float(r[key]))
    return xs, ys


def _layout(fig: go.Figure, title: str, height: int = 380, **kw) -> go.Figure:
    fig.update_layout(title=dict(text=title), height=height, template="plotly_white",
                      margin=dict(l=60, r=20, t=60, b=50), legend=dict(orientation="h", y=-0.2), **kw)
    return fig


# --- training curves ------------------------------------------------------------------------------------------------
def training_curves(history, keys: Sequence[str] = ("acc_clean", "acc_fgsm", "acc_pgd"), *, title: str = "",
                    names: Optional[Mapping[str, str]] = None, yaxis: str = "probe accuracy (%)",
                    x: str = "iteration", recorded: Optional[Mapping] = None) -> go.Figure:
    """One line per history key over training iterations (default: clean / FGSM / PGD probe accuracy).
    ``recorded``: a recorded run of the same recipe (``gl.lab.recorded(name)``: its ``rows`` and ``label``), drawn
    first as faint dashed lines of the same colours and named "earlier run (...)", while ``history``'s lines are
    named "this run": a learner sees the whole curve while the live one grows, and never mistakes one for the
    other."""
    names = dict(names or {})
    fig = go.Figure()

    def label(key):
        return names.get(key, key.replace("acc_", "").replace("loss_", "").upper()
                         if key.startswith(("acc_", "loss_")) else key)

    if recorded is not None:
        for key in keys:
            xs, ys = series(recorded["rows"], key, x)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{label(key)}, earlier run ({recorded['label']})",
                                     line=dict(color=_color(key), dash="dash", width=1.5), opacity=0.45,
                                     legendgroup="recorded"))
    for key in keys:
        xs, ys = series(history, key, x)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers",
                                 name=label(key) + (", this run" if recorded is not None else ""),
                                 line=dict(color=_color(key)), marker=dict(size=4)))
    return _layout(fig, title or "training curves", xaxis_title=x, yaxis_title=yaxis)


def dashboard_xy(history) -> list[tuple[list, list]]:
    """The (x, y) data of every ``DASHBOARD_TRACES`` trace, in order."""
    return [series(history, key) for _, _, key, _ in DASHBOARD_TRACES]


def training_dashboard(history=(), *, title: str = "training") -> go.Figure:
    """2x2 dashboard: loss and CE, the regulariser, the FGSM/R-FGSM logit distance, probe accuracies."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=DASHBOARD_PANELS, horizontal_spacing=0.1,
                        vertical_spacing=0.16)
    for (row, col, key, name), (xs, ys) in zip(DASHBOARD_TRACES, dashboard_xy(history)):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, marker=dict(size=4),
                                 line=dict(color=_color(key))), row=row, col=col)
    fig.update_xaxes(title_text="iteration", row=2)
    fig.update_yaxes(range=[0, 100], row=2, col=2)
    return _layout(fig, title, height=620)


PANEL_TRACES = (("acc_pgd", "solid", 1, True), ("acc_fgsm", "dot", 1, False), ("logit_dist", "solid", 2, False))


def panel_runs_xy(runs: Mapping[str, Iterable[Mapping]]) -> list:
    """The (x, y) data of every :func:`panel_runs` trace, in order (the live panel redraws from these alone)."""
    return [series(hist, key) for hist in runs.values() for key, *_ in PANEL_TRACES]


def panel_runs(runs: Mapping[str, Iterable[Mapping]], *, title: str = "") -> go.Figure:
    """The live panel's memory (notebook 04): every run as its own colour, ``{legend name: history}``. Left: PGD probe
    accuracy (solid) and FGSM probe accuracy (dotted); right: the FGSM / R-FGSM logit distance (log scale).
    Three traces per run, in the order of ``runs`` (widgets.TrainingPanel updates them in place)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("probe accuracy (%): PGD solid, FGSM dotted",
                                        "FGSM / R-FGSM logit distance (L2, log scale)"))
    xy = iter(panel_runs_xy(runs))
    for i, name in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        for key, dash, col, show in PANEL_TRACES:
            xs, ys = next(xy)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=show, marker=dict(size=4), line=dict(color=color, dash=dash),
                                     hovertemplate=f"{name}<br>{key}: %{{y:.3g}} at iteration %{{x}}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="iteration")
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    return _layout(fig, title or "runs since the notebook opened", height=430)


def panel_summary(summary: Sequence[Mapping], *, title: str = "") -> go.Figure:
    """Final PGD probe accuracy of each panel run: left against λ (the proposed method's runs, one line per ε: a
    λ-curve built one slider move at a time; the paper reports only λ = 0 and 5), right against ε (one line per
    method / λ). ``summary``: dicts with ``method``, ``lam``, ``eps``, ``pgd`` (final PGD probe, %), and optionally
    ``verdict``."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("final PGD probe vs λ (proposed)", "final PGD probe vs ε"))
    symbols = {"masking": "x", "no masking": "circle", "not robust yet": "circle-open"}
    groups: dict = {}
    for r in summary:
        if r.get("method") == "proposed":
            groups.setdefault(("lam", f"ε = {r['eps']:g}"), []).append((r["lam"], r))
        name = f"λ = {r['lam']:g}" if r.get("method") == "proposed" else r.get("method", "?")
        groups.setdefault(("eps", name), []).append((r["eps"], r))
    colours: dict = {}
    for (axis, name), pts in groups.items():
        pts = sorted(pts, key=lambda p: p[0])
        color = colours.setdefault(name, PALETTE[len(colours) % len(PALETTE)])
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1]["pgd"] for p in pts], mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=color), marker=dict(size=10, symbol=[symbols.get(p[1].get("verdict"), "diamond")
                                                                 for p in pts]),
            text=[p[1].get("verdict", "") for p in pts], hovertemplate="%{x:g}: %{y:.0f} % (%{text})<extra></extra>"),
            row=1, col=1 if axis == "lam" else 2)
    lams = [r.get("lam") or 0.0 for r in summary] or [0.0]
    fig.update_xaxes(title_text="λ", range=[-0.5, max(5.5, max(lams) + 0.5)], row=1, col=1)
    fig.update_xaxes(title_text="ε", range=[0, 0.55], row=1, col=2)     # the panel's ε slider: 0.01-0.5
    fig.update_yaxes(title_text="final PGD probe accuracy (%)", range=[0, 100], row=1, col=1)
    fig.update_yaxes(range=[0, 100], row=1, col=2)
    return _layout(fig, title or "what each run ended at (✕ masked, ● resisted PGD, ○ too short to tell)",
                   height=380)


def attack_label(name: str) -> str:
    """An attack's display name: upper case, with restarts as a times sign ('apgd-100x3' -> 'APGD-100×3')."""
    return re.sub(r"(\d)X(\d)", "\\1×\\2", name.upper())


def _decade_ticks(fig: go.Figure, values: Iterable, **where) -> None:
    """On a log y axis whose data span two decades or more, label only the powers of ten (plotly otherwise labels
    the 2s and 5s of every decade as well, which crowds a short figure)."""
    pos = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if pos and max(pos) / min(pos) >= 100:
        fig.update_yaxes(dtick=1, **where)


def _limit_and_marks(fig: go.Figure, limit: Optional[float], limit_label: str, marks: Mapping[str, float],
                     log_y: bool = False, **where) -> None:
    """A dashed horizontal line at ``limit`` (a diagnostic's threshold) and a dotted vertical line per ``marks``
    entry ({label: x}, e.g. the iteration a run collapsed), each labelled on the figure; ``where`` picks a subplot.
    On a log y axis the line's label is placed by hand (plotly reads an annotation's y there as log10 of it)."""
    if limit is not None:
        fig.add_hline(y=limit, line_dash="dash", line_color="#c92a2a", **where)
        fig.add_annotation(text=f"{limit_label} {limit:g}", showarrow=False, xanchor="left", yanchor="bottom",
                           x=0, xref="x domain", y=math.log10(limit) if log_y else limit, yref="y",
                           font=dict(color="#c92a2a"), **where)
    for label, at in marks.items():
        if at is not None:
            fig.add_vline(x=at, line_dash="dot", line_color="#495057", annotation_text=label,
                          annotation_position="top right", **where)


def compare_runs(runs: Mapping[str, Iterable[Mapping]], key: str, *, title: str = "", yaxis: str = "",
                 log_y: bool = False, x: str = "iteration", limit: Optional[float] = None,
                 limit_label: str = "limit", marks: Optional[Mapping[str, float]] = None) -> go.Figure:
    """One line per run (``{name: history}``) of one history key, e.g. the logit distance of FGSM-AT vs PGD-AT;
    optionally a threshold line at ``limit`` and vertical marks ({label: x})."""
    fig = go.Figure()
    for i, (name, hist) in enumerate(runs.items()):
        xs, ys = series(hist, key, x)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, marker=dict(size=4),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig = _layout(fig, title or key, xaxis_title=x, yaxis_title=yaxis or key)
    if log_y:
        fig.update_yaxes(type="log")
        _decade_ticks(fig, [v for t in fig.data for v in t.y])
    _limit_and_marks(fig, limit, limit_label, marks or {}, log_y=log_y)
    return fig


def loss_gap(history, *, attack: str = "pgd", base: str = "fgsm") -> tuple[list, list]:
    """``(iterations, loss_<attack> - loss_<base>)`` over the log rows: large when FGSM stopped maximising the loss."""
    xs, ys = [], []
    for r in log_rows(history):
        a, b = r.get(f"loss_{attack}"), r.get(f"loss_{base}")
        if a is not None and b is not None:
            xs.append(r["iteration"])
            ys.append(float(a) - float(b))
    return xs, ys


def masking_diagnostic(runs: Mapping[str, Iterable[Mapping]], *, title: str = "", limit: Optional[float] = None,
                       limit_label: str = "limit", marks: Optional[Mapping[str, float]] = None) -> go.Figure:
    """Side by side per run: FGSM/R-FGSM logit distance (left) and the PGD - FGSM probe loss gap (right);
    optionally the distance's threshold ``limit`` on the left and vertical marks ({label: iteration}) on both."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("FGSM / R-FGSM logit distance (L2)",
                                                        "PGD loss - FGSM loss (probe)"), horizontal_spacing=0.1)
    for i, (name, hist) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        xs, ys = series(hist, "logit_dist")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name,
                                 marker=dict(size=4), line=dict(color=color)), row=1, col=1)
        xs, ys = loss_gap(hist)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=False,
                                 marker=dict(size=4), line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(title_text="iteration")
    _limit_and_marks(fig, limit, limit_label, {}, row=1, col=1)
    for col in (1, 2):
        _limit_and_marks(fig, None, limit_label, marks or {}, row=1, col=col)
    return _layout(fig, title or "gradient-masking diagnostics over training", height=420)


# --- accuracy / loss vs epsilon ---------------------------------------------------------------------------------------
def _check_sweep(sw: Mapping) -> list:
    if "eps" not in sw:
        raise GmregError("expected a sweep result: {'eps': [...], '<attack>': {'acc': [...], 'loss': [...]}}")
    return [k for k in sw if k != "eps"]


def _eps_axes(fig: go.Figure, metric: str, train_eps: Optional[float], title: str) -> go.Figure:
    """Shared finish of the one-panel vs-eps figures: the training-eps marker, axes and layout."""
    if train_eps is not None:
        fig.add_vline(x=train_eps, line_dash="dash", line_color="#868e96",
                      annotation_text=f"training eps {train_eps:g}", annotation_position="top")
    if metric == "acc":
        fig.update_yaxes(range=[-2, 102])
    return _layout(fig, title, xaxis_title="eps",
                   yaxis_title="accuracy (%)" if metric == "acc" else "mean cross-entropy")


def sweep_figure(sw: Mapping, metric: str = "acc", *, title: str = "", train_eps: Optional[float] = None,
                 attacks: Optional[Sequence[str]] = None) -> go.Figure:
    """Accuracy (``metric="acc"``, Fig. 3) or mean loss (``"loss"``, Fig. 1 bottom / Fig. 4) vs eps per attack."""
    if metric not in ("acc", "loss"):
        raise GmregError(f"metric must be 'acc' or 'loss', got {metric!r}")
    fig = go.Figure()
    for label in attacks or _check_sweep(sw):
        fig.add_trace(go.Scatter(x=list(sw["eps"]), y=list(sw[label][metric]), mode="lines+markers",
                                 name=attack_label(label), line=dict(color=_color(label))))
    return _eps_axes(fig, metric, train_eps, title or f"{'accuracy' if metric == 'acc' else 'mean loss'} vs eps")


def sweep_grid(sweeps: Mapping[str, Mapping], metric: str = "loss", *, title: str = "",
               train_eps: Optional[float] = None, log_y: bool = False) -> go.Figure:
    """Several sweeps side by side (``{panel title: sweep}``) with a shared y-axis, e.g. early vs late checkpoint.

    ``log_y`` puts the loss on a log scale: a masked model's PGD loss (tens) on a shared linear axis flattens an early
    checkpoint's curves (around 1-2) into one line."""
    if log_y and metric == "acc":
        raise GmregError("log_y is for the loss; accuracy stays on a linear 0-100 axis")
    names = list(sweeps)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.06)
    for j, name in enumerate(names, 1):
        sw = sweeps[name]
        for label in _check_sweep(sw):
            fig.add_trace(go.Scatter(x=list(sw["eps"]), y=list(sw[label][metric]), mode="lines+markers",
                                     name=attack_label(label), legendgroup=label, showlegend=j == 1,
                                     line=dict(color=_color(label))), row=1, col=j)
        if train_eps is not None:
            fig.add_vline(x=train_eps, line_dash="dash", line_color="#868e96", row=1, col=j)
    fig.update_xaxes(title_text="eps")
    fig.update_yaxes(title_text="accuracy (%)" if metric == "acc" else
                     "mean cross-entropy" + (" (log scale)" if log_y else ""), col=1)
    if metric == "acc":
        fig.update_yaxes(range=[-2, 102])
    if log_y:
        fig.update_yaxes(type="log")
        _decade_ticks(fig, [v for t in fig.data for v in t.y])
    return _layout(fig, title or f"{metric} vs eps", height=420)


def sweep_models(sweeps: Mapping[str, Mapping], attack: str, metric: str = "acc", *, title: str = "",
                 train_eps: Optional[float] = None) -> go.Figure:
    """One attack's accuracy or loss vs eps, one line per model (``{model name: sweep}``)."""
    fig = go.Figure()
    for i, (name, sw) in enumerate(sweeps.items()):
        if attack not in sw:
            raise GmregError(f"sweep of {name!r} has no {attack!r}; it has {', '.join(_check_sweep(sw))}")
        fig.add_trace(go.Scatter(x=list(sw["eps"]), y=list(sw[attack][metric]), mode="lines+markers", name=name,
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    return _eps_axes(fig, metric, train_eps, title or f"{attack_label(attack)} {metric} vs eps")


# --- tables as bars -------------------------------------------------------------------------------------------------
def table_bars(tables: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str = "acc", *,
               title: str = "", xaxis: str = "attack") -> go.Figure:
    """Grouped bars of ``{model: evaluate-output}`` (Table 3 as a picture): one group per attack, one bar per model."""
    fig = go.Figure()
    attacks: list = []
    for t in tables.values():
        attacks += [a for a in t if a not in attacks]
    for i, (name, t) in enumerate(tables.items()):
        vals = [t[a][metric] if a in t else None for a in attacks]
        fig.add_trace(go.Bar(x=[attack_label(a) for a in attacks], y=vals, name=name,
                             marker_color=PALETTE[i % len(PALETTE)],
                             text=[None if v is None else f"{v:.1f}" for v in vals], textposition="outside"))
    fig.update_layout(barmode="group")
    if metric == "acc":
        fig.update_yaxes(range=[0, 110])
    return _layout(fig, title or "white-box accuracy", height=420, xaxis_title=xaxis,
                   yaxis_title="accuracy (%)" if metric == "acc" else "mean cross-entropy")


def value_bars(values: Mapping[str, float], *, title: str = "", yaxis: str = "", fmt: str = "{:.1f}") -> go.Figure:
    """A simple bar per name, e.g. seconds per epoch of each method, or black-box accuracies."""
    names = list(values)
    vals = [float(values[n]) for n in names]
    fig = go.Figure(go.Bar(x=names, y=vals, text=[fmt.format(v) for v in vals], textposition="outside",
                           marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(names))]))
    return _layout(fig, title, height=360, yaxis_title=yaxis)


# --- adversarial image panel ------------------------------------------------------------------------------------------
def _image(x) -> np.ndarray:
    """CHW / HW array or tensor in [0, 1] -> HxW (grey) or HxWx3 numpy array."""
    a = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=float)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise GmregError(f"expected one image, got a batch of {a.shape[0]}")
        a = a[0]
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    if a.ndim not in (2, 3):
        raise GmregError(f"expected an image (HW or CHW), got shape {a.shape}")
    return a


def _image_trace(a: np.ndarray, **kw):
    if a.ndim == 2:
        return go.Heatmap(z=a[::-1], colorscale="gray", zmin=0, zmax=1, showscale=False, **kw)
    return go.Image(z=np.clip(a * 255, 0, 255).astype(np.uint8), **kw)


def panel_data(x, x_adv, probs_clean, probs_adv) -> dict:
    """The arrays the adversarial panel draws, in trace order: clean, perturbation, adversarial, two prob bars."""
    clean, adv = _image(x), _image(x_adv)
    pert = adv - clean
    if pert.ndim == 3:
        pert = pert.mean(axis=2)
    p0 = np.asarray(probs_clean.detach().cpu() if hasattr(probs_clean, "detach") else probs_clean, float).ravel()
    p1 = np.asarray(probs_adv.detach().cpu() if hasattr(probs_adv, "detach") else probs_adv, float).ravel()
    return {"clean": clean, "perturbation": pert, "adversarial": adv, "probs_clean": p0, "probs_adv": p1}


def adversarial_panel(x, x_adv, probs_clean, probs_adv, *, eps: float, classes: Optional[Sequence[str]] = None,
                      label: Optional[int] = None, attack: str = "", title: str = "") -> go.Figure:
    """Clean image, perturbation (x_adv - x, diverging colours, range +-eps), adversarial image, and the class
    probabilities on the clean and the adversarial image. Traces in that order (the explorer updates them)."""
    d = panel_data(x, x_adv, probs_clean, probs_adv)
    classes = list(classes or (MNIST_CLASSES if len(d["probs_clean"]) == 10 else range(len(d["probs_clean"]))))
    classes = [str(c) for c in classes]
    fig = make_subplots(rows=1, cols=4, column_widths=[0.2, 0.2, 0.2, 0.4], horizontal_spacing=0.04,
                        subplot_titles=("clean", "perturbation", "adversarial", "class probabilities"))
    fig.add_trace(_image_trace(d["clean"], name="clean"), row=1, col=1)
    lim = max(float(eps), 1e-3)
    fig.add_trace(go.Heatmap(z=d["perturbation"][::-1], colorscale="RdBu_r", zmin=-lim, zmax=lim, showscale=False,
                             name="perturbation"), row=1, col=2)
    fig.add_trace(_image_trace(d["adversarial"], name="adversarial"), row=1, col=3)
    fig.add_trace(go.Bar(x=classes, y=d["probs_clean"], name="clean", marker_color=COLORS["clean"]), row=1, col=4)
    fig.add_trace(go.Bar(x=classes, y=d["probs_adv"], name="adversarial", marker_color=COLORS["fgsm"]),
                  row=1, col=4)
    for c in (1, 2, 3):
        fig.update_xaxes(visible=False, row=1, col=c)
        fig.update_yaxes(visible=False, scaleanchor=f"x{c}" if c > 1 else "x", row=1, col=c)
    fig.update_yaxes(range=[0, 1], title_text="probability", row=1, col=4)
    fig.update_layout(barmode="group")
    head = title or (f"{attack.upper()} at eps = {eps:.3g}" + (f" (true class {classes[label]}, "
                     f"predicted {classes[int(d['probs_clean'].argmax())]} -> "
                     f"{classes[int(d['probs_adv'].argmax())]})" if label is not None else ""))
    return _layout(fig, head, height=340)


_SEARCH_SHIFT = {False: -0.13, True: 0.13}              # warm-up off just left of a value, on just right
_SEARCH_COLORS = {False: "#868e96", True: PALETTE[0]}


def _search_panel(fig: go.Figure, cell: list, i: int, j: int, name: str, note: Optional[str], axis: Optional[str]):
    """One panel of setting_search: the runs of one method at one batch size."""
    values = sorted({r["value"] for r in cell}, key=lambda v: (v is None, v if v is not None else 0))
    edge = {r["value"] for r in cell if r.get("edge")}
    ticks = ["—" if v is None else f"({v:g})" if v in edge else f"{v:g}" for v in values]
    xpos = lambda r: values.index(r["value"]) + _SEARCH_SHIFT[bool(r["warmup"])]      # noqa: E731
    ypos = lambda r: 0.0 if r.get("did_not_learn") else r["worst"]                     # noqa: E731
    for warm in (False, True):
        pts = [r for r in cell if bool(r["warmup"]) == warm]
        if not pts:
            continue
        color = _SEARCH_COLORS[warm]
        fig.add_trace(go.Scatter(
            x=[xpos(r) for r in pts], y=[ypos(r) for r in pts], mode="markers", showlegend=False,
            name=f"ε warm-up {'on' if warm else 'off'}", legendgroup=str(warm),
            text=[f"{name} {'—' if r['value'] is None else format(r['value'], 'g')}, warm-up "
                  f"{'on' if warm else 'off'}" + (", did not learn" if r.get("did_not_learn") else "") for r in pts],
            marker=dict(color=color, size=11, line=dict(width=2, color=color),
                        symbol=["square-open" if r.get("did_not_learn") else "x" if r.get("collapsed") else "circle"
                                for r in pts]),
            hovertemplate="%{text}: worst case %{y:.1f} %<extra></extra>"), row=i, col=j)
    chosen = [r for r in cell if r.get("chosen")]
    if chosen:                                          # drawn last, so that no other point hides the ring
        fig.add_trace(go.Scatter(
            x=[xpos(r) for r in chosen], y=[ypos(r) for r in chosen], mode="markers", name="chosen",
            legendgroup="chosen", showlegend=False, hoverinfo="skip",
            marker=dict(symbol="circle-open", size=24, color="#212529", line=dict(width=2.5))), row=i, col=j)
    note = "no runs finished<br>yet" if not cell else note
    if note:
        fig.add_annotation(text=note, x=max(len(values) - 1, 0) / 2, y=50 if not cell else 97, showarrow=False,
                           font=dict(size=11, color="#868e96"), row=i, col=j)
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(values))), ticktext=ticks,
                     range=[-0.6, max(len(values), 1) - 0.4], title_text=axis, row=i, col=j)


def setting_search(rows: Sequence[Mapping], *, title: str = "", names: Optional[Mapping[str, str]] = None,
                   axis_names: Optional[Mapping[str, str]] = None, notes: Optional[Mapping] = None) -> go.Figure:
    """A hyper-parameter search as a picture: one panel per method (columns) and batch size (rows), the setting's
    values along the x axis (warm-up off just left of each value, grey; on just right, blue), the validation worst
    case (%) up the y axis; a run that collapsed or fell is a cross, one that did not learn a hollow square at 0
    (it has no robust number), the chosen run has a black ring drawn over it. A value whose rows say ``"edge":
    True`` (a step beyond the planned grid) is written in parentheses. A panel with no run says so; ``notes`` maps
    ``(method, batch)`` to a line written at the top of that panel (e.g. "choice waits for its edge step").

    ``rows``: ``{"method", "batch", "value", "warmup", "worst", "collapsed", "did_not_learn", "chosen"}`` each
    (``value`` None for a method without a setting); ``names``: method -> the name its panels show;
    ``axis_names``: method -> the name of its setting (the x axis title)."""
    if not rows:
        raise GmregError("no search results to show")
    names, axis_names = dict(names or {}), dict(axis_names or {})
    notes = {tuple(k): v for k, v in (notes or {}).items()}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig = make_subplots(rows=len(batches), cols=len(methods), shared_yaxes=True, horizontal_spacing=0.03,
                        vertical_spacing=0.2, subplot_titles=[f"{names.get(m, m)}<br>batch {b}" for b in batches
                                                              for m in methods])
    for i, b in enumerate(batches, 1):
        for j, m in enumerate(methods, 1):
            _search_panel(fig, [r for r in rows if r["method"] == m and r["batch"] == b], i, j, names.get(m, m),
                          notes.get((m, b)), axis_names.get(m, "") if i == len(batches) else None)
    legend = [(f"ε warm-up {'on' if w else 'off'}", str(w), dict(color=c, size=10, symbol="circle"))
              for w, c in _SEARCH_COLORS.items()]
    legend += [(label, label, dict(symbol=sym, size=10, color="#495057", line=dict(width=2, color="#495057")))
               for sym, label in (("x", "collapsed or fell"), ("square-open", "did not learn (drawn at 0)"))]
    legend += [("chosen", "chosen", dict(symbol="circle-open", size=16, color="#212529", line=dict(width=2.5)))]
    for name, group, marker in legend:                  # the legend: one entry per colour and per symbol
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=group, marker=marker),
                      row=1, col=1)
    fig.update_yaxes(range=[-4, 100])
    fig.update_yaxes(title_text="validation worst case (%)", col=1)
    _layout(fig, title or "each method's setting search", height=320 * len(batches) + 160)
    return fig.update_layout(margin=dict(l=60, r=20, t=110, b=50))


def _seeds_panel(fig: go.Figure, cell: list, j: int, published: Mapping[str, float], published_label: str, legend):
    """One panel of seeds_comparison: every run of one group, per seed, with the means and published numbers."""
    labels = list(dict.fromkeys(r["label"] for r in cell))
    learned = [r for r in cell if not r["did_not_learn"] and r["robust"] is not None]
    dead = [r for r in cell if r["did_not_learn"] or r["robust"] is None]
    for pts, name, sym, color in (([r for r in learned if not r.get("collapsed")], "robust, one seed", "circle",
                                   PALETTE[0]),
                                  ([r for r in learned if r.get("collapsed")], "robust, one seed (collapsed or fell)",
                                   "x", PALETTE[1]),
                                  (dead, "did not learn (no robust number)", "square-open", "#868e96")):
        if pts:
            fig.add_trace(go.Scatter(
                x=[r["label"] for r in pts], y=[0.0 if r in dead else r["robust"] for r in pts], mode="markers",
                marker=dict(symbol=sym, size=11, color=color, line=dict(width=2, color=color)),
                text=[f"seed {r['seed']}" for r in pts], **legend(name),
                hovertemplate="%{x}, %{text}: %{y:.1f} %<extra></extra>"), row=1, col=j)
    fig.add_trace(go.Scatter(x=[r["label"] for r in cell], y=[r["clean"] for r in cell], mode="markers",
                             marker=dict(symbol="diamond", size=7, color="#adb5bd"),
                             text=[f"seed {r['seed']}" for r in cell], **legend("clean, one seed"),
                             hovertemplate="%{x}, %{text}: clean %{y:.1f} %<extra></extra>"), row=1, col=j)
    means = {lab: [r["robust"] for r in learned if r["label"] == lab] for lab in labels}
    means = {lab: sum(v) / len(v) for lab, v in means.items() if v}
    if means:
        fig.add_trace(go.Scatter(x=list(means), y=list(means.values()), mode="markers",
                                 marker=dict(symbol="line-ew", size=34, line=dict(width=3, color="#212529")),
                                 **legend("mean over the seeds that learned"),
                                 hovertemplate="%{x}: mean %{y:.1f} %<extra></extra>"), row=1, col=j)
    pub = {lab: v for lab, v in published.items() if lab in labels}
    if pub:
        fig.add_trace(go.Scatter(x=list(pub), y=list(pub.values()), mode="markers",
                                 marker=dict(symbol="star", size=14, color=PALETTE[5]), **legend(published_label),
                                 hovertemplate="%{x}: published %{y:.2f} %<extra></extra>"), row=1, col=j)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, row=1, col=j)


def seeds_comparison(rows: Sequence[Mapping], *, published: Optional[Mapping[str, float]] = None,
                     published_label: str = "published", title: str = "",
                     yaxis: str = "robust accuracy (%)") -> go.Figure:
    """Methods compared over seeds: one panel per ``group`` (e.g. a batch size), one category per ``label`` (a method
    at its setting); each seed's robust accuracy a dot (a cross when its run collapsed or fell), its clean accuracy a
    small grey diamond, the mean over the seeds that learned a dash; a run that did not learn is a hollow square at
    0, never a robust accuracy. ``published``: label -> a published number, drawn as a star (``published_label`` in
    the legend).

    ``rows``: ``{"group", "label", "seed", "robust", "clean", "did_not_learn", "collapsed"}`` each (``robust`` None
    for a run that did not learn)."""
    if not rows:
        raise GmregError("no results to compare")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig = make_subplots(rows=1, cols=len(groups), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[str(g) for g in groups],
                        column_widths=[max(1, len({r["label"] for r in rows if r["group"] == g})) for g in groups])
    shown = set()

    def legend(name):
        first = name not in shown
        shown.add(name)
        return dict(name=name, legendgroup=name, showlegend=first)

    for j, g in enumerate(groups, 1):
        _seeds_panel(fig, [r for r in rows if r["group"] == g], j, dict(published or {}), published_label, legend)
    fig.update_yaxes(range=[-4, 102])
    fig.update_yaxes(title_text=yaxis, col=1)
    _layout(fig, title or "methods over seeds", height=480)
    return fig.update_layout(margin=dict(l=60, r=20, t=70, b=150), legend=dict(y=-0.32))


def probe_curves(rows: Sequence[Mapping], *, names: Optional[Mapping[str, str]] = None, title: str = "",
                 marks: Optional[Mapping[str, float]] = None, yaxis: str = "PGD-10 probe accuracy (%)") -> go.Figure:
    """Learning curves of many runs: one panel per ``batch``, one colour per ``method`` (``names`` for the legend),
    a solid line for seed 0 and dotted for the others. ``marks``: label -> a fraction of each run's length, drawn as
    a vertical line (e.g. the learning-rate cuts).

    ``rows``: ``{"method", "batch", "seed", "iterations", "pgd"}`` each (``peers_results.learning_curves``)."""
    rows = [r for r in rows if r["iterations"]]
    if not rows:
        raise GmregError("no learning curves to draw")
    batches = sorted({r["batch"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = make_subplots(rows=1, cols=len(batches), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"batch {b}" for b in batches])
    shown = set()
    for j, b in enumerate(batches, 1):
        cell = [r for r in rows if r["batch"] == b]
        for r in sorted(cell, key=lambda r: (methods.index(r["method"]), r["seed"])):
            name = (names or {}).get(r["method"], r["method"])
            fig.add_trace(go.Scatter(
                x=r["iterations"], y=r["pgd"], mode="lines", name=name, legendgroup=name,
                showlegend=name not in shown, line=dict(color=PALETTE[methods.index(r["method"]) % len(PALETTE)],
                                                        dash="solid" if r["seed"] == 0 else "dot", width=1.6),
                hovertemplate=f"{name}, seed {r['seed']}: " + "%{y:.1f} % at %{x}<extra></extra>"), row=1, col=j)
            shown.add(name)
        end = max(r["iterations"][-1] for r in cell)
        for label, frac in (marks or {}).items():
            fig.add_vline(x=frac * end, line=dict(color="#adb5bd", dash="dash", width=1), row=1, col=j,
                          annotation_text=label if j == 1 else None, annotation_position="top left")
        fig.update_xaxes(title_text="iteration", row=1, col=j)
    fig.update_yaxes(range=[-2, 102])
    fig.update_yaxes(title_text=yaxis, col=1)
    _layout(fig, title or "learning curves", height=440)
    return fig.update_layout(legend=dict(title_text="solid: seed 0, dotted: seed 1"))


def image_grid(images, titles: Optional[Sequence[str]] = None, *, cols: int = 6, title: str = "") -> go.Figure:
    """A grid of images (a batch NCHW in [0, 1]), e.g. clean images above their adversaries."""
    imgs = [_image(images[i]) for i in range(len(images))]
    if not imgs:
        raise GmregError("no images to show")
    rows = -(-len(imgs) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[str(t) for t in titles] if titles else None,
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, a in enumerate(imgs):
        r, c = divmod(i, cols)
        fig.add_trace(_image_trace(a), row=r + 1, col=c + 1)
        # square pixels: each panel's y axis is scaled to its own x axis (a greyscale heatmap would stretch)
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", scaleratio=1, constrain="domain", row=r + 1, col=c + 1)
        fig.update_xaxes(constrain="domain", row=r + 1, col=c + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=170 * rows + 60)


def checklist_figure(reports: Mapping[str, object], *, title: str = "") -> go.Figure:
    """Gradient-masking checklists (``{model: gl.diagnostics.masking_report(...)}``, or their ``.to_dict()``) as a
    table: one column per model, one row per check; green with a tick when the model passes it, red with a cross when
    it fails a masking check (a sign of masking), amber with a cross when it fails a check of another kind (an
    attack that has not converged, or label leaking: not masking; ``gl.diagnostics.KINDS``), grey when skipped."""
    models = list(reports)
    if not models:
        raise GmregError("no checklists to show")
    by_model = {}
    for m in models:
        r = reports[m]
        r = r.to_dict() if hasattr(r, "to_dict") else r
        if not isinstance(r, Mapping) or "checks" not in r:
            raise GmregError(f"checklist of {m!r} is not a masking report (gl.diagnostics.masking_report)")
        by_model[m] = {c["name"]: c for c in r["checks"]}
    checks: list = []
    for by in by_model.values():
        checks += [c for c in by if c not in checks]
    mark = {True: "✔ ", False: "✘ ", None: "– "}
    fill = {True: "#d3f9d8", False: "#ffe3e3", None: "#f1f3f5"}

    def kind(c: Mapping) -> str:   # what a failure means (gl.diagnostics.kind_of; old reports: by the name)
        return c.get("kind") or CHECK_KIND_OF.get(c.get("name"), "masking")

    def cell(c: Mapping) -> str:
        note = f" [{CHECK_KIND_LABEL[kind(c)]}]" if c["passed"] is False and kind(c) != "masking" else ""
        return mark[c["passed"]] + c["detail"] + note

    def colour(c: Mapping) -> str:   # red only for a sign of masking; amber for convergence / label leaking
        return fill[c["passed"]] if c["passed"] is not False or kind(c) == "masking" else "#fff3bf"

    def row_name(c: str) -> str:
        k = kind(next(by_model[m][c] for m in models if c in by_model[m]))
        return c.replace("_", " ").replace("dont", "don't") + ("" if k == "masking" else f" ({k})")

    cells, fills = [[row_name(c) for c in checks]], [["white"] * len(checks)]
    for m in models:
        by = by_model[m]
        cells.append([cell(by[c]) if c in by else "" for c in checks])
        fills.append([colour(by[c]) if c in by else "white" for c in checks])
    widths = [1.6] + [2.2] * len(models)
    fig = go.Figure(go.Table(header=dict(values=["check", *models], fill_color="#e9ecef", align="left"),
                             cells=dict(values=cells, fill_color=fills, align="left", height=28),
                             columnwidth=widths))
    return _layout(fig, title or "gradient-masking checklist", height=_table_height(cells, widths))


def _table_height(columns: list, widths: list, *, width_px: int = 1000, char_px: float = 7.0,
                  line_px: int = 18, pad_px: int = 12) -> int:
    """Pixels a go.Table needs to show every row with its wrapped text (plotly does not grow a table to fit, it
    scrolls inside it and hides the rows below): the longest cell of each row, wrapped at its column's width."""
    total = sum(widths)
    rows = len(columns[0]) if columns else 0
    height = 130                                   # title, header, margins
    for i in range(rows):
        lines = 1
        for col, w in zip(columns, widths):
            chars = max(8, int(width_px * w / total / char_px))
            lines = max(lines, -(-len(str(col[i])) // chars))
        height += max(28, lines * line_px + pad_px)
    return height


# what a failed check means (mirrors gl.diagnostics.KIND_OF / KINDS: plots take data, they import no compute)
CHECK_KIND_OF = {"no_label_leaking": "leaking", "more_steps_and_restarts_dont_help": "convergence"}
CHECK_KIND_LABEL = {"convergence": "not converged, not masking", "leaking": "label leaking, not masking"}


# --- the loss landscape ----------------------------------------------------------------------------------------------
LANDSCAPE_MARKS = {"x": ("x", "circle", "#212529"), "fgsm": ("x_fgsm", "diamond", COLORS["fgsm"]),
                   "noise": ("x' = x + α·sign(N(0, I)) (projected)", "cross", "#868e96"),
                   "rfgsm": ("x_rfgsm (projected)", "square", COLORS["rfgsm"]),
                   "pgd": ("PGD-40", "star", COLORS["pgd"])}
# One colour scale for every landscape figure (log10 of the loss, clipped to this range), so that two panels, or two
# redraws of the explorer, are read on the same scale and a contrast is never an artefact of rescaling.
LANDSCAPE_LOSS_RANGE = (1e-4, 1e2)


def _log_loss(data: Mapping, zrange) -> np.ndarray:
    lo, hi = zrange
    return np.log10(np.clip(np.asarray(data["loss"], dtype=float), lo, hi))


def _landscape_traces(data: Mapping, zrange, *, legend: bool = True, coloraxis: Optional[str] = None) -> list:
    """Heat map (log10 loss), the decision boundary (margin 0 contour), one marker trace per point."""
    lo, hi = zrange
    ticks = list(range(int(np.ceil(np.log10(lo))), int(np.floor(np.log10(hi))) + 1))
    a, b = np.asarray(data["a"], dtype=float), np.asarray(data["b"], dtype=float)   # arrays: a fast widget update
    heat = dict(x=a, y=b, z=_log_loss(data, zrange), customdata=np.asarray(data["loss"], dtype=float),
                zmin=np.log10(lo), zmax=np.log10(hi), colorscale="Viridis", name="loss",
                hovertemplate="a %{x:.3f}, b %{y:.3f}: loss %{customdata:.3g}<extra></extra>")
    if coloraxis:
        heat = {k: v for k, v in heat.items() if k not in ("zmin", "zmax", "colorscale")}
        heat["coloraxis"] = coloraxis
    else:
        heat["colorbar"] = dict(title="loss", x=0.55, tickvals=ticks, ticktext=[f"{10.0 ** t:g}" for t in ticks])
    traces = [go.Heatmap(**heat),
              go.Contour(x=a, y=b, z=np.asarray(data["margin"], dtype=float), showscale=False, hoverinfo="skip",
                         autocontour=False, contours=dict(start=0, end=0, size=1, coloring="none"),
                         line=dict(color="white", width=2, dash="dash"), name="decision boundary (prediction changes)",
                         showlegend=legend)]
    for key, (name, symbol, color) in LANDSCAPE_MARKS.items():
        pa, pb = data["points"][key]
        traces.append(go.Scatter(x=[pa], y=[pb], mode="markers", name=name, showlegend=legend, marker=dict(
            symbol=symbol, size=13, color=color, line=dict(color="white", width=1.5))))
    return traces


def landscape_headline(data: Mapping) -> str:
    """The number a learner reads: the loss at distance ε along each axis (and PGD's)."""
    at = data["loss_at"]
    return (f"at distance ε = {data['eps']:.3g}: FGSM's direction reaches loss {at['fgsm']:.3g}, the adversarial "
            f"direction {at['adversarial']:.3g} (PGD-40: {at['pgd']:.3g})")


def _landscape_axes(fig, row: int, col: int) -> None:
    fig.update_xaxes(title_text="a: along FGSM's step sign(∇ₓJ)", row=row, col=col)
    fig.update_yaxes(title_text="b: along PGD's direction ⟂ the gradient axis", row=row, col=col)


def landscape_figure(data: Mapping, *, title: str = "", zrange=LANDSCAPE_LOSS_RANGE) -> go.Figure:
    """A :func:`gmreg_lab.landscape.loss_landscape` result: the loss over the slice (gradient axis x adversarial
    axis) as a heat map on the log colour scale ``zrange`` shared by every landscape figure, the decision boundary
    (dashed white: where the model's prediction changes), the points at their slice coordinates (left), and the
    FGSM and R-FGSM logit vectors as bars with their L2 distance (right). Traces in order: heat map, boundary
    contour, one marker trace per point, two bar traces (the explorer updates them in place)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=("loss over the slice of the ε-ball (log colour scale)",
                                        f"logits: FGSM vs R-FGSM (L2 distance {data['logit_distance']:.2f})"))
    for t in _landscape_traces(data, zrange):
        fig.add_trace(t, row=1, col=1)
    classes = [str(i) for i in range(len(data["logits"]["fgsm"]))]
    fig.add_trace(go.Bar(x=classes, y=data["logits"]["fgsm"], name="FGSM logits", marker_color=COLORS["fgsm"]),
                  row=1, col=2)
    fig.add_trace(go.Bar(x=classes, y=data["logits"]["rfgsm"], name="R-FGSM logits",
                         marker_color=COLORS["rfgsm"]), row=1, col=2)
    _landscape_axes(fig, 1, 1)
    fig.update_xaxes(title_text="class", row=1, col=2)
    fig.update_layout(barmode="group")
    return _layout(fig, title or f"loss landscape (α = {data['alpha']:.3g}): {landscape_headline(data)}", height=480)


def landscape_comparison(panels: Mapping[str, Mapping], *, title: str = "",
                         zrange=LANDSCAPE_LOSS_RANGE) -> go.Figure:
    """Several :func:`gmreg_lab.landscape.loss_landscape` results side by side (``{panel title: data}``) on ONE
    colour scale (log10 of the loss over ``zrange``), each with its decision boundary, its points and its headline
    (the loss at distance ε along each axis) under the panel."""
    if not panels:
        raise GmregError("no landscapes to compare")
    names = list(panels)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.08)
    for i, name in enumerate(names):
        for t in _landscape_traces(panels[name], zrange, legend=i == 0, coloraxis="coloraxis"):
            fig.add_trace(t, row=1, col=i + 1)
        _landscape_axes(fig, 1, i + 1)
        at = panels[name]["loss_at"]
        fig.add_annotation(text=f"FGSM {at['fgsm']:.3g} · adversarial axis {at['adversarial']:.3g} · PGD "
                                f"{at['pgd']:.3g}", showarrow=False, xref=f"x{i + 1 if i else ''} domain",
                           yref=f"y{i + 1 if i else ''} domain", x=0.5, y=-0.32)
    lo, hi = zrange
    ticks = list(range(int(np.ceil(np.log10(lo))), int(np.floor(np.log10(hi))) + 1))
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=np.log10(lo), cmax=np.log10(hi), colorbar=dict(
        title="loss", tickvals=ticks, ticktext=[f"{10.0 ** t:g}" for t in ticks])))
    eps = next(iter(panels.values()))["eps"]
    _layout(fig, title or f"loss at distance ε = {eps:.3g} along FGSM's direction vs the adversarial one (one colour "
            f"scale)", height=520)
    return fig.update_layout(margin=dict(l=60, r=20, t=60, b=150), legend=dict(y=-0.38))

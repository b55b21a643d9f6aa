"""Figures of a reproduction (paper Fig. 1-4 and Table 3 as bars), written as one self-contained HTML file.

Built from :mod:`gmreg_lab.plots`; imported only when plotly is installed.
"""

from __future__ import annotations

from pathlib import Path

from . import plots
from .runs import atomic_write_text


def build_figures(summary: dict, histories: dict) -> dict:
    """name -> plotly Figure for everything the reproduction measured."""
    figs = {}
    names = {"fgsm": "FGSM-AT", "pgd": "PGD-AT", "proposed": "Proposed"}
    hist = {names.get(k, k): v for k, v in histories.items()}
    if hist:
        figs["fig1_2_logit_distance"] = plots.compare_runs(
            hist, "logit_dist", log_y=True, yaxis="mean L2 distance",
            title="Fig. 1/2 (top): FGSM / R-FGSM logit distance over training (validation probe)")
        figs["fig1_2_diagnostic"] = plots.masking_diagnostic(
            hist, title="Logit distance and the PGD - FGSM loss gap over training")
    sweeps = summary.get("figures", {}).get("sweeps", {})
    early = summary.get("figures", {}).get("early_iter")
    eps = next(iter(summary["runs"].values()))["config"]["eps"] if summary.get("runs") else None
    for name in ("fgsm", "pgd", "proposed"):
        pair = {f"{names[name]}, iteration {early}": sweeps.get(f"{name}@iter:{early}"),
                f"{names[name]}, end of training": sweeps.get(f"{name}@last")}
        pair = {k: v for k, v in pair.items() if v}
        if pair:
            figs[f"fig1_2_loss_vs_eps_{name}"] = plots.sweep_grid(
                pair, "loss", train_eps=eps, title=f"Fig. 1/2 (bottom): mean loss vs eps, {names[name]}")
    late = sweeps.get("proposed@last")
    if late:
        pgd_label = next(k for k in late if k.startswith("pgd"))
        figs["fig3_accuracy_vs_eps"] = plots.sweep_figure(
            late, "acc", train_eps=eps, attacks=[pgd_label], title="Fig. 3: proposed model, PGD accuracy vs eps")
        figs["fig4_loss_vs_eps"] = plots.sweep_figure(
            late, "loss", train_eps=eps, attacks=[pgd_label, "fgsm"],
            title="Fig. 4: proposed model, mean loss vs eps (PGD and FGSM)")
    if summary.get("table3"):
        figs["table3_bars"] = plots.table_bars(summary["table3"], "acc", title="Table 3: white-box accuracy (%)")
    return figs


def write_figures(summary: dict, histories: dict, out) -> Path:
    figs = build_figures(summary, histories)
    parts = [f"<h1>{summary['dataset'].upper()} reproduction, scale {summary['scale']}</h1>",
             "<p>Made by <code>gmreg-lab reproduce</code>; numbers in TABLES.md and summary.json.</p>"]
    for i, (name, fig) in enumerate(figs.items()):
        parts.append(f'<h2 id="{name}">{name}</h2>')
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))  # plotly.js inline once: offline
    html = "<!doctype html><html><head><meta charset='utf-8'><title>gmreg-lab reproduction</title></head><body>" \
           + "\n".join(parts) + "</body></html>"
    path = Path(out) / "figures.html"
    atomic_write_text(path, html)
    return path

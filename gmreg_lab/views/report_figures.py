"""Figures of a reproduction (paper Fig. 1-4 and Table 3 as bars), written as one self-contained HTML file.

Built from :mod:`gmreg_lab.views.plots`; imported only when plotly is installed.
"""

from __future__ import annotations

from pathlib import Path

from . import plots
from ..runs import atomic_write_text


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
    return write_html(build_figures(summary, histories),
                       f"{summary['dataset'].upper()} reproduction, scale {summary['scale']}",
                       "Made by <code>gmreg-lab reproduce</code>; numbers in TABLES.md and summary.json.",
                       Path(out) / "figures.html")


def write_html(figs: dict, title: str, note: str, path: Path) -> Path:
    """One self-contained HTML page: plotly.js inline once (offline), then every figure."""
    parts = [f"<h1>{title}</h1>", f"<p>{note}</p>"]
    for i, (name, fig) in enumerate(figs.items()):
        parts.append(f'<h2 id="{name}">{name}</h2>')
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            + "\n".join(parts) + "</body></html>")
    atomic_write_text(path, html)
    return path


def cost_title(bench: dict, methods) -> str:
    """The suite's cost figure's title: the device and the precision the steps were timed in, and that GradAlign's
    step is timed in fp32 whatever the others ran in (its step always computes in fp32)."""
    from ..runners.report_tables import SUITE_NAMES
    from ..training import FP32_STEPS

    prec = bench.get("precision")
    fp32 = [SUITE_NAMES.get(m, m) for m in methods if m in FP32_STEPS] if prec and prec != "fp32" else []
    note = "".join(f"; {n}'s step in fp32" for n in fp32)
    return f"cost per epoch, measured side by side ({bench['device']}{', ' + prec if prec else ''}{note})"


def build_suite_figures(summary: dict, histories: dict) -> dict:
    """The peers suite: robustness vs eps per method (PGD-40 and the worst case), the logit distance vs eps, the
    PGD probe and the logit distance over training at the largest eps trained, and the cost bars. A run that did not
    learn is left out of the three eps figures (a gap, named in the legend)."""
    from ..runners.report_tables import SUITE_NAMES, result_did_not_learn

    eps_list = summary["scale_settings"]["eps_list"]
    res = summary.get("results", {})
    curves: dict = {}
    for m in summary["methods"]:
        rows = [res.get(f"{m}_eps{e:g}") for e in eps_list]
        if not any(rows):
            continue
        # a run that did not learn is not drawn: its accuracies are its predicted class's share, not robustness,
        # and its distance is a constant predictor's; the legend says where
        dead = [e for e, r in zip(eps_list, rows) if r and result_did_not_learn(r)]
        rows = [None if r and result_did_not_learn(r) else r for r in rows]
        name = SUITE_NAMES.get(m, m) + (f" (did not learn at eps {', '.join(f'{e:g}' for e in dead)}: not drawn)"
                                        if dead else "")
        pgd = [next((v for k, v in r["acc"].items() if k.startswith("pgd")), None) if r else None for r in rows]
        curves[name] = {"eps": list(eps_list),
                                        "worst": {"acc": [r["worst"]["robust"] if r else None for r in rows]},
                                        "pgd-40": {"acc": pgd},
                                        "logit": {"loss": [r["logit_dist"] if r else None for r in rows]}}
    figs = {"worst_vs_eps": plots.sweep_models(curves, "worst", "acc",
                                               title="worst case (PGD-40, APGD-CE, APGD-T) vs training eps"),
            "pgd_vs_eps": plots.sweep_models(curves, "pgd-40", "acc", title="PGD-40 accuracy vs training eps"),
            "logit_vs_eps": plots.sweep_models(curves, "logit", "loss",
                                               title="final FGSM / R-FGSM logit distance vs training eps")}
    figs["logit_vs_eps"].update_yaxes(title_text="mean L2 distance", type="log")
    top = max(eps_list)
    at_top = {SUITE_NAMES.get(m, m): histories[f"{m}_eps{top:g}"] for m in summary["methods"]
              if f"{m}_eps{top:g}" in histories}
    if at_top:
        figs["training_pgd_probe"] = plots.compare_runs(at_top, "acc_pgd", yaxis="PGD probe accuracy (%)",
                                                        title=f"PGD probe during training, eps = {top:g}")
        figs["training_logit_distance"] = plots.compare_runs(
            at_top, "logit_dist", log_y=True, yaxis="mean L2 distance",
            title=f"FGSM / R-FGSM logit distance during training, eps = {top:g}")
    bench = summary.get("bench")
    if bench:
        spe = bench["seconds_per_epoch"]
        cost = {}
        for m in summary["methods"]:
            keys = [k for k in spe if k.split("+")[0] == m]
            if keys:
                cost[SUITE_NAMES.get(m, m)] = spe[max(keys, key=len)]
        figs["cost"] = plots.value_bars(cost, yaxis="seconds per epoch", title=cost_title(bench, summary["methods"]))
    return figs


def write_suite_figures(summary: dict, histories: dict, out) -> Path:
    return write_html(build_suite_figures(summary, histories), "Single-step methods side by side",
                       "Made by <code>gmreg-lab reproduce --suite peers</code>; numbers in SUITE.md and suite.json.",
                       Path(out) / "suite.html")


def write_audit_html(result: dict, title: str, path) -> Path:
    """One self-contained page: the verdict, the white-box bars and the checklist table."""
    figs = {"white_box": plots.table_bars({title: {k: {"acc": v} for k, v in result["table"].items()}},
                                          title=f"white-box accuracy at eps = {result['eps']:.4g}"),
            "checklist": plots.checklist_figure({title: result["checklist"]}, title="gradient-masking checklist")}
    verdict = "<br>".join(result["verdict"].splitlines())
    return write_html(figs, f"Gradient-masking audit: {title}", verdict, Path(path))

"""Re-render results/mnist-peers-quick (SUITE.md, suite.json's anchors and flags, suite.html) with the current
report code, without retraining (issue 28, "Reporting").

The suite's run directories are not committed, so the two training-history figures of suite.html (the PGD probe and
the logit distance during training at the largest eps) are carried over from the committed suite.html itself: their
traces are read back from the page's plotly data and drawn again by the current code. Every number comes from the
committed files; nothing is measured again.

    python experiments/rerender_quick_suite.py [--out results/mnist-peers-quick]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from gmreg_lab.runners import suite as suite_mod
from gmreg_lab.runners.report_tables import SUITE_NAMES
from gmreg_lab.views.report_figures import write_suite_figures

TRAINING_FIGURES = {"PGD probe during training": "acc_pgd",
                    "FGSM / R-FGSM logit distance during training": "logit_dist"}


def histories_from_html(page: str, methods, top_eps: float) -> dict:
    """Run name -> log rows rebuilt from the training-history figures of a suite.html (plotly's embedded data)."""
    dec = json.JSONDecoder()
    by_name = {SUITE_NAMES.get(m, m): m for m in methods}
    rows: dict = {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = dec.raw_decode(page, m.end())
        rest = page[end:].lstrip().lstrip(",").lstrip()
        layout, _ = dec.raw_decode(page, len(page) - len(rest))
        title = (layout.get("title") or {}).get("text") or ""
        key = next((k for t, k in TRAINING_FIGURES.items() if title.startswith(t)), None)
        if key is None:
            continue
        for trace in data:
            method = by_name.get(trace.get("name"))
            if method is None:
                raise SystemExit(f"rerender: unknown series {trace.get('name')!r} in {title!r}")
            run = f"{method}_eps{top_eps:g}"
            hist = rows.setdefault(run, {})
            for it, v in zip(trace["x"], trace["y"]):
                hist.setdefault(it, {"event": "log", "iteration": it})[key] = v
    return {run: [h[i] for i in sorted(h)] for run, h in rows.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/mnist-peers-quick")
    a = ap.parse_args(argv)
    out = Path(a.out)
    summary = json.loads((out / "suite.json").read_text())
    page = (out / "suite.html").read_text() if (out / "suite.html").exists() else ""
    hist = histories_from_html(page, summary["methods"], max(summary["scale_settings"]["eps_list"]))
    suite_mod.rerender(out, hist, write_suite_figures,
                       note="python experiments/rerender_quick_suite.py: report re-rendered with the current code "
                            "(runs that did not learn flagged, published anchors' sources, GradAlign's fp32 cost "
                            "row); training-history figures carried over from the previous suite.html")
    print(f"re-rendered {out}/SUITE.md, suite.json, suite.html ({len(hist)} training histories carried over)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

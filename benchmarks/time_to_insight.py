"""Time to insight (issue 5, issue 26 goal 3). Two measurements, on whatever machine runs it:

1. **From a fresh kernel, first run** (nothing cached: ``GMREG_RUNS_DIR`` is an empty temporary folder, full size,
   no smoke): the seconds until a notebook cell has shown what it is for, the kernel's start included. Each
   notebook runs (nbclient, as papermill does) from its first cell up to that cell:
   * notebook 01's first look: one adversarial example fooling a freshly trained LeNet+ (``recipe("first_look")``);
   * notebook 02's live figure, which draws the recorded FGSM-AT run (``gl.lab.recorded("fgsm")``) at once.
2. **The live collapse** in notebook 02: seconds from pressing Train (FGSM adversarial training, the notebook's own
   recipe, full size) until the live plot shows the collapse: on ``--confirm`` consecutive rows the PGD probe is
   under 5 % while the FGSM probe is more than 50 points above it (a fresh model is also weak against PGD; the
   masking signature is FGSM accuracy rising while PGD accuracy stays at zero). Training stops there. Wall clock,
   including data loading and model set-up.

    python benchmarks/time_to_insight.py [--device cpu] [--confirm 3] [--no-cells] [--no-live]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import gmreg_lab as gl

ROOT = Path(__file__).resolve().parent.parent
# (notebook, text of the cell that shows the insight)
CELLS = {"01 first look": ("01_adversarial_examples", 'gl.lab.recipe("first_look"'),
         "02 recorded collapse": ("02_gradient_masking", 'gl.lab.recorded("fgsm")')}


def seconds_to_cell(notebook: str, marker: str, runs_dir: str) -> dict:
    """Wall seconds to run ``notebook`` from a fresh kernel up to the first code cell containing ``marker``."""
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    end = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and marker in c.source)
    nb.cells = nb.cells[:end + 1]
    env = {k: v for k, v in os.environ.items() if k != "GMREG_SMOKE"}
    env["GMREG_RUNS_DIR"] = runs_dir
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)                     # the kernel inherits this environment
    try:
        t0 = time.perf_counter()
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=900,
                                resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        seconds = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(old)
    shown = [o for o in nb.cells[end].outputs if o.get("output_type") in ("display_data", "execute_result")]
    text = "".join(o.get("text", "") for o in nb.cells[end].outputs if o.get("output_type") == "stream")
    return {"seconds": seconds, "cells_run": sum(c.cell_type == "code" for c in nb.cells), "figure_shown": bool(shown),
            "printed": text.strip()[-400:]}


def live_collapse(device: str, confirm: int) -> dict:
    rows, t0 = [], time.perf_counter()

    def callback(row):
        if row["event"] != "log":
            return False
        rows.append({"seconds": time.perf_counter() - t0, "iteration": row["iteration"], "acc_pgd": row["acc_pgd"],
                     "acc_fgsm": row["acc_fgsm"], "acc_clean": row["acc_clean"]})
        return len(rows) >= confirm and all(r["acc_pgd"] < 5 and r["acc_fgsm"] - r["acc_pgd"] > 50
                                            for r in rows[-confirm:])

    cfg = gl.lab.recipe("fgsm")
    res = gl.train(cfg, device=device, callback=callback, progress=False)
    seen = rows[-1] if res.stopped else None   # the row at which the learner can see it
    return {"config": cfg.to_dict(), "rows": rows, "collapse_visible_at_s": seen and seen["seconds"],
            "collapse_iteration": seen and seen["iteration"]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--confirm", type=int, default=3)
    ap.add_argument("--budget", type=float, default=15.0, help="the target, seconds")
    ap.add_argument("--no-cells", action="store_true", help="skip the fresh-kernel measurements")
    ap.add_argument("--no-live", action="store_true", help="skip the live collapse")
    a = ap.parse_args()
    out = {"machine": gl.runtime.cpu_description(), "budget_s": a.budget,
           "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not a.no_cells:
        with tempfile.TemporaryDirectory() as runs:
            out["fresh_kernel"] = {name: seconds_to_cell(nb, marker, runs) for name, (nb, marker) in CELLS.items()}
        for r in out["fresh_kernel"].values():
            r["met"] = r["seconds"] <= a.budget and r["figure_shown"]
    if not a.no_live:
        out["live"] = live_collapse(a.device, a.confirm)
        out["live"]["met"] = bool(out["live"]["collapse_visible_at_s"]
                                  and out["live"]["collapse_visible_at_s"] <= a.budget)
    print(json.dumps(out, indent=1))

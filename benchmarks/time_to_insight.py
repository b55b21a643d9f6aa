"""Time to insight (issue 5): seconds from pressing Train in notebook 02 (FGSM adversarial training, the notebook's
own recipe, full size) until the live plot shows the collapse: on `--confirm` consecutive rows the PGD probe is under
5 % while the FGSM probe is more than 50 points above it (a fresh model is also weak against PGD; the masking
signature is FGSM accuracy rising while PGD accuracy stays at zero). Training stops there. Wall clock, including
data loading and model set-up, on whatever machine runs it.

    python benchmarks/time_to_insight.py [--device cpu] [--confirm 3]
"""
import argparse
import json
import time

import gmreg_lab as gl

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cpu")
ap.add_argument("--confirm", type=int, default=3)
ap.add_argument("--budget", type=float, default=60.0, help="the target, seconds")
a = ap.parse_args()

rows, t0 = [], time.perf_counter()


def callback(row):
    if row["event"] != "log":
        return False
    rows.append({"seconds": time.perf_counter() - t0, "iteration": row["iteration"], "acc_pgd": row["acc_pgd"],
                 "acc_fgsm": row["acc_fgsm"], "acc_clean": row["acc_clean"]})
    return len(rows) >= a.confirm and all(r["acc_pgd"] < 5 and r["acc_fgsm"] - r["acc_pgd"] > 50
                                          for r in rows[-a.confirm:])


cfg = gl.lab.recipe("fgsm")
res = gl.train(cfg, device=a.device, callback=callback, progress=False)
seen = rows[-1] if res.stopped else None   # the row at which the learner can see it
print(json.dumps({"config": cfg.to_dict(), "rows": rows, "collapse_visible_at_s": seen and seen["seconds"],
                  "collapse_iteration": seen and seen["iteration"], "budget_s": a.budget,
                  "met": bool(seen and seen["seconds"] <= a.budget)}, indent=1))

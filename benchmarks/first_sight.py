"""Issue 26, goal 3: how soon can notebook 02 show FGSM-AT's collapse? Trains FGSM-AT (full size, eps 0.3) under
several recipes one after the other, in the order given, and stops each at the row where the collapse is visible:
on ``--confirm`` consecutive probe rows the PGD probe is under 5 % while the FGSM probe is more than 50 points above
it (the criterion of benchmarks/time_to_insight.py). Wall clock from the start of ``gl.train`` (data loading and
model set-up included). Prints one JSON line per recipe and a summary table.

    python benchmarks/first_sight.py [--recipes fgsm,first_sight] [--rounds 1] [--device cpu]

Recipes are names of ``gl.lab.RECIPES``, or ``NAME+key=value+...`` overrides of one (e.g.
``fgsm+probe_size=100+probe_pgd_steps=5``). Run it while nothing else heavy runs.
"""
import argparse
import ast
import json
import statistics
import time

import gmreg_lab as gl

ap = argparse.ArgumentParser()
ap.add_argument("--recipes", default="fgsm,first_sight")
ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each recipe once per round)")
ap.add_argument("--confirm", type=int, default=3)
ap.add_argument("--device", default="cpu")
ap.add_argument("--max-seconds", type=float, default=180.0, help="give up on a recipe after this long")
a = ap.parse_args()


def config(spec: str):
    name, *changes = spec.split("+")
    kw = {k: ast.literal_eval(v) for k, v in (c.split("=") for c in changes)}
    return gl.lab.recipe(name, **kw)


def one(spec: str) -> dict:
    rows, t0 = [], time.perf_counter()

    def callback(row):
        if row["event"] != "log":
            return False
        rows.append({"seconds": round(time.perf_counter() - t0, 2), "iteration": row["iteration"],
                     "acc_pgd": row["acc_pgd"], "acc_fgsm": row["acc_fgsm"]})
        seen = len(rows) >= a.confirm and all(r["acc_pgd"] < 5 and r["acc_fgsm"] - r["acc_pgd"] > 50
                                              for r in rows[-a.confirm:])
        return seen or time.perf_counter() - t0 > a.max_seconds

    res = gl.train(config(spec), device=a.device, callback=callback, progress=False)
    last = rows[-1] if rows else {}
    seen = bool(res.stopped and last and last["acc_pgd"] < 5)
    return {"recipe": spec, "seen": seen, "seconds": last.get("seconds") if seen else None,
            "iteration": last.get("iteration") if seen else None, "rows": rows}


out = {spec: [] for spec in a.recipes.split(",")}
for _ in range(a.rounds):
    for spec in out:
        res = one(spec)
        out[spec].append(res)
        print(json.dumps(res))
print(gl.lab.machine())
print(f"{'recipe':<60} {'visible at (s)':>16} {'iteration':>10}")
for spec, runs in out.items():
    secs = [r["seconds"] for r in runs if r["seen"]]
    its = [r["iteration"] for r in runs if r["seen"]]
    print(f"{spec:<60} {(str(round(statistics.median(secs), 1)) if secs else 'not seen'):>16} "
          f"{(str(int(statistics.median(its))) if its else '-'):>10}  ({len(secs)}/{len(runs)} rounds)")

"""Issue 26: does notebook 04's panel answer a slider change within a minute? Clicks Train on the real panel
(gl.widgets.training_panel, in this process, torch's default threads) for FGSM-AT, lambda = 0 and lambda = 5 at
eps = 0.3, and records for each click the wall time until the panel's verdict (gl.diagnostics.live_verdict) and
until the run ended, beside the verdict itself, every probe row and the kit's own up-front estimate
(gl.lab.estimate_seconds). Side by side: the panel's new budget (gl.lab.recipe("panel")) and the recipe the panel
used before (gl.lab.recipe("proposed"): one full epoch at lr 0.01).

    python benchmarks/live_panel.py [--seeds 0,1] [--old-seeds 0] [--out benchmarks/results/cpu/live_panel.json]

Run it with nothing else heavy running. Writes the JSON (with the machine, command and code version) and prints a
table.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

import gmreg_lab as gl
from gmreg_lab.views.lab import machine
from gmreg_lab.runs import provenance

ap = argparse.ArgumentParser()
ap.add_argument("--seeds", default="0,1")
ap.add_argument("--old-seeds", default="0", help="seeds of the old recipe (one full epoch each; '' for none)")
ap.add_argument("--settings", default="fgsm,lam0,lam5")
ap.add_argument("--out", default="benchmarks/results/cpu/live_panel.json")
a = ap.parse_args()

SETTINGS = {"fgsm": dict(method="fgsm", lam=5.0), "lam0": dict(method="proposed", lam=0.0),
            "lam5": dict(method="proposed", lam=5.0)}


def cpu_times() -> list:
    """/proc/stat's aggregate CPU line (user, nice, system, idle, iowait, irq, softirq, steal), or [] off Linux."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return []


def steal_share(before: list, after: list) -> float:
    """Share (%) of CPU time the hypervisor gave to others during a click (a VM's noisy neighbours): a click
    measured under steal is slower than this machine is."""
    if not before or not after:
        return float("nan")
    d = [b - a for a, b in zip(before, after)]
    return 100.0 * d[7] / max(1, sum(d))


def click(recipe: str, seed: int, setting: str) -> dict:
    base = gl.lab.recipe(recipe, seed=seed)
    panel = gl.widgets.training_panel(base, min_interval=0.5)
    cfg = panel.base.replace(**SETTINGS[setting], eps=0.3)
    estimate = gl.lab.estimate_seconds(cfg)
    seen = {}
    t0, cpu0 = time.perf_counter(), cpu_times()
    original = panel._on_row

    def on_row(run_id, c, row):              # the wall time at which the panel's verdict first became final
        out = original(run_id, c, row)
        v = panel.memory[gl.widgets.run_label(c)]["verdict"]
        if row.get("event") == "log" and v["verdict"] == "masking" and "masking" not in seen:
            seen["masking"] = time.perf_counter() - t0
        return out

    panel._on_row = on_row
    res = panel.train_blocking(timeout=3600, **SETTINGS[setting], eps=0.3)
    total = time.perf_counter() - t0
    steal = steal_share(cpu0, cpu_times())
    s = panel.summary()[-1]
    return {"recipe": recipe, "seed": seed, "setting": setting, "verdict": s["verdict"], "text": s["verdict_text"],
            "verdict_s": seen.get("masking", total), "click_s": total, "estimate_s": estimate,
            "iterations": s["iterations"], "stopped": s["stopped"], "steal_pct": steal,
            "rows": [{k: r.get(k) for k in ("iteration", "acc_clean", "acc_fgsm", "acc_pgd", "logit_dist")}
                     for r in gl.lab.log_rows(res.history)]}


results = []
plan = [("panel", int(s), k) for s in a.seeds.split(",") for k in a.settings.split(",")]
plan += [("proposed", int(s), k) for s in a.old_seeds.split(",") if s for k in ("fgsm", "lam5")]
for recipe, seed, setting in plan:
    r = click(recipe, seed, setting)
    results.append(r)
    print(f"{recipe:9s} seed {seed} {setting:5s}: verdict {r['verdict']!r} after {r['verdict_s']:.1f} s "
          f"(click {r['click_s']:.1f} s, {r['iterations']} it, estimate {r['estimate_s']:.0f} s, steal "
          f"{r['steal_pct']:.0f} %) - {r['text']}",
          flush=True)

Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps({"machine": machine(), "threads": torch.get_num_threads(),
                                   "command": " ".join([sys.executable, *sys.argv]), "provenance": provenance(),
                                   "results": results}, indent=1))
print(machine())
print("| recipe | seed | setting | verdict | verdict at (s) | click (s) | iterations | estimate (s) | CPU steal |")
print("|---|---|---|---|---|---|---|---|---|")
for r in results:
    print(f"| {r['recipe']} | {r['seed']} | {r['setting']} | {r['verdict']} | {r['verdict_s']:.1f} | "
          f"{r['click_s']:.1f} | {r['iterations']} | {r['estimate_s']:.0f} | {r['steal_pct']:.0f} % |")

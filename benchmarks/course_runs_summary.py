"""Summarise bf16 runs of a course build from their run folders (their probe rows), as notebook 07's timing cell does:
the collapse verdict at PEAK = 15 % and the final probes. Used for the "before" build of BENCHMARKS.md's "Runs
trained up front" (07's runs in bf16).

    python benchmarks/course_runs_summary.py OUT.json RUN_FOLDER [RUN_FOLDER ...]
"""
import json
import sys
from pathlib import Path

import gmreg_lab as gl
from gmreg_lab.runs import load_checkpoint
out = {"command": "python " + " ".join(sys.argv), "machine": gl.runtime.cpu_description(), "runs": {}}
for d in sys.argv[2:]:
    d = Path(d)
    cfg = load_checkpoint(d)["config"]
    if cfg["precision"] != "bf16":
        continue
    rows = gl.lab.log_rows(load_checkpoint(d)["history"])
    c = gl.diagnostics.collapse(rows, high=15.0)
    out["runs"][d.name] = {"method": cfg["method"], "eps": cfg["eps"], "precision": cfg["precision"],
                           "collapse (PEAK 15)": c,
                           "final probes": {k: rows[-1][k] for k in ("acc_clean", "acc_fgsm", "acc_pgd", "logit_dist")}}
Path(sys.argv[1]).write_text(json.dumps(out, indent=2) + "\n")

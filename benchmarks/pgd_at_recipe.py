"""PGD-AT recipes for the notebooks (issue 26): the paper's PGD-40 at step 0.01 against PGD-10 at step 0.075
(2.5 eps / 10), each for the notebooks' 1000 iterations of 32 images, seed 0, one thread, the probes every 100
iterations; the model scored on the first 500 test images with clean, FGSM and the kit's PGD-40 at eps 0.3.

    python benchmarks/pgd_at_recipe.py 40 0.01
    python benchmarks/pgd_at_recipe.py 10 0.075

Writes benchmarks/results/cpu/pgd_at_recipe_<steps>_<step>.json (probe rows, test accuracies, seconds, machine).
"""

import json
import sys
import time
from pathlib import Path

import torch

import gmreg_lab as gl

torch.set_num_threads(1)
steps, size = int(sys.argv[1]), float(sys.argv[2])
cfg = gl.lab.recipe("pgd", pgd_steps=steps, pgd_step_size=size, log_every=100, select_best=False)
t = time.perf_counter()
res = gl.train(cfg, progress=False)
took = time.perf_counter() - t
x, y = gl.data.load("mnist", "test").tensors(500)
ev = gl.evaluate.evaluate(res.model, x, y, "clean,fgsm,pgd:40", 0.3)
rows = [(r["iteration"], r["acc_clean"], r["acc_fgsm"], r["acc_pgd"]) for r in gl.lab.log_rows(res.history)]
out = {"steps": steps, "size": size, "seconds": took, "train_seconds": res.metrics["train_seconds"], "rows": rows,
       "eval": {k: v["acc"] for k, v in ev.items()}, "cpu": gl.runtime.cpu_description(),
       "command": "python " + " ".join(sys.argv)}
print(json.dumps(out))
path = Path(__file__).parent / "results" / "cpu" / f"pgd_at_recipe_{steps}_{size}.json"
path.write_text(json.dumps(out, indent=1) + "\n")

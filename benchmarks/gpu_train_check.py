"""GPU check (device run): one real MNIST epoch of the proposed method at the paper's settings (batch 32), eager and
with CUDA graphs, with CUDA graphs of the compiled model (same seed) and eager with another seed (the noise
level); PGD-40 / APGD accuracy of each model, and the 10k-image PGD-100 evaluation time (fp32, bf16, per-example
early stop).

    python3 benchmarks/gpu_train_check.py [--device cuda] [--limit N] [--epochs 1]   -> JSON on stdout
"""
import argparse
import json
import time

import torch

import gmreg_lab as gl
from gmreg_lab.runners.bench import bench_eval
from gmreg_lab.evaluate import evaluate

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
ap.add_argument("--limit", type=int, default=None, help="training images (None: all 50k)")
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--eval", type=int, default=1000, help="test images attacked")
ap.add_argument("--eval-10k", type=int, default=10000, help="images of the PGD-100 evaluation timing")
a = ap.parse_args()

out = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
       "torch": torch.__version__}
x, y = gl.data.load("mnist", "test", device=a.device).tensors(a.eval)
cfg = gl.TrainConfig(method="proposed", epochs=a.epochs, limit=a.limit, log_every=500, lr_milestones=())
model = None
# eager vs CUDA graphs (and graphs of the compiled model) with the same seed; a second eager seed measures the
# run-to-run noise they are judged by
for name, graphs, comp, seed in (("eager", False, False, 0), ("graphs", True, False, 0),
                                 ("graphs_compiled", True, True, 0), ("eager_seed1", False, False, 1)):
    t0 = time.perf_counter()
    r = gl.train(cfg.replace(cuda_graphs=graphs, compile_model=comp, seed=seed), device=a.device, progress=False)
    wall = time.perf_counter() - t0
    acc = evaluate(r.last_model, x, y, "clean,fgsm,pgd:40,apgd:100", cfg.eps)
    out[name] = {"seconds_per_epoch": r.metrics["seconds_per_epoch"], "wall": wall,
                 "acc": {k: v["acc"] for k, v in acc.items()}}
    if model is None:
        model = r.last_model   # the eager seed-0 model is the one timed below
out["eval_pgd100"] = bench_eval(a.eval_10k, device=a.device, model=model)
print(json.dumps(out, indent=1))

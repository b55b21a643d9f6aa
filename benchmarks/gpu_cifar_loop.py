"""GPU check (device run): the real training loop on CIFAR-10-shaped data with ResNet-34, CUDA graphs with and
without the compiled model (there is no CIFAR-10 on the device machine: the images are the kit's generated noise
fixture, so accuracies mean nothing; this checks that the loop runs — compilation, capture, the epoch's short last
batch, probes, selection — and what an epoch costs in it).

    python3 benchmarks/gpu_cifar_loop.py [--device cuda] [--per-batch 1000] [--epochs 2]   -> JSON on stdout
    python3 benchmarks/gpu_cifar_loop.py --device cpu --lr 0.1 --trace 20 --no-compile
        -> the loss of each of the first 20 steps instead (why the default lr is 0.02, see below)
"""
import argparse
import json
import tempfile
import time

import torch

import gmreg_lab as gl

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
ap.add_argument("--model", default="resnet34")
ap.add_argument("--per-batch", type=int, default=1000, help="images per fixture batch file (5 train files)")
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--no-compile", action="store_true", help="graphs only (a CPU dry run of the script)")
ap.add_argument("--lr", type=float, default=0.02)
ap.add_argument("--trace", type=int, default=0, help="record the loss of each of the first N steps, then stop")
a = ap.parse_args()

root = gl.fixtures.make_cifar10_fixture(tempfile.mkdtemp(), n_per_batch=a.per_batch)
n_train = 5 * a.per_batch - 1000   # val_size 1000 held out
# lr 0.02, not the paper's 0.1: on pure-noise images with random labels lr 0.1 sits at the edge of divergence (an H100
# run hit NaN at step 13; `--lr 0.1 --trace 20` on the CPU shows the loss spike: benchmarks/results/cpu/), and this
# script checks mechanics, not learning
cfg = gl.TrainConfig(dataset="cifar10", model=a.model, method="proposed", epochs=a.epochs, val_size=1000, lr=a.lr,
                     lr_milestones=(), log_every=1 if a.trace else 10_000, probe_size=8 if a.trace else 200,
                     select_size=500, probe_pgd_steps=1 if a.trace else 3)
out = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu", "torch": torch.__version__,
       "train_images": n_train, "batch_size": cfg.batch_size, "epochs": a.epochs, "lr": a.lr}
if a.trace:
    steps = []

    def record(row):
        if row["event"] == "log":
            steps.append({k: row[k] for k in ("iteration", "loss", "ce", "reg")})
            return row["iteration"] >= a.trace

    try:
        gl.train(cfg, device=a.device, data_dir=root, progress=False, callback=record)
    except gl.errors.TrainingDiverged as e:
        out["diverged"] = str(e)
    out["steps"] = steps
    print(json.dumps(out, indent=1))
    raise SystemExit
for name, comp in (("graphs", False), ("graphs_compiled", True))[:1 if a.no_compile else 2]:
    t0 = time.perf_counter()
    r = gl.train(cfg.replace(compile_model=comp), device=a.device, data_dir=root, progress=False)
    wall = time.perf_counter() - t0
    secs = r.metrics["epoch_seconds"]
    out[name] = {"epoch_seconds": secs, "wall": wall,
                 "last_epoch_per_40k": secs[-1] * 40_000 / n_train,   # scaled to the paper's 40k training images
                 "val_ifgsm3": r.metrics["best_val_ifgsm3"], "loss_last": r.history[-2].get("loss")}
print(json.dumps(out, indent=1))

"""GPU check (device run, issue 15): one CIFAR-10 ResNet-34 epoch of the proposed method with DistributedDataParallel
on one GPU (torchrun, world size 1) against the same epoch without DDP, both eager (DDP turns CUDA graphs and
compilation off), on the kit's generated CIFAR-shaped images (there is no CIFAR-10 on the device machine; timing only).

    python3 benchmarks/gpu_ddp_check.py [--per-batch 2000] [--epochs 2]   -> JSON on stdout
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import gmreg_lab as gl

ap = argparse.ArgumentParser()
ap.add_argument("--per-batch", type=int, default=2000, help="images per fixture batch file (5 train files)")
ap.add_argument("--epochs", type=int, default=2, help="the last epoch is compared (the first warms cuDNN up)")
a = ap.parse_args()
gpu = torch.cuda.is_available()
root = gl.fixtures.make_cifar10_fixture(tempfile.mkdtemp(), n_per_batch=a.per_batch)
val = min(1000, 2 * a.per_batch)
args = ["train", "--dataset", "cifar10", "--model", "resnet34" if gpu else "resnet18", "--method", "proposed",
        "--epochs", str(a.epochs), "--val-size", str(val), "--lr", "0.02", "--log-every", "100000", "--compile", "off",
        "--data-dir", str(root), "--no-progress", "--json", "--device", "cuda" if gpu else "cpu"]
out = {"device": torch.cuda.get_device_name() if gpu else "cpu (a dry run of the script)", "torch": torch.__version__,
       "train_images": 5 * a.per_batch - val}
env = {**os.environ, "PYTHONPATH": str(ROOT)}
for name, prefix, extra in (("plain_eager", [sys.executable, "-m", "gmreg_lab"], []),
                            ("ddp_world1", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node=1", "-m", "gmreg_lab"], []),
                            ("plain_graphs", [sys.executable, "-m", "gmreg_lab"], ["--graphs", "on"])):
    d = tempfile.mkdtemp()
    t0 = time.time()
    r = subprocess.run(prefix + args + extra + ["--out", d] + ([] if extra else ["--graphs", "off"]), env=env,
                       capture_output=True, text=True, cwd=ROOT)
    try:
        m = json.loads(r.stdout)
        out[name] = {"epoch_seconds": m["epoch_seconds"], "wall": time.time() - t0}
    except (json.JSONDecodeError, KeyError):
        out[name] = {"error": (r.stderr or r.stdout)[-1500:]}
try:
    out["ddp_over_plain_last_epoch"] = (out["ddp_world1"]["epoch_seconds"][-1]
                                        / out["plain_eager"]["epoch_seconds"][-1])
except (KeyError, TypeError):
    pass
print(json.dumps(out, indent=1))

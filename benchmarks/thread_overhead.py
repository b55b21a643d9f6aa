"""Does training in a background thread (notebook 04's panel) cost time? 40 proposed steps (batch 32, fp32, the
panel recipe's model) timed on the main thread and in a fresh threading.Thread, interleaved for 6 rounds; medians.

    python benchmarks/thread_overhead.py [--rounds 6] [--steps 40]

Run it while nothing else heavy runs.
"""
import argparse
import statistics
import threading
import time

import torch

import gmreg_lab as gl
from gmreg_lab.training import standalone_step

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=6)
ap.add_argument("--steps", type=int, default=40)
a = ap.parse_args()

dev = torch.device("cpu")
cfg = gl.lab.recipe("panel", precision="fp32")
step = standalone_step(cfg, dev)
x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
for _ in range(5):
    step(x, y)


def timed(out: list) -> None:
    t = time.perf_counter()
    for _ in range(a.steps):
        loss, _ = step(x, y)
    float(loss.detach())
    out.append((time.perf_counter() - t) / a.steps)


main, thread = [], []
for _ in range(a.rounds):
    timed(main)
    th = threading.Thread(target=timed, args=(thread,))
    th.start()
    th.join()
print(gl.lab.machine())
print("main thread   s/step", [round(v, 4) for v in main], "median", round(statistics.median(main), 4))
print("fresh thread  s/step", [round(v, 4) for v in thread], "median", round(statistics.median(thread), 4))
print(f"thread / main: {statistics.median(thread) / statistics.median(main):.2f}")

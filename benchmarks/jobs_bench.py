"""Independent runs side by side (issue 15): the same N runs trained one after another in one process (all threads)
and by ``N`` worker processes (``reproduce --jobs``, the threads split between them), wall time of each, measured in
one invocation on a quiet machine; then whether the workers' weights equal a one-thread sequential run's.

    python benchmarks/jobs_bench.py [--runs 2] [--limit 6400] [--method proposed]   -> JSON on stdout
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gmreg_lab as gl


def main():   # worker processes re-import this file (spawn): nothing may run at import
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=6400, help="training images per run (quick-scale runs, shortened)")
    ap.add_argument("--method", default="proposed")
    a = ap.parse_args()
    runs = {f"seed{s}": gl.TrainConfig(method=a.method, limit=a.limit, epochs=1, seed=s, log_every=50)
            for s in range(a.runs)}
    threads = torch.get_num_threads()
    out = {"machine": gl.runs.environment_info(), "runs": a.runs, "limit": a.limit, "method": a.method,
           "threads": threads}
    root = Path(tempfile.mkdtemp())
    for name, jobs in (("sequential", 1), ("parallel", a.runs)):
        t0 = time.perf_counter()
        gl.jobs.train_runs(runs, root / name, jobs=jobs, device="cpu", progress=False)
        out[f"{name}_seconds"] = time.perf_counter() - t0
    out["speedup"] = out["sequential_seconds"] / out["parallel_seconds"]
    torch.set_num_threads(1)
    gl.jobs.train_runs(runs, root / "sequential_1thread", jobs=1, device="cpu", progress=False)
    torch.set_num_threads(threads)
    out["parallel_equals_1thread_sequential"] = all(
        torch.equal(p, q) for n in runs for p, q in zip(gl.load_model(root / "parallel" / n, which="last").parameters(),
                                                      gl.load_model(root / "sequential_1thread" / n,
                                                                    which="last").parameters()))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

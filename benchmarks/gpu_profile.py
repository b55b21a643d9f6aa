"""Where the time of one proposed-method training step goes (issue 5): torch.profiler over a few steps of the plain
fp32 reference, the kit's eager step and the kit's step with the model compiled, kernel time summed by kind.

    python3 benchmarks/gpu_profile.py [--dataset cifar10] [--batch-size 64] [--steps 5] [--device cuda]
        -> JSON on stdout, a table on stderr

On the CPU (``--device cpu``, a dry run of the script) the operators' CPU time is summed instead of kernels.
"""
import argparse
import json
import re
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import gmreg_lab as gl
from gmreg_lab.runners.bench import _kit_step, _reference_proposed_step
from gmreg_lab.models import build
from gmreg_lab.runtime import cudnn_autotune, sync as _sync

# first match wins; kernel names of cuDNN, cuBLAS/CUTLASS, ATen and Inductor (triton_*)
KINDS = [("conv", r"conv|cudnn|xmma|implicit|dgrad|wgrad|fprop|winograd"),
         ("gemm", r"gemm|cutlass|addmm|\bmm\b|matmul|linear"),
         ("batch_norm", r"batch_norm|batchnorm|bn_|welford"),
         ("fused (inductor)", r"triton"),
         ("optimizer", r"foreach|multi_tensor|sgd"),
         ("reduce", r"reduce"),
         ("copy / cast", r"copy|cast|to_copy|contiguous|nchw|nhwc|transpose"),
         ("elementwise", r"elementwise|vectorized|unrolled|relu|threshold|add|mul|sign|clamp|where")]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, pat in KINDS:
        if re.search(pat, low):
            return kind
    return "other"


def profile_step(fn, x, y, dev, steps):
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(x, y)
    _sync(dev)
    wall = (time.perf_counter() - t0) / steps
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn(x, y)
        _sync(dev)
    by_kind, top, launches = {}, {}, 0
    for e in prof.key_averages():
        if dev.type == "cuda":
            # kernels only: a user annotation's range ("Optimizer.step#SGD.step") spans kernels counted already
            if e.device_type != torch.autograd.DeviceType.CUDA or "#" in e.key or e.key.startswith("ProfilerStep"):
                continue
            t = e.self_device_time_total
            launches += e.count
        else:
            if e.key.startswith("aten::") is False:
                continue
            t = e.self_cpu_time_total
        t = t / steps / 1000.0   # ms per step
        by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + t
        top[e.key[:90]] = t
    busy = sum(by_kind.values())
    return {"wall_ms": wall * 1000, "kernel_ms": busy, "idle_ms": wall * 1000 - busy,
            "kernels_per_step": launches / steps,
            "by_kind_ms": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "top_ms": dict(sorted(top.items(), key=lambda kv: -kv[1])[:15])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cfg = gl.TrainConfig(dataset=a.dataset, model=a.model, batch_size=a.batch_size, method="proposed")
    shape = (a.batch_size, 1, 28, 28) if a.dataset == "mnist" else (a.batch_size, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(shape, generator=g).to(dev), torch.randint(0, 10, (a.batch_size,), generator=g).to(dev)
    ref_model = build(cfg.model, a.dataset).to(dev)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    variants = {"reference fp32": lambda a_, b_: _reference_proposed_step(ref_model, ref_opt, a_, b_, cfg.eps,
                                                                           cfg.alpha, cfg.lam),
                "kit eager": _kit_step(cfg, dev)}
    if not a.no_compile:
        variants["kit compiled"] = _kit_step(cfg, dev, compiled=True)
    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "dataset": a.dataset, "model": cfg.model, "batch_size": a.batch_size, "steps": a.steps}
    with cudnn_autotune(dev):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(3):   # warm-up: cuDNN autotuning, compilation
                fn(x, y)
            _sync(dev)
            warm = time.perf_counter() - t0
            out[name] = {"warmup_s": warm, **profile_step(fn, x, y, dev, a.steps)}
            r = out[name]
            print(f"\n== {name}: {r['wall_ms']:.2f} ms/step wall, {r['kernel_ms']:.2f} ms kernels, "
                  f"{r['kernels_per_step']:.0f} kernels/step (warm-up {warm:.1f} s)", file=sys.stderr)
            for k, v in r["by_kind_ms"].items():
                print(f"   {k:<18}{v:8.2f} ms", file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""`gmreg-lab bench`: time every training method side by side, against the FLOP floor and a plain reference.

Per training sample a forward pass costs 1, an input-gradient pass 2, a training step 3; so normal = 3, FGSM-AT = 5,
proposed = 2·2 + 2·3 = 10 (one input-gradient pass over [x, x'] and one training pass over [x_fgsm, x_rfgsm]),
PGD-40 = 40·2 + 3 = 83. Floors: proposed / PGD-40 = 0.120, proposed / normal = 3.33.

Methods are timed for a fixed number of batches, interleaved (round-robin, order rotated each round) after a
warm-up, and the median batch time is scaled to an epoch of 50,000 (MNIST) images. The reference is a textbook
eager fp32 implementation of the proposed step (fused gradient pass included), written here and timed in the same
rounds, so "speed-up over the reference" compares like with like.
"""

from __future__ import annotations

import statistics
import time
from typing import Optional

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .errors import GmregError
from .models import build
from .runtime import cudnn_autotune, resolve_device, sync
from .training import StepContext, make_model, make_step

EPOCH_IMAGES = {"mnist": 50_000, "cifar10": 40_000}


def _reference_proposed_step(model, opt, x, y, eps, alpha, lam, generator=None):
    """A plain implementation: eager fp32, contiguous NCHW, one fused input-gradient pass, one training pass.
    ``generator``: the R-FGSM noise's (default: the global RNG)."""
    model.eval()
    noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    x1 = (x + alpha * noise.to(x.device).sign()).clamp(0, 1)
    xx = torch.cat([x, x1]).requires_grad_(True)
    loss = F.cross_entropy(model(xx), torch.cat([y, y]))
    (g,) = torch.autograd.grad(loss, xx)
    n = x.shape[0]
    x_f = (x + eps * g[:n].sign()).clamp(0, 1)
    x_r = (x1 + (eps - alpha) * g[n:].sign()).clamp(0, 1)
    model.train()
    logits = model(torch.cat([x_f, x_r]))
    lf, lr = logits[:n], logits[n:]
    total = F.cross_entropy(lf, y) + lam * (lf - lr).pow(2).sum(1).mean()
    opt.zero_grad()
    total.backward()
    opt.step()


def _kit_step(cfg: TrainConfig, dev, graph: bool = False, compiled: bool = False):
    """The training loop's iteration for ``cfg.method``: eager, or as the loop runs it with CUDA graphs and/or a
    compiled model."""
    model, opt = make_model(cfg, dev)
    sources = ([build(cfg.model, cfg.dataset, cfg.normalize).to(dev).eval().requires_grad_(False)]
               if cfg.method == "eat" else [])
    ctx = StepContext(model, cfg, torch.Generator(device=dev).manual_seed(0), sources)
    return make_step(ctx, opt, dev, graphs=graph, compiled=compiled)


def _variants(methods, cuda_graphs: bool, compiled: bool) -> dict:
    """Timed variants: name -> (method, graph, compiled). ``+graph`` only where a CUDA graph applies (not EAT);
    with ``compiled``, ``+compile+graph`` on a GPU (as the loop runs it there) or ``+compile`` on the CPU."""
    out = {m: (m, False, False) for m in methods}
    for m in methods:
        capturable = cuda_graphs and m != "eat"   # EAT picks its source on the host each step
        if capturable:
            out[f"{m}+graph"] = (m, True, False)
        if compiled:
            out[f"{m}+compile+graph" if capturable else f"{m}+compile"] = (m, capturable, True)
    return out


def bench(dataset: str = "mnist", model: Optional[str] = None, batch_size: int = 128, batches: int = 5,
          rounds: int = 3, methods=("normal", "fgsm", "proposed", "pgd"), device="auto",
          precision: str = "bf16", reference: bool = True, progress: bool = True,
          cuda_graphs: Optional[bool] = None, compiled: bool = False) -> dict:
    """Median seconds per batch of each method, epoch equivalents and ratios; see the module docstring.

    ``cuda_graphs`` (default: on a GPU): also time each kit step captured as a CUDA graph (``<method>+graph``).
    ``compiled``: also time it with the model compiled (``+compile+graph`` on a GPU, ``+compile`` on the CPU);
    compilation happens in the warm-up. Ratios of a variant are taken to the same variant of normal / PGD."""
    dev = resolve_device(device)
    cuda_graphs = dev.type == "cuda" if cuda_graphs is None else cuda_graphs
    if cuda_graphs and dev.type != "cuda":
        raise GmregError("cuda_graphs needs a CUDA device")
    with cudnn_autotune(dev):
        return _bench(dataset, model, batch_size, batches, rounds, methods, dev, precision, reference, progress,
                      cuda_graphs, compiled)


def _bench(dataset, model, batch_size, batches, rounds, methods, dev, precision, reference, progress, cuda_graphs,
           compiled):
    from tqdm.auto import tqdm

    base = TrainConfig(dataset=dataset, model=model, batch_size=batch_size, precision=precision,
                       eat_sources=("-",))
    shape = (batch_size, 1, 28, 28) if dataset == "mnist" else (batch_size, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    steps = {name: _kit_step(base.replace(method=m), dev, graph, comp)
             for name, (m, graph, comp) in _variants(methods, cuda_graphs, compiled).items()}
    if reference:
        ref_model = build(base.model, dataset).to(dev)
        ref_opt = torch.optim.SGD(ref_model.parameters(), lr=base.lr, momentum=0.9, weight_decay=5e-4)
        steps["reference_proposed"] = lambda a, b: _reference_proposed_step(ref_model, ref_opt, a, b, base.eps,
                                                                            base.alpha, base.lam)
    times: dict[str, list] = {k: [] for k in steps}
    names = list(steps)
    warmup, errors = {}, {}
    for k in list(names):  # warm-up (allocator, oneDNN primitive caches, cudnn autotune, graph capture, compiling)
        t0 = time.perf_counter()
        try:
            for _ in range(2):
                steps[k](x, y)
            sync(dev)
        except Exception as e:  # a variant that cannot run here (no compiler, ...) is reported
            if k in methods or k == "reference_proposed":
                raise
            errors[k] = f"{type(e).__name__}: {e}"[:500]
            names.remove(k)
            del times[k]
            continue
        warmup[k] = time.perf_counter() - t0
    bar = tqdm(total=rounds * len(names), desc="bench", disable=not progress, leave=False)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            for _ in range(batches):
                sync(dev)
                t0 = time.perf_counter()
                steps[k](x, y)
                sync(dev)
                times[k].append(time.perf_counter() - t0)
            bar.update(1)
    bar.close()
    per_batch = {k: statistics.median(v) for k, v in times.items()}
    out = {"dataset": dataset, "model": base.model, "batch_size": batch_size, "precision": precision,
           "device": str(dev), "warmup_seconds": warmup, "failed_variants": errors}
    return {**out, **summarise(per_batch, dataset, batch_size, base.pgd_steps)}


def summarise(per_batch: dict, dataset: str, batch_size: int, pgd_steps: int) -> dict:
    """Epoch times and ratios from the median seconds per batch of each timed variant.

    A variant is compared with the same variant of normal training / PGD-AT (``proposed+graph`` with
    ``normal+graph``); ``speedups`` divide the plain reference's time by each proposed variant's."""
    out = {"seconds_per_batch": per_batch,
           "seconds_per_epoch": {k: v * EPOCH_IMAGES[dataset] / batch_size for k, v in per_batch.items()}}

    def base_of(k, m):
        return m + k[k.index("+"):] if "+" in k and not k.startswith("reference") else m
    for m, key in (("normal", "ratio_to_normal"), ("pgd", "ratio_to_pgd")):
        if m in per_batch:
            out[key] = {k: v / per_batch[base_of(k, m)] for k, v in per_batch.items() if base_of(k, m) in per_batch}
    if "reference_proposed" in per_batch:
        ref = per_batch["reference_proposed"]
        out["speedups"] = {k: ref / v for k, v in per_batch.items() if k.split("+")[0] == "proposed"}
    out["floor"] = {"proposed/normal": 10 / 3, "proposed/pgd": 10 / (2 * pgd_steps + 3)}
    return out


def bench_eval(limit: int = 1000, steps: int = 100, device="auto", model=None) -> dict:
    """Seconds for PGD-``steps`` over ``limit`` MNIST test images, fp32 and bf16, and fp32 with per-example early
    stopping, scaled to the 10k test set. ``model``: a trained model (an untrained one is broken at once)."""
    from .data import load
    from .evaluate import Attack, attack_stats

    dev = resolve_device(device)
    if model is None:
        torch.manual_seed(0)
        model = build("lenet_plus")
    model = model.to(dev).eval()
    x, y = load("mnist", "test", device=dev).tensors(limit)
    out = {}
    for precision, early in (("fp32", False), ("bf16", False), ("fp32", True)):
        t0 = time.perf_counter()
        acc = attack_stats(model, Attack("pgd", steps, 0.01), x, y, 0.3, precision=precision,
                           early_stop=early)["acc"]
        sync(dev)
        dt = time.perf_counter() - t0
        out[precision + (" early-stop" if early else "")] = {"seconds": dt, "seconds_10k": dt * 10_000 / limit,
                                                             "acc": acc}
    return out


def format_bench(r: dict) -> str:
    lines = [f"{r['dataset']} / {r['model']}, batch {r['batch_size']}, {r['precision']}, {r['device']}",
             f"{'method':<20}{'s/batch':>10}{'s/epoch':>10}{'/normal':>9}{'/pgd':>8}"]
    for k, v in r["seconds_per_batch"].items():
        rn = r.get("ratio_to_normal", {}).get(k)
        rp = r.get("ratio_to_pgd", {}).get(k)
        lines.append(f"{k:<20}{v:>10.4f}{r['seconds_per_epoch'][k]:>10.1f}"
                     f"{(f'{rn:.2f}' if rn else '-'):>9}{(f'{rp:.3f}' if rp else '-'):>8}")
    for k, v in r.get("speedups", {}).items():
        lines.append(f"{k} speed-up over the plain fp32 reference: {v:.2f}x")
    for k, v in r.get("failed_variants", {}).items():
        lines.append(f"{k} could not run: {v}")
    lines.append(f"floors: proposed/normal {r['floor']['proposed/normal']:.2f}, "
                 f"proposed/pgd {r['floor']['proposed/pgd']:.3f}")
    return "\n".join(lines)

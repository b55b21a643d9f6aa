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

from ..config import TrainConfig
from ..errors import GmregError
from ..models import build
from ..runtime import cpu_description, cudnn_autotune, resolve_device, resolve_precision, sync
from ..training import standalone_step

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


def _variants(methods, cuda_graphs: bool, compiled: bool, precisions=("fp32",)) -> dict:
    """Timed variants: name -> (method, graph, compiled, precision). ``+graph`` only where a CUDA graph applies
    (not EAT); with ``compiled``, ``+compile+graph`` on a GPU (as the loop runs it there) or ``+compile`` on the
    CPU. With two precisions the second one's variants carry its name (``proposed+bf16``), so every ratio compares
    a method with the same variant of normal / PGD in the same precision."""
    out = {}
    for i, prec in enumerate(precisions):
        tag = f"+{prec}" if i else ""
        for m in methods:
            out[m + tag] = (m, False, False, prec)
        for m in methods:
            capturable = cuda_graphs and m != "eat"   # EAT picks its source on the host each step
            if capturable:
                out[f"{m}+graph{tag}"] = (m, True, False, prec)
            if compiled:
                out[(f"{m}+compile+graph" if capturable else f"{m}+compile") + tag] = (m, capturable, True, prec)
    return out


def bench(dataset: str = "mnist", model: Optional[str] = None, batch_size: int = 128, batches: int = 5,
          rounds: int = 3, methods=("normal", "fgsm", "proposed", "pgd"), device="auto",
          precision: str = "both", reference: bool = True, progress: bool = True,
          cuda_graphs: Optional[bool] = None, compiled: bool = False) -> dict:
    """Median seconds per batch of each method, epoch equivalents and ratios; see the module docstring.

    ``cuda_graphs`` (default: on a GPU): also time each kit step captured as a CUDA graph (``<method>+graph``).
    ``compiled``: also time it with the model compiled (``+compile+graph`` on a GPU, ``+compile`` on the CPU);
    compilation happens in the warm-up. Ratios of a variant are taken to the same variant of normal / PGD.

    ``precision``: "both" (default) times every method in fp32 and under bf16 autocast in the same rounds
    (``<method>+bf16``) and reports ``bf16_over_fp32`` per method; "fp32", "bf16" or "auto" time one. The result
    names the CPU (:func:`runtime.cpu_description`) and what "auto" picks on this device."""
    dev = resolve_device(device)
    if precision not in ("both", "auto", "fp32", "bf16"):
        raise GmregError(f"unknown precision {precision!r}; valid: both, auto, fp32, bf16")
    cuda_graphs = dev.type == "cuda" if cuda_graphs is None else cuda_graphs
    if cuda_graphs and dev.type != "cuda":
        raise GmregError("cuda_graphs needs a CUDA device")
    with cudnn_autotune(dev):
        return _bench(dataset, model, batch_size, batches, rounds, methods, dev, precision, reference, progress,
                      cuda_graphs, compiled)


def _bench(dataset, model, batch_size, batches, rounds, methods, dev, precision, reference, progress, cuda_graphs,
           compiled):
    from tqdm.auto import tqdm

    precisions = ("fp32", "bf16") if precision == "both" else (resolve_precision(precision, dev),)
    base = TrainConfig(dataset=dataset, model=model, batch_size=batch_size, precision=precisions[0],
                       eat_sources=("-",))
    shape = (batch_size, 1, 28, 28) if dataset == "mnist" else (batch_size, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(dev)
    steps = {name: standalone_step(base.replace(method=m, precision=prec), dev, graphs=graph, compiled=comp)
             for name, (m, graph, comp, prec) in _variants(methods, cuda_graphs, compiled, precisions).items()}
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
            if k == "reference_proposed" or k.removesuffix("+bf16") in methods:   # a plain step must run
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
           "precisions": list(precisions), "precision_auto": resolve_precision("auto", dev),
           "cpu": cpu_description(), "torch_threads": torch.get_num_threads(), "device": str(dev),
           "warmup_seconds": warmup, "failed_variants": errors}
    out.update(summarise(per_batch, dataset, batch_size, base.pgd_steps))
    if len(precisions) == 2:
        out["bf16_over_fp32"] = {m: per_batch[f"{m}+bf16"] / per_batch[m] for m in methods
                                 if m in per_batch and f"{m}+bf16" in per_batch}
    return out


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
    from ..data import load
    from ..evaluate import Attack, attack_stats

    dev = resolve_device(device)
    if model is None:
        torch.manual_seed(0)
        model = build("lenet_plus")
    model = model.to(dev).eval()
    x, y = load("mnist", "test", device=dev).tensors(limit)
    out = {}
    for precision, early in (("fp32", False), ("bf16", False), ("fp32", True)):
        t0 = time.perf_counter()
        acc = attack_stats(model, Attack("pgd", steps=steps, step=0.01), x, y, 0.3, precision=precision,
                           early_stop=early)["acc"]
        sync(dev)
        dt = time.perf_counter() - t0
        out[precision + (" early-stop" if early else "")] = {"seconds": dt, "seconds_10k": dt * 10_000 / limit,
                                                             "acc": acc}
    return out


def format_bench(r: dict) -> str:
    lines = [f"{r['dataset']} / {r['model']}, batch {r['batch_size']}, {r['device']} ({r.get('cpu', '?')}), "
             f"{r.get('torch_threads', '?')} thread(s)",
             f"precision: {' and '.join(r.get('precisions', [r['precision']]))} (variants '+bf16' under bf16 autocast)"
             if len(r.get("precisions", ())) == 2 else f"precision: {r['precision']}",
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
    for m, v in r.get("bf16_over_fp32", {}).items():
        lines.append(f"{m}: bf16 autocast takes {v:.2f}x the fp32 time per batch "
                     f"({'faster' if v < 1 else 'slower'} on this machine)")
    if "precision_auto" in r:
        lines.append(f"precision 'auto' (the kit's default) picks {r['precision_auto']} on this device")
    lines.append(f"floors: proposed/normal {r['floor']['proposed/normal']:.2f}, "
                 f"proposed/pgd {r['floor']['proposed/pgd']:.3f}")
    return "\n".join(lines)

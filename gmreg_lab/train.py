"""One training loop for every method of the paper; each method is a small step function in ``STEPS``.

A step function gets the context and a clean minibatch ``(x, y)`` and returns ``(loss, parts)``: the loss to
back-propagate and a dict of scalar tensors to log. Adversaries are crafted with the model in eval mode (no
dropout/batch-norm noise in the attack, as in the authors' code) and the loss pass runs in train mode.

The loop keeps metrics on the device and reads them only every ``log_every`` iterations, writes the run directory
atomically at every epoch end, resumes bit for bit, and stops with a clear error on a NaN/Inf loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import data as data_mod
from .attacks import fgsm, fgsm_rfgsm, ifgsm, pgd, rfgsm
from .config import TrainConfig
from .diagnostics import probe
from .errors import GmregError, TrainingDiverged
from .losses import proposed_loss
from .models import build
from .runs import (CHECKPOINT, environment_info, load_checkpoint, load_model, read_json, save_checkpoint,
                   write_csv, write_json)

log = logging.getLogger(__name__)


# --- step functions -------------------------------------------------------------------------------------------------
@dataclass
class StepContext:
    model: torch.nn.Module
    cfg: TrainConfig
    generator: torch.Generator                       # attack noise (R-FGSM sign noise, PGD start)
    sources: list = field(default_factory=list)      # EAT: static pre-trained models
    host_generator: torch.Generator = field(default_factory=torch.Generator)  # CPU choices (no device sync)


def _ce(model, x, y):
    model.train()
    return F.cross_entropy(model(x).float(), y)


@contextlib.contextmanager
def attacking(model):
    """The model as a training step's attack sees it: eval mode (no batch-norm batch statistics or dropout in the
    attack, as in the authors' code) and parameters frozen, so the input-gradient pass computes input gradients
    only. Eager autograd would skip the weight gradients anyway; a compiled model (``compile_model``) would
    compute every one of them and throw them away. ``requires_grad`` is restored afterwards; the caller's next
    loss pass (:func:`_ce`) sets train mode."""
    model.eval()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def step_normal(ctx, x, y):
    ce = _ce(ctx.model, x, y)
    return ce, {"ce": ce}


def step_fgsm(ctx, x, y):
    with attacking(ctx.model):
        x_adv = fgsm(ctx.model, x, y, ctx.cfg.eps)
    ce = _ce(ctx.model, x_adv, y)
    return ce, {"ce": ce}


def step_rfgsm(ctx, x, y):
    with attacking(ctx.model):
        x_adv = rfgsm(ctx.model, x, y, ctx.cfg.eps, ctx.cfg.alpha, generator=ctx.generator)
    ce = _ce(ctx.model, x_adv, y)
    return ce, {"ce": ce}


def step_fgsm_rfgsm(ctx, x, y):
    """Ablation (i): a minibatch holding both FGSM and R-FGSM adversaries, plain CE on all of it."""
    with attacking(ctx.model):
        x_f, x_r = fgsm_rfgsm(ctx.model, x, y, ctx.cfg.eps, ctx.cfg.alpha, generator=ctx.generator)
    ce = _ce(ctx.model, torch.cat([x_f, x_r]), torch.cat([y, y]))
    return ce, {"ce": ce}


def step_eat(ctx, x, y):
    """Ensemble adversarial training (Tramèr et al.): half clean, half FGSM adversaries from a source picked
    uniformly among the static pre-trained models and the model being trained, with predicted labels."""
    pick = int(torch.randint(len(ctx.sources) + 1, (1,), generator=ctx.host_generator))  # CPU: no device sync
    source = ctx.model if pick == len(ctx.sources) else ctx.sources[pick]
    with attacking(ctx.model):
        x_adv = fgsm(source, x, None, ctx.cfg.eps)
    ctx.model.train()
    logits = ctx.model(torch.cat([x, x_adv])).float()
    n = x.shape[0]
    ce = 0.5 * F.cross_entropy(logits[:n], y) + 0.5 * F.cross_entropy(logits[n:], y)
    return ce, {"ce": ce}


def step_pgd(ctx, x, y):
    cfg = ctx.cfg
    with attacking(ctx.model):
        x_adv = pgd(ctx.model, x, y, cfg.eps, cfg.pgd_step_size, cfg.pgd_steps, generator=ctx.generator)
    ce = _ce(ctx.model, x_adv, y)
    return ce, {"ce": ce}


def step_proposed(ctx, x, y):
    """Algorithm 1: FGSM and R-FGSM adversaries of the same clean samples (one fused gradient pass), one forward
    pass over B* = [B1, B2], loss Eq. 8."""
    cfg = ctx.cfg
    with attacking(ctx.model):
        x_f, x_r = fgsm_rfgsm(ctx.model, x, y, cfg.eps, cfg.alpha, generator=ctx.generator)
    ctx.model.train()
    logits = ctx.model(torch.cat([x_f, x_r]))
    n = x.shape[0]
    loss, ce, reg = proposed_loss(logits[:n], logits[n:], y, cfg.lam)
    return loss, {"ce": ce, "reg": reg}


STEPS: dict[str, Callable] = {"normal": step_normal, "fgsm": step_fgsm, "rfgsm": step_rfgsm,
                              "fgsm_rfgsm": step_fgsm_rfgsm, "eat": step_eat, "pgd": step_pgd,
                              "proposed": step_proposed}


# --- helpers --------------------------------------------------------------------------------------------------------
def resolve_device(device="auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise GmregError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise GmregError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


def autocast(device: torch.device, precision: str, cache: bool = True):
    """bf16 autocast, or nothing for fp32. ``cache=False``: no weight-cast cache, as a CUDA graph needs (its casts
    would otherwise be baked into the graph); a capture turns it off in any case."""
    if precision == "bf16":
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache and not capturing)
    return contextlib.nullcontext()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def cudnn_autotune(dev):
    """cuDNN picks its fastest kernels per shape while training (fixed batch shapes), and the setting is restored
    afterwards: evaluation attacks shrink their batches as examples break, and autotuning every new shape would
    cost far more than it saves."""
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = prev or dev.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def make_model(cfg: TrainConfig, dev):
    """A fresh model for ``cfg`` on ``dev`` (channels_last if asked) and its SGD optimizer."""
    model = build(cfg.model, cfg.dataset, cfg.normalize).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, opt


def optimizer_step(step_fn, ctx: StepContext, opt, x, y, dev, autocast_cache: bool = True):
    """One training iteration: the method's step under the configured precision, backward, SGD update."""
    cfg = ctx.cfg
    if cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(dev, cfg.precision, autocast_cache):
        loss, parts = step_fn(ctx, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, parts


class CudaGraphStep:
    """:func:`optimizer_step` captured as a CUDA graph and replayed: one launch per iteration instead of hundreds
    (the MNIST model is so small that launches, not FLOPs, bound an eager step on a GPU).

    The graph bakes in the batch shape and the learning rate, so it is captured again when either changes; a batch
    of another shape than the first (an epoch's short last batch) runs eagerly. Capture needs warm-up steps: they
    run on the real batch and are then undone (weights, buffers, momentum and the CUDA RNG restored in place), so
    the trajectory is the eager one up to the order of floating-point sums. Randomness comes from the default CUDA
    generator, which a replay advances like an eager step. Any capture error falls back to eager steps, logged."""

    def __init__(self, step_fn, ctx: StepContext, opt, dev):
        self.step_fn, self.opt, self.dev = step_fn, opt, dev
        self.ctx = StepContext(ctx.model, ctx.cfg, None, ctx.sources, ctx.host_generator)
        self.graph, self.key, self.shape, self.failed = None, None, None, False

    def _capture(self, x, y):
        model, opt = self.ctx.model, self.opt
        self.graph = None
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_rng = torch.cuda.get_rng_state(self.dev)
        bufs = [opt.state[p].get("momentum_buffer") if p in opt.state else None
                for g in opt.param_groups for p in g["params"]]
        saved_bufs = [None if b is None else b.clone() for b in bufs]
        self.sx, self.sy = x.clone(), y.clone()
        side = torch.cuda.Stream(self.dev)
        side.wait_stream(torch.cuda.current_stream(self.dev))
        try:
            with torch.cuda.stream(side):
                for _ in range(2):   # the capture's autocast settings: a compiled model must not recompile in it
                    optimizer_step(self.step_fn, self.ctx, opt, self.sx, self.sy, self.dev, autocast_cache=False)
        finally:   # undo the warm-up in place (the graph will hold these very tensors), also if it failed
            torch.cuda.current_stream(self.dev).wait_stream(side)
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(saved_model[k])
                params = [p for g in opt.param_groups for p in g["params"]]
                for p, old in zip(params, saved_bufs):   # SGD: a zero buffer acts as no buffer (dampening 0)
                    buf = opt.state[p].get("momentum_buffer")
                    if buf is not None:
                        buf.copy_(old) if old is not None else buf.zero_()
            torch.cuda.set_rng_state(saved_rng, self.dev)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, parts = optimizer_step(self.step_fn, self.ctx, opt, self.sx, self.sy, self.dev, autocast_cache=False)
        # detached views of the graph's outputs (a replay refreshes them): holding the captured autograd graph would
        # keep its AccumulateGrad nodes, made on the capture stream, alive into later eager steps
        self.out = (loss.detach(), {k: v.detach() for k, v in parts.items()})
        self.graph = graph

    def __call__(self, x, y):
        if self.failed or (self.shape is not None and x.shape != self.shape):
            return optimizer_step(self.step_fn, self.ctx, self.opt, x, y, self.dev)
        key = (tuple(x.shape), tuple(g["lr"] for g in self.opt.param_groups))
        if key != self.key:
            try:
                self._capture(x, y)
            except Exception as e:  # noqa: BLE001 -- any capture problem: keep training, eagerly
                log.warning("CUDA graph capture failed (%s); training continues with eager steps", e)
                self.failed = True
                return optimizer_step(self.step_fn, self.ctx, self.opt, x, y, self.dev)
            self.key, self.shape = key, x.shape
        self.sx.copy_(x)
        self.sy.copy_(y)
        self.graph.replay()
        return self.out


def compile_pays(cfg: TrainConfig, dev) -> bool:
    """Whether compiling the model is worth its start-up cost: on a GPU for the CIFAR-10 networks (ResNet-34
    proposed step 1.4x faster, ~40 s to compile; BENCHMARKS.md). Not for MNIST's LeNet+ (a few seconds saved per
    run) and not on the CPU (compiling takes minutes there and the steps were not faster)."""
    return resolve_device(dev).type == "cuda" and cfg.dataset == "cifar10"


def compile_for_training(model):
    """``torch.compile`` of ``model`` for the training steps (same parameters, shapes fixed): the compiler fuses
    the batch-norm, ReLU and residual passes around each convolution that eager mode runs one by one. The first
    steps compile (seconds for LeNet+, about a minute per mode for ResNet-34)."""
    return torch.compile(model, dynamic=False)


def make_step(ctx: StepContext, opt, dev, *, graphs: Optional[bool] = None, compiled: Optional[bool] = None):
    """The training iteration of ``ctx.cfg.method`` as the loop runs it: ``step(x, y) -> (loss, parts)``.

    ``graphs`` (default ``cfg.cuda_graphs``): replay it as a CUDA graph on a GPU (never for EAT, which picks its
    source on the host). ``compiled`` (default ``cfg.compile_model``): run it through :func:`compile_for_training`;
    the model in ``ctx`` stays the plain one (checkpoints, probes), and a batch of another shape than the first
    (an epoch's short last batch) runs on the plain model instead of compiling again."""
    cfg = ctx.cfg
    step_fn = STEPS[cfg.method]
    graphs = (cfg.cuda_graphs if graphs is None else graphs) and dev.type == "cuda" and cfg.method != "eat"
    compiled = cfg.compile_model if compiled is None else compiled
    fast_ctx = dataclasses.replace(ctx, model=compile_for_training(ctx.model)) if compiled else ctx
    if graphs:
        fast = CudaGraphStep(step_fn, fast_ctx, opt, dev)
    else:
        def fast(x, y):
            return optimizer_step(step_fn, fast_ctx, opt, x, y, dev)
    if not compiled:
        return fast
    first_shape = []

    def step(x, y):
        if not first_shape:
            first_shape.append(x.shape)
        if x.shape != first_shape[0]:
            return optimizer_step(step_fn, ctx, opt, x, y, dev)
        return fast(x, y)
    return step


@dataclass
class TrainResult:
    model: torch.nn.Module            # the selected model (best validation epoch, or last), eval mode
    history: list                     # rows recorded every log_every iterations and at each epoch end
    metrics: dict
    config: TrainConfig
    run_dir: Optional[Path] = None
    last_model: Optional[torch.nn.Module] = None
    stopped: bool = False
    snapshots: dict = field(default_factory=dict)   # iteration -> state_dict (CPU), from snapshot_at


def _prepare_run_dir(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> Optional[dict]:
    """Check ``out`` against ``cfg``; return the checkpoint to resume from, or None to start fresh."""
    ckpt_file = out / CHECKPOINT
    if out.exists() and not out.is_dir():
        raise GmregError(f"output path {out} exists and is not a directory")
    if overwrite or not out.exists() or not any(out.iterdir()):
        return None
    if not ckpt_file.exists():
        if (out / "config.json").exists() and resume:
            return None  # killed before the first epoch ended: nothing to resume, start over
        raise GmregError(f"output directory {out} is not empty and holds no run; choose another --out "
                         f"or pass --overwrite")
    ckpt = load_checkpoint(ckpt_file)
    if not TrainConfig.from_dict(ckpt["config"]).same_run(cfg):
        old = TrainConfig.from_dict(ckpt["config"]).to_dict()
        diff = [k for k in old if old[k] != cfg.to_dict()[k]]
        raise GmregError(f"output directory {out} holds a different run (config differs in: {', '.join(diff)}); "
                         f"choose another --out or pass --overwrite")
    if not resume:
        raise GmregError(f"output directory {out} already holds this run; pass --resume to continue or reuse it, "
                         f"or --overwrite to start again")
    return ckpt


def _milestones(cfg: TrainConfig, iters_per_epoch: int) -> list[int]:
    """Learning-rate milestones in iterations (config milestones are epochs; fractions allowed)."""
    return sorted({max(1, round(m * iters_per_epoch)) for m in cfg.lr_milestones})


def _load_sources(cfg: TrainConfig, device) -> list:
    sources = []
    for path in cfg.eat_sources:
        m = load_model(path, device=device, dataset=cfg.dataset)
        m.requires_grad_(False)
        sources.append(m)
    return sources


# --- the loop -------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, out=None, *, device="auto", data_dir=None, callback: Optional[Callable] = None,
          stop=None, resume: bool = False, overwrite: bool = False, progress: bool = True,
          snapshot_at: tuple = ()) -> TrainResult:
    """Train ``cfg.model`` with ``cfg.method``.

    ``out``: run directory (checkpoint/config/history/metrics written atomically at every epoch end); ``None`` keeps
    everything in memory. ``callback(row)`` receives every history row as it is made (``row["event"]`` is "log",
    "epoch" or "end"); it may return ``True`` to stop. ``stop`` is anything with ``is_set()`` (a
    ``threading.Event``) checked every iteration. ``resume=True`` continues the run in ``out`` (or returns it at
    once when it is complete). ``snapshot_at``: iterations after which a copy of the weights is kept (in the
    checkpoint too): ``load_model(run, which="iter:200")`` returns it, e.g. the early model of the paper's Fig. 1.
    """
    if not isinstance(cfg, TrainConfig):
        raise GmregError("cfg must be a TrainConfig")
    dev = resolve_device(device)
    out = Path(out) if out is not None else None
    ckpt = _prepare_run_dir(out, cfg, resume, overwrite) if out is not None else None
    if ckpt is not None and ckpt.get("complete"):
        return _result_from_checkpoint(ckpt, cfg, out, dev)

    full = data_mod.load(cfg.dataset, "train", data_dir, device=dev)
    if cfg.val_size > 0:
        train_set, val_set = data_mod.train_val_split(full, cfg.val_size, cfg.seed)
    else:
        train_set, val_set = full, full
    train_set = train_set.head(cfg.limit)
    x_probe, y_probe = val_set.tensors(cfg.probe_size)
    x_sel, y_sel = val_set.tensors(cfg.select_size)
    iters_per_epoch = train_set.num_batches(cfg.batch_size)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())

    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # our seeding never disturbs the caller's global RNG
        torch.manual_seed(cfg.seed)
        model, opt = make_model(cfg, dev)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, _milestones(cfg, iters_per_epoch), gamma=cfg.lr_gamma)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        host_gen = torch.Generator().manual_seed(cfg.seed + 2)
        state = {"epoch": 0, "iteration": 0, "history": [], "epoch_times": [], "best_model": None,
                 "best_epoch": None, "best_score": -1.0, "snapshots": {}}
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            gen.set_state(ckpt["rng"]["noise"])
            if ckpt["rng"].get("host") is not None:
                host_gen.set_state(ckpt["rng"]["host"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if dev.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], dev)
            for key in state:
                state[key] = ckpt.get(key, state[key])
            log.info("resuming %s at epoch %d", out, state["epoch"])
        ctx = StepContext(model, cfg, gen, _load_sources(cfg, dev) if cfg.method == "eat" else [], host_gen)
        with cudnn_autotune(dev):
            return _loop(cfg, ctx, opt, sched, state, train_set, (x_probe, y_probe), (x_sel, y_sel), out, dev,
                         callback, stop, progress, set(snapshot_at))


def _loop(cfg, ctx, opt, sched, state, train_set, probe_set, select_set, out, dev, callback, stop, progress,
          snapshot_at):
    from tqdm.auto import tqdm

    model, step = ctx.model, make_step(ctx, opt, dev)
    history = state["history"]
    iters_per_epoch = train_set.num_batches(cfg.batch_size)
    stopped = False

    def emit(row):
        history.append(row)
        if callback is not None and callback(row) is True:
            return True
        return False

    def run_probe():
        with autocast(dev, cfg.precision):
            return probe(model, *probe_set, cfg.eps, cfg.alpha, cfg.probe_pgd_steps, seed=cfg.seed)

    for epoch in range(state["epoch"], cfg.epochs):
        order_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        sums: dict[str, torch.Tensor] = {}
        count, bad_at = 0, torch.full((), -1, dtype=torch.long, device=dev)
        t_epoch, t_probe = time.perf_counter(), 0.0
        bar = tqdm(total=iters_per_epoch, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress)
        for b, (x, y) in enumerate(train_set.batches(cfg.batch_size, generator=order_gen, augment=cfg.augment), 1):
            loss, parts = step(x, y)
            sched.step()
            it = state["iteration"]
            bad_at = torch.where((bad_at < 0) & ~torch.isfinite(loss.detach()), torch.full_like(bad_at, it), bad_at)
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            count += 1
            state["iteration"] = it + 1
            if state["iteration"] in snapshot_at:
                state["snapshots"][state["iteration"]] = {k: v.detach().to("cpu", copy=True)
                                                          for k, v in model.state_dict().items()}
            bar.update(1)
            if state["iteration"] % cfg.log_every == 0 or b == iters_per_epoch:
                if int(bad_at) >= 0:
                    bar.close()
                    raise TrainingDiverged(
                        f"training loss became NaN/Inf at iteration {int(bad_at)} (epoch {epoch + 1}); "
                        f"the last good checkpoint is kept" + (f" in {out}" if out else "") +
                        "; lower the learning rate or lam")
                t0 = time.perf_counter()
                row = {"event": "log", "iteration": state["iteration"], "epoch": state["iteration"] / iters_per_epoch,
                       "lr": opt.param_groups[0]["lr"],
                       **{k: float(v) / count for k, v in sums.items()}, **run_probe()}
                sums, count = {}, 0
                _sync(dev)
                t_probe += time.perf_counter() - t0
                row["train_time"] = sum(state["epoch_times"]) + (time.perf_counter() - t_epoch - t_probe)
                bar.set_postfix(loss=f"{row['loss']:.3f}", pgd=f"{row['acc_pgd']:.0f}%")
                if emit(row):
                    stopped = True
            if stop is not None and stop.is_set():
                stopped = True
            if stopped:
                break
        bar.close()
        if stopped:
            break
        _sync(dev)
        state["epoch_times"].append(time.perf_counter() - t_epoch - t_probe)
        score = None
        if cfg.select_best:
            with autocast(dev, cfg.precision):
                score = _accuracy(model, ifgsm, select_set, cfg.eps, 3)
            if score > state["best_score"]:
                state["best_score"], state["best_epoch"] = score, epoch + 1
                state["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state["epoch"] = epoch + 1
        row = {"event": "epoch", "iteration": state["iteration"], "epoch": epoch + 1,
               "epoch_seconds": state["epoch_times"][-1], "val_ifgsm3": score}
        stopped = emit(row)
        if out is not None:
            _save(out, cfg, ctx, opt, sched, state, dev, complete=state["epoch"] == cfg.epochs)
        if stopped or (stop is not None and stop.is_set()):
            stopped = True
            break

    metrics = _metrics(cfg, state, dev, complete=state["epoch"] == cfg.epochs)
    if out is not None:
        write_json(out / "metrics.json", metrics)
    model.eval()
    selected = model
    if state["best_model"] is not None and not stopped:
        selected = build(cfg.model, cfg.dataset, cfg.normalize).to(dev)
        selected.load_state_dict(state["best_model"])
        selected.eval()
    if callback is not None:
        callback({"event": "end", "iteration": state["iteration"], "epoch": state["epoch"], "stopped": stopped})
    return TrainResult(selected, history, metrics, cfg, out, last_model=model, stopped=stopped,
                       snapshots=state["snapshots"])


def _accuracy(model, attack, split_tensors, eps, *args) -> float:
    x, y = split_tensors
    model.eval()
    correct = 0
    for i in range(0, len(y), 1000):
        xb, yb = x[i:i + 1000], y[i:i + 1000]
        xa = attack(model, xb, yb, eps, *args)
        with torch.no_grad():
            correct += (model(xa).argmax(1) == yb).sum()
    return float(correct) * 100 / len(y)


def _metrics(cfg, state, dev, complete: bool) -> dict:
    times = state["epoch_times"]
    return {"complete": complete, "epochs_done": state["epoch"], "iterations": state["iteration"],
            "seconds_per_epoch": (sum(times) / len(times)) if times else None, "epoch_seconds": times,
            "train_seconds": sum(times), "best_epoch": state["best_epoch"],
            "best_val_ifgsm3": state["best_score"] if state["best_epoch"] else None,
            "device": str(dev), "environment": environment_info(dev), "config": cfg.to_dict()}


def _save(out, cfg, ctx, opt, sched, state, dev, complete: bool):
    rng = {"torch": torch.get_rng_state(), "noise": ctx.generator.get_state(),
           "host": ctx.host_generator.get_state(),
           "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
    model_state = {k: v.detach().to("cpu") for k, v in ctx.model.state_dict().items()}
    best = None if state["best_model"] is None else {k: v.to("cpu") for k, v in state["best_model"].items()}
    save_checkpoint(out / CHECKPOINT, {
        "arch": cfg.model, "dataset": cfg.dataset, "config": cfg.to_dict(), "model": model_state,
        "best_model": best, "best_epoch": state["best_epoch"], "best_score": state["best_score"],
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng, "epoch": state["epoch"],
        "iteration": state["iteration"], "history": state["history"], "epoch_times": state["epoch_times"],
        "snapshots": state["snapshots"], "complete": complete})
    write_csv(out / "history.csv", state["history"])
    write_json(out / "metrics.json", _metrics(cfg, state, dev, complete))


def _result_from_checkpoint(ckpt, cfg, out, dev) -> TrainResult:
    model = load_model(out, device=dev)
    last = load_model(out, which="last", device=dev)
    metrics = read_json(out / "metrics.json") if (out / "metrics.json").exists() else {}
    return TrainResult(model, ckpt["history"], metrics, cfg, out, last_model=last,
                       snapshots=ckpt.get("snapshots") or {})

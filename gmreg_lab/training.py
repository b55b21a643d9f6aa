"""One training loop for every method of the paper; each method is a small step function in ``STEPS``.

A step function gets the context and a clean minibatch ``(x, y)`` and returns ``(loss, parts)``: the loss to
back-propagate and a dict of scalar tensors to log. Adversaries are crafted with the model in eval mode (no
dropout/batch-norm noise in the attack, as in the authors' code) and the loss pass runs in train mode; GradAlign
takes both of its input gradients in train mode, as Andriushchenko & Flammarion's code does (see its step). Every
step reads the training eps (and R-FGSM's alpha) from the context, ``ctx.eps`` / ``ctx.alpha``: the configured
values scaled by the eps warm-up's factor of the current iteration (:func:`eps_warmup_factor`).

The loop keeps metrics on the device and reads them only every ``log_every`` iterations, writes the run directory
atomically at every epoch end, resumes bit for bit, and stops with a clear error on a NaN/Inf loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import data as data_mod
from .attacks import uniform_noise, fgsm, fgsm_rfgsm, fgsm_rs, input_grad, nfgsm, pgd, rfgsm
from .config import TrainConfig
from .diagnostics import probe
from .errors import GmregError, TrainingDiverged
from .evaluate import Attack, attack_stats
from .losses import gradient_misalignment, proposed_loss
from .models import build
from .runs import (CHECKPOINT, environment_info, load_checkpoint, load_model, read_json, save_checkpoint,
                   write_csv, write_json)
from .runtime import (Step, all_max, autocast, broadcast_error, cudnn_autotune, distributed, resolve_device,
                      resolve_precision, sync, world)

log = logging.getLogger(__name__)


# --- step functions -------------------------------------------------------------------------------------------------
@dataclass
class StepContext:
    model: torch.nn.Module
    cfg: TrainConfig
    generator: torch.Generator                       # attack noise (R-FGSM sign noise, PGD start)
    sources: list = field(default_factory=list)      # EAT: static pre-trained models
    host_generator: torch.Generator = field(default_factory=torch.Generator)  # CPU choices (no device sync)
    loss_model: Optional[torch.nn.Module] = None     # the loss pass's model when it differs (DDP's wrapper)
    loss_scale: float = 1.0                          # the loss is multiplied by this before backward (DDP shards)
    warmup: float = 1.0                              # eps warm-up factor of this iteration (1 when off or over)

    @property
    def eps(self) -> float:
        """The training eps of this iteration: ``cfg.eps`` times the warm-up factor (exactly ``cfg.eps`` at 1)."""
        return self.cfg.eps if self.warmup == 1.0 else self.cfg.eps * self.warmup

    @property
    def alpha(self) -> float:
        """R-FGSM's noise size of this iteration, scaled with eps (never above it)."""
        return self.cfg.alpha if self.warmup == 1.0 else self.cfg.alpha * self.warmup

    @property
    def net(self) -> torch.nn.Module:
        """The model of the loss pass (train mode, gradients to the weights): ``model``, or its DDP wrapper. The
        attacks always run on ``model`` itself."""
        return self.model if self.loss_model is None else self.loss_model


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
    ce = _ce(ctx.net, x, y)
    return ce, {"ce": ce}


def step_fgsm(ctx, x, y):
    with attacking(ctx.model):
        x_adv = fgsm(ctx.model, x, y, ctx.eps)
    ce = _ce(ctx.net, x_adv, y)
    return ce, {"ce": ce}


def step_rfgsm(ctx, x, y):
    with attacking(ctx.model):
        x_adv = rfgsm(ctx.model, x, y, ctx.eps, alpha=ctx.alpha, generator=ctx.generator)
    ce = _ce(ctx.net, x_adv, y)
    return ce, {"ce": ce}


def step_fgsm_rfgsm(ctx, x, y):
    """Ablation (i): a minibatch holding both FGSM and R-FGSM adversaries, plain CE on all of it."""
    with attacking(ctx.model):
        x_f, x_r = fgsm_rfgsm(ctx.model, x, y, ctx.eps, alpha=ctx.alpha, generator=ctx.generator)
    ce = _ce(ctx.net, torch.cat([x_f, x_r]), torch.cat([y, y]))
    return ce, {"ce": ce}


def step_eat(ctx, x, y):
    """Ensemble adversarial training (Tramèr et al.): half clean, half FGSM adversaries from a source picked
    uniformly among the static pre-trained models and the model being trained, with predicted labels."""
    pick = int(torch.randint(len(ctx.sources) + 1, (1,), generator=ctx.host_generator))  # CPU: no device sync
    source = ctx.model if pick == len(ctx.sources) else ctx.sources[pick]
    with attacking(ctx.model):
        x_adv = fgsm(source, x, None, ctx.eps)
    ctx.net.train()
    logits = ctx.net(torch.cat([x, x_adv])).float()
    n = x.shape[0]
    ce = 0.5 * F.cross_entropy(logits[:n], y) + 0.5 * F.cross_entropy(logits[n:], y)
    return ce, {"ce": ce}


def step_pgd(ctx, x, y):
    """PGD-AT (Madry et al.). Under an eps warm-up only the radius ramps: ``pgd_step_size`` is a pixel step of
    its own, not tied to eps."""
    cfg = ctx.cfg
    with attacking(ctx.model):
        x_adv = pgd(ctx.model, x, y, ctx.eps, step=cfg.pgd_step_size, steps=cfg.pgd_steps, generator=ctx.generator)
    ce = _ce(ctx.net, x_adv, y)
    return ce, {"ce": ce}


def step_proposed(ctx, x, y):
    """Algorithm 1: FGSM and R-FGSM adversaries of the same clean samples (one fused gradient pass), one forward
    pass over B* = [B1, B2], loss Eq. 8."""
    cfg = ctx.cfg
    with attacking(ctx.model):
        x_f, x_r = fgsm_rfgsm(ctx.model, x, y, ctx.eps, alpha=ctx.alpha, generator=ctx.generator)
    ctx.net.train()
    logits = ctx.net(torch.cat([x_f, x_r]))
    n = x.shape[0]
    loss, ce, reg = proposed_loss(logits[:n], logits[n:], y, cfg.lam)
    return loss, {"ce": ce, "reg": reg}


# --- single-step methods after the paper -------------------------------------------------------------------------
def step_fgsm_rs(ctx, x, y):
    """FGSM-RS (Wong, Rice & Kolter 2020): uniform random start in the eps-ball, a step of rs_step * eps,
    projection; CE on the result."""
    cfg = ctx.cfg
    with attacking(ctx.model):
        x_adv = fgsm_rs(ctx.model, x, y, ctx.eps, step=cfg.rs_step * ctx.eps, generator=ctx.generator,
                        clip_start=cfg.rs_clip_start)
    ce = _ce(ctx.net, x_adv, y)
    return ce, {"ce": ce}


def step_nfgsm(ctx, x, y):
    """N-FGSM (de Jorge et al. 2022): noise of nfgsm_k * eps, a full eps step, no projection; CE on the result."""
    cfg = ctx.cfg
    with attacking(ctx.model):
        x_adv = nfgsm(ctx.model, x, y, ctx.eps, k=cfg.nfgsm_k, generator=ctx.generator)
    ce = _ce(ctx.net, x_adv, y)
    return ce, {"ce": ce}


def step_gradalign(ctx, x, y):
    """GradAlign (Andriushchenko & Flammarion 2020): CE on the FGSM adversary (zero start, step eps) plus
    align_lam * (1 - cos(grad_x J(x), grad_x J(x + eta))), eta ~ U(-eps, eps). The first gradient is the one the
    FGSM step used (a constant); the second is differentiated through (double back-propagation). Both are taken
    with the model in train mode, as in their code (``model.train()`` throughout their loop): on a batch-norm
    network an eval-mode first gradient against a train-mode second one differs by the normalisation alone, and
    the regulariser would stop measuring local linearity (each of the step's three passes updates batch-norm
    running statistics, as theirs do). x + eta is not clipped to [0, 1], as in their code.

    The step always runs in fp32, whatever ``precision`` says: under bf16 autocast the cosine of two small input
    gradients and its second-order backward are too coarse to train on (MNIST, eps 0.3, one epoch, lambda 1: PGD-10
    probe 5.5 % with bf16 against 39 % in fp32; README, "Beyond the paper")."""
    cfg, model, eps = ctx.cfg, ctx.model, ctx.eps
    with torch.autocast(x.device.type, enabled=False):
        with attacking(model):      # weights frozen: this pass needs input gradients only
            model.train()           # ... but in train mode, like the second gradient
            g1 = input_grad(model, x, y)
        x_adv = (x + eps * g1.sign()).clamp(0, 1)
        ce = _ce(ctx.net, x_adv, y)
        g2 = input_grad(model, x + uniform_noise(x, eps, ctx.generator), y, create_graph=True)
        reg = gradient_misalignment(g1, g2)
    return ce + cfg.align_lam * reg, {"ce": ce, "reg": reg}


# The steps that compute in fp32 whatever ``precision`` says (they switch autocast off inside): a cost measured
# "in bf16" times these in fp32.
FP32_STEPS = frozenset({"gradalign"})

STEPS: dict[str, Callable] = {"normal": step_normal, "fgsm": step_fgsm, "rfgsm": step_rfgsm,
                              "fgsm_rfgsm": step_fgsm_rfgsm, "eat": step_eat, "pgd": step_pgd,
                              "proposed": step_proposed, "fgsm_rs": step_fgsm_rs, "nfgsm": step_nfgsm,
                              "gradalign": step_gradalign}


# --- one iteration, and how it runs ---------------------------------------------------------------------------------
def make_model(cfg: TrainConfig, dev):
    """A fresh model for ``cfg`` on ``dev`` (channels_last if asked) and its optimizer (``cfg.optimizer``: SGD with
    momentum, or Adam with its default betas)."""
    model = build(cfg.model, cfg.dataset, cfg.normalize).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, opt


def cyclic_lr_factor(cfg: TrainConfig, iteration: int, total: int) -> float:
    """The cyclic schedule's factor of ``cfg.lr`` for the optimizer step after ``iteration`` finished ones, out of
    ``total``: triangular in t = (iteration + 1) / total, 0 -> 1 at ``cfg.lr_peak`` -> 0 at the end (Wong et al.
    2020 evaluate their schedule at epoch + (i + 1) / batches per epoch, the same point)."""
    t = min(1.0, (iteration + 1) / total)
    return t / cfg.lr_peak if t <= cfg.lr_peak else max(0.0, (1.0 - t) / (1.0 - cfg.lr_peak))


def make_scheduler(cfg: TrainConfig, opt, iters_per_epoch: int):
    """The learning-rate schedule, stepped once per iteration: MultiStepLR at ``lr_milestones`` (``"step"``), or
    the triangular :func:`cyclic_lr_factor` (``"cyclic"``). Its state is in the checkpoint, so a resumed run goes
    on with the same rates."""
    if cfg.lr_schedule == "cyclic":
        total = max(1, cfg.epochs * iters_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: cyclic_lr_factor(cfg, i, total))
    return torch.optim.lr_scheduler.MultiStepLR(opt, _milestones(cfg, iters_per_epoch), gamma=cfg.lr_gamma)


def eps_warmup_factor(cfg: TrainConfig, iteration: int, iters_per_epoch: int) -> float:
    """The factor of the training eps at the step after ``iteration`` finished ones: ``min(1, iteration / W)`` with
    W = ``eps_warmup_epochs`` x iterations per epoch (0 at the first step, the full eps from iteration W on, as in
    Andriushchenko & Flammarion's eps ramp); exactly 1.0 when the warm-up is off. A function of the iteration
    count alone, so a resumed run ramps exactly as an uninterrupted one."""
    span = cfg.eps_warmup_epochs * iters_per_epoch
    if span <= 0 or iteration >= span:
        return 1.0
    return iteration / span


def eps_at(cfg: TrainConfig, iteration: int, iters_per_epoch: int) -> float:
    """The training eps used at the step after ``iteration`` finished ones (see :func:`eps_warmup_factor`)."""
    f = eps_warmup_factor(cfg, iteration, iters_per_epoch)
    return cfg.eps if f == 1.0 else cfg.eps * f


def optimizer_step(step_fn, ctx: StepContext, opt, x, y, dev, autocast_cache: bool = True):
    """One training iteration: the method's step under the configured precision, backward, optimizer update."""
    cfg = ctx.cfg
    if cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(dev, cfg.precision, autocast_cache):
        loss, parts = step_fn(ctx, x, y)
    opt.zero_grad(set_to_none=True)
    (loss if ctx.loss_scale == 1.0 else loss * ctx.loss_scale).backward()
    opt.step()
    return loss, parts


def compile_pays(cfg: TrainConfig, dev) -> bool:
    """Whether compiling the model is worth its start-up cost: on a GPU for the CIFAR-10 networks (ResNet-34
    proposed step 1.4x faster, ~40 s to compile; BENCHMARKS.md). Not for MNIST's LeNet+ (a few seconds saved per
    run) and not on the CPU (compiling takes minutes there and the steps were not faster)."""
    return resolve_device(dev).type == "cuda" and cfg.dataset == "cifar10"


def make_step(ctx: StepContext, opt, dev, *, graphs: Optional[bool] = None, compiled: Optional[bool] = None) -> Step:
    """The training iteration of ``ctx.cfg.method`` as the loop runs it: ``step(x, y) -> (loss, parts)``, a
    :class:`runtime.Step`.

    ``graphs`` (default ``cfg.cuda_graphs``): replay it as a CUDA graph on a GPU (never for EAT, which picks its
    source on the host, nor with Adam or the cyclic schedule, whose learning rate changes every step and would be
    captured again each time; the loop also runs the eps warm-up's steps uncaptured). ``compiled`` (default
    ``cfg.compile_model``): run it on ``torch.compile(model)``; the model in ``ctx`` stays the plain one
    (checkpoints, probes)."""
    cfg = ctx.cfg
    step_fn = STEPS[cfg.method]
    graphs = ((cfg.cuda_graphs if graphs is None else graphs) and dev.type == "cuda" and cfg.method != "eat"
              and cfg.optimizer == "sgd" and cfg.lr_schedule == "step")
    compiled = cfg.compile_model if compiled is None else compiled

    def iteration(model, x, y, in_graph: bool):
        # inside a CUDA graph the noise comes from the default CUDA generator, which each replay advances
        c = ctx if model is ctx.model and not in_graph else dataclasses.replace(
            ctx, model=model, generator=None if in_graph else ctx.generator)
        return optimizer_step(step_fn, c, opt, x, y, dev, autocast_cache=not in_graph)

    return Step(iteration, ctx.model, opt, dev, graphs=graphs, compiled=compiled)


def standalone_step(cfg: TrainConfig, dev, *, seed: int = 0, graphs: bool = False, compiled: bool = False) -> Step:
    """``cfg``'s training iteration outside a run, for measuring its cost (benchmarks, ``gl.lab.estimate_seconds``):
    a fresh model and optimizer, the attack generator seeded with ``seed``, and for EAT ``max(1, len(eat_sources))``
    freshly initialised static sources of the same architecture (a source's weights do not change the step's cost).
    ``step(x, y) -> (loss, parts)``; ``step.model`` is the model it trains."""
    model, opt = make_model(cfg, dev)
    sources = [build(cfg.model, cfg.dataset, cfg.normalize).to(dev).eval().requires_grad_(False)
               for _ in range(max(1, len(cfg.eat_sources)))] if cfg.method == "eat" else []
    ctx = StepContext(model, cfg, torch.Generator(device=dev).manual_seed(seed), sources)
    return make_step(ctx, opt, dev, graphs=graphs, compiled=compiled)


# --- run state ------------------------------------------------------------------------------------------------------
@dataclass
class RunState:
    """Everything a run has done so far, saved in its checkpoint and restored by ``resume``."""
    epoch: int = 0                                  # finished epochs
    iteration: int = 0                              # finished iterations
    history: list = field(default_factory=list)     # rows: "log" every log_every iterations, "epoch" at epoch ends
    epoch_times: list = field(default_factory=list)  # training seconds of each finished epoch (probes excluded)
    best_model: Optional[dict] = None               # state_dict of the selected epoch (select_best)
    best_epoch: Optional[int] = None
    best_score: float = -1.0                        # its validation I-FGSM-3 accuracy (%)
    snapshots: dict = field(default_factory=dict)   # iteration -> state_dict, from snapshot_at

    FIELDS = ("epoch", "iteration", "history", "epoch_times", "best_model", "best_epoch", "best_score", "snapshots")

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "RunState":
        return cls(**{k: ckpt[k] for k in cls.FIELDS if ckpt.get(k) is not None})

    def to_checkpoint(self) -> dict:
        cpu = lambda sd: None if sd is None else {k: v.to("cpu") for k, v in sd.items()}  # noqa: E731
        return {**{k: getattr(self, k) for k in self.FIELDS}, "best_model": cpu(self.best_model)}


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
    diff = TrainConfig.from_dict(ckpt["config"]).differences(cfg)
    if diff:
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


def epoch_order(cfg: TrainConfig, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``'s data order (and augmentation): a function of the seed and the epoch only,
    so a resumed run sees the very batches an uninterrupted one would."""
    return torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)


# --- the loop -------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, out=None, *, device="auto", data_dir=None, callback: Optional[Callable] = None,
          stop=None, resume: bool = False, overwrite: bool = False, progress=True,
          snapshot_at: tuple = ()) -> TrainResult:
    """Train ``cfg.model`` with ``cfg.method``.

    ``out``: run directory (checkpoint/config/history/metrics written atomically at every epoch end); ``None`` keeps
    everything in memory. ``callback(row)`` receives every history row as it is made (``row["event"]`` is "log",
    "epoch" or "end"); it may return ``True`` to stop. ``stop`` is anything with ``is_set()`` (a
    ``threading.Event``) checked every iteration. ``resume=True`` continues the run in ``out`` (or returns it at
    once when it is complete). ``snapshot_at``: iterations after which a copy of the weights is kept (in the
    checkpoint too): ``load_model(run, which="iter:200")`` returns it, e.g. the early model of the paper's Fig. 1.
    ``progress``: a tqdm bar per epoch (``True``), none (``False``), or a label for the bar (a string, kept after
    the run; ``gl.lab.cached_train`` passes its time estimate).

    Inside a ``torch.distributed`` process group (``torchrun``), every rank trains its share of each global batch
    of ``cfg.batch_size`` under DistributedDataParallel and rank 0 alone probes, selects and writes (see
    :class:`_Run`).
    """
    if not isinstance(cfg, TrainConfig):
        raise GmregError("cfg must be a TrainConfig")
    dev = resolve_device(device)
    rank, size = world()
    parallel = distributed()
    if parallel:
        cfg = _data_parallel_config(cfg, size, dev)
    out = Path(out) if out is not None else None
    ckpt = _agree_on_run_dir(out, cfg, resume, overwrite, rank, size, dev)
    cfg = _concrete_precision(cfg, ckpt, dev)
    if ckpt is not None and ckpt.get("complete"):
        return _result_from_checkpoint(ckpt, cfg, out, dev)

    train_set, val_set = _datasets(cfg, data_dir, dev)
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())

    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # our seeding never disturbs the caller's global RNG
        torch.manual_seed(cfg.seed)
        model, opt = make_model(cfg, dev)
        sched = make_scheduler(cfg, opt, train_set.num_batches(cfg.batch_size))
        gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        host_gen = torch.Generator().manual_seed(cfg.seed + 2)
        state = RunState()
        if ckpt is not None:
            state = _restore(ckpt, model, opt, sched, gen, host_gen, dev)
            log.info("resuming %s at epoch %d", out, state.epoch)
        ctx = StepContext(model, cfg, gen, _load_sources(cfg, dev) if cfg.method == "eat" else [], host_gen)
        if parallel:
            ctx.loss_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)
        run = _Run(cfg, ctx, opt, sched, state, train_set, val_set.tensors(cfg.probe_size),
                   val_set.tensors(cfg.select_size), out, dev, callback, stop, progress and rank == 0,
                   set(snapshot_at), rank=rank, size=size, parallel=parallel)
        with cudnn_autotune(dev):
            while state.epoch < cfg.epochs and not run.stopped:
                run.train_epoch()
        return run.result()


def _concrete_precision(cfg: TrainConfig, ckpt: Optional[dict], dev) -> TrainConfig:
    """``cfg`` with "auto" replaced by the precision this run computes in: the checkpoint's when resuming (a run
    keeps the precision it started with), else what :func:`runtime.resolve_precision` picks for ``dev``. The run
    directory's config.json, checkpoint and metrics.json record the concrete one."""
    if cfg.precision != "auto":
        return cfg
    if ckpt is not None:
        return cfg.replace(precision=ckpt["config"].get("precision", "bf16"))   # older runs: bf16 was the default
    return cfg.replace(precision=resolve_precision("auto", dev))


def _datasets(cfg: TrainConfig, data_dir, dev):
    """The training images (the first ``limit`` of the split) and the validation hold-out (the training set itself
    when ``val_size`` is 0), on ``dev``."""
    full = data_mod.load(cfg.dataset, "train", data_dir, device=dev)
    if cfg.val_size == 0:
        return full.head(cfg.limit), full
    train_set, val_set = data_mod.train_val_split(full, cfg.val_size, cfg.seed)
    return train_set.head(cfg.limit), val_set


def _data_parallel_config(cfg: TrainConfig, size: int, dev) -> TrainConfig:
    """The config as DDP runs it: the global batch must split evenly over the ranks, and CUDA graphs and
    compilation are off (a graph cannot capture DDP's gradient all-reduce; compiling DDP is not tested here)."""
    if cfg.batch_size % size:
        raise GmregError(f"batch_size {cfg.batch_size} does not split over {size} processes; use a multiple of "
                         f"{size} (the global batch stays batch_size, each rank takes batch_size / {size})")
    if (cfg.cuda_graphs and dev.type == "cuda") or cfg.compile_model:
        log.warning("data-parallel training (%d process(es)): CUDA graphs and torch.compile are turned off", size)
    return cfg.replace(cuda_graphs=False, compile_model=False)


def _agree_on_run_dir(out, cfg, resume, overwrite, rank, size, dev) -> Optional[dict]:
    """Rank 0 checks the run directory (:func:`_prepare_run_dir`); under data parallelism every rank then stops
    with rank 0's error, or loads the same checkpoint."""
    ckpt, err = None, None
    if rank == 0 and out is not None:
        try:
            ckpt = _prepare_run_dir(out, cfg, resume, overwrite)
        except GmregError as e:
            if not distributed():
                raise
            err = str(e)
    if not distributed():
        return ckpt
    err = broadcast_error(err)
    if err is not None:
        raise GmregError(err)
    if all_max(int(ckpt is not None), dev) and rank > 0:
        ckpt = load_checkpoint(out / CHECKPOINT)
    return ckpt


def _restore(ckpt, model, opt, sched, gen, host_gen, dev) -> RunState:
    """Load a checkpoint's weights, optimizer, schedule and every generator; return its run state."""
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["rng"]["noise"])
    if ckpt["rng"].get("host") is not None:
        host_gen.set_state(ckpt["rng"]["host"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if dev.type == "cuda" and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], dev)
    return RunState.from_checkpoint(ckpt)


@dataclass
class _Run:
    """One training run in progress: the loop over an epoch's batches, and what happens at an epoch's end.

    Data parallel (``size`` > 1 processes): every rank walks the same seeded order of global batches and trains on
    its slice of each (DDP averages the gradients; a slice's loss is weighted by its share of the batch, so an
    uneven last batch still gives the global mean); attack noise and dropout come from per-rank generators seeded
    from (seed, rank, epoch), so a run resumes under any number of processes. The ranks agree on NaN and stop at
    every log row and epoch end; rank 0 alone probes, selects, calls back and writes."""
    cfg: TrainConfig
    ctx: StepContext
    opt: torch.optim.Optimizer
    sched: object
    state: RunState
    train_set: object
    probe_set: tuple
    select_set: tuple
    out: Optional[Path]
    dev: torch.device
    callback: Optional[Callable]
    stop: object
    progress: object            # False, True, or the bar's label
    snapshot_at: set
    stopped: bool = False
    rank: int = 0
    size: int = 1
    parallel: bool = False                # under torchrun (DDP), whatever the number of processes

    def __post_init__(self):
        self.step = make_step(self.ctx, self.opt, self.dev)
        self.iters_per_epoch = self.train_set.num_batches(self.cfg.batch_size)
        self.lead = self.rank == 0

    def _emit(self, row) -> None:
        self.state.history.append(row)
        if self.lead and self.callback is not None and self.callback(row) is True:
            self.stopped = True

    def _stop_asked(self, agree: bool = False) -> bool:
        """Whether to stop now: the stop event or a callback; ``agree``: every rank learns of it (a collective)."""
        if self.stop is not None and self.stop.is_set():
            self.stopped = True
        if agree and self.size > 1:
            self.stopped = bool(all_max(int(self.stopped), self.dev))
        return self.stopped

    def _seed_epoch(self, epoch: int) -> None:
        if self.parallel:
            base = self.cfg.seed * 1_000_003 + 7_919 * self.rank + epoch
            self.ctx.generator.manual_seed(base + 1)
            self.ctx.host_generator.manual_seed(base + 2)
            torch.manual_seed(base)

    def _my_part(self, x, y):
        """This rank's slice of a global batch and its loss weight (None: nothing for some rank; skipped)."""
        if self.size == 1:
            return x, y
        n = len(y)
        if n < self.size:
            log.warning("a global batch of %d images cannot feed %d processes: skipped", n, self.size)
            return None
        part = torch.tensor_split(torch.arange(n, device=y.device), self.size)[self.rank]
        self.ctx.loss_scale = len(part) * self.size / n
        return x[part], y[part]

    def train_epoch(self) -> None:
        """The batches of the next epoch; then, unless stopped, :meth:`end_epoch`."""
        from tqdm.auto import tqdm

        cfg, state, epoch = self.cfg, self.state, self.state.epoch
        self._seed_epoch(epoch)
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.bad_at = 0, torch.full((), -1, dtype=torch.long, device=self.dev)
        self.t_epoch, self.t_probe = time.perf_counter(), 0.0
        desc = f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}"
        if isinstance(self.progress, str):          # a label from the caller, e.g. "trains pgd: about 4 min here"
            desc = self.progress + (f" (epoch {epoch + 1}/{cfg.epochs})" if cfg.epochs > 1 else "")
        bar = tqdm(total=self.iters_per_epoch, desc=desc, leave=isinstance(self.progress, str),
                   disable=not self.progress)
        try:
            batches = self.train_set.batches(cfg.batch_size, generator=epoch_order(cfg, epoch), augment=cfg.augment)
            for b, (x, y) in enumerate(batches, 1):
                mine = self._my_part(x, y)
                if mine is not None:
                    self._iteration(*mine)
                bar.update(1)
                at_row = state.iteration % cfg.log_every == 0 or b == self.iters_per_epoch
                if at_row:
                    row = self._log_row(epoch)
                    if self.lead:
                        bar.set_postfix(loss=f"{row['loss']:.3f}", pgd=f"{row['acc_pgd']:.0f}%")
                        self._emit(row)
                if self._stop_asked(agree=at_row):
                    return
        finally:
            bar.close()
        self.end_epoch(time.perf_counter() - self.t_epoch - self.t_probe)

    def _iteration(self, x, y) -> None:
        """One optimizer step; its metrics stay on the device until the next log row."""
        state, step = self.state, self.step
        self.ctx.warmup = eps_warmup_factor(self.cfg, state.iteration, self.iters_per_epoch)
        if self.ctx.warmup < 1.0 and step.graphs:    # a CUDA graph bakes eps in: warm-up steps run uncaptured
            loss, parts = step.iteration(step.fast_model if step.shape in (None, x.shape) else step.model, x, y,
                                         False)
        else:
            loss, parts = step(x, y)
        self.sched.step()
        it = state.iteration
        self.bad_at = torch.where((self.bad_at < 0) & ~torch.isfinite(loss.detach()),
                                  torch.full_like(self.bad_at, it), self.bad_at)
        for k, v in {"loss": loss, **parts}.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.count += 1
        state.iteration = it + 1
        if state.iteration in self.snapshot_at:
            state.snapshots[state.iteration] = {k: v.detach().to("cpu", copy=True)
                                                for k, v in self.ctx.model.state_dict().items()}

    def _log_row(self, epoch: int) -> Optional[dict]:
        """A "log" row (rank 0): mean training metrics since the last row and the probe. Every rank stops with
        the same error when any of them saw a NaN/Inf loss."""
        cfg, state = self.cfg, self.state
        bad = all_max(int(self.bad_at), self.dev)
        if bad >= 0:
            raise TrainingDiverged(
                f"training loss became NaN/Inf at iteration {bad} (epoch {epoch + 1}); "
                f"the last good checkpoint is kept" + (f" in {self.out}" if self.out else "") +
                "; lower the learning rate or lam")
        if not self.lead:
            self.sums, self.count = {}, 0
            return None
        t0 = time.perf_counter()
        with attacking(self.ctx.model), autocast(self.dev, cfg.precision):   # eval mode: no dropout, no BN update
            probed = probe(self.ctx.model, *self.probe_set, cfg.eps, cfg.alpha, cfg.probe_pgd_steps, seed=cfg.seed)
        row = {"event": "log", "iteration": state.iteration, "epoch": state.iteration / self.iters_per_epoch,
               "lr": self.opt.param_groups[0]["lr"], **{k: float(v) / self.count for k, v in self.sums.items()},
               **probed}
        if cfg.eps_warmup_epochs > 0:    # the eps of the row's last step (a function of the iteration count)
            row["eps_train"] = eps_at(cfg, state.iteration - 1, self.iters_per_epoch)
        self.sums, self.count = {}, 0
        sync(self.dev)
        self.t_probe += time.perf_counter() - t0
        row["train_time"] = sum(state.epoch_times) + (time.perf_counter() - self.t_epoch - self.t_probe)
        return row

    def end_epoch(self, seconds: float) -> None:
        """Time the epoch, select the model (validation I-FGSM-3), emit the "epoch" row, save the run directory."""
        cfg, state = self.cfg, self.state
        sync(self.dev)
        state.epoch_times.append(seconds)
        score = None
        if cfg.select_best and self.lead:
            score = attack_stats(self.ctx.model, Attack("ifgsm", steps=3), *self.select_set, cfg.eps,
                                 precision=cfg.precision)["acc"]
            if score > state.best_score:
                state.best_score, state.best_epoch = score, state.epoch + 1
                state.best_model = {k: v.detach().clone() for k, v in self.ctx.model.state_dict().items()}
        state.epoch += 1
        if self.lead:
            self._emit({"event": "epoch", "iteration": state.iteration, "epoch": state.epoch,
                        "epoch_seconds": seconds, "val_ifgsm3": score})
            if self.out is not None:
                _save(self.out, cfg, self.ctx, self.opt, self.sched, state, self.dev,
                      complete=state.epoch == cfg.epochs)
        self._stop_asked(agree=True)

    def result(self) -> TrainResult:
        """Write the final metrics, pick the selected model, send the "end" row."""
        cfg, state, model = self.cfg, self.state, self.ctx.model
        metrics = _metrics(cfg, state, self.dev, complete=state.epoch == cfg.epochs)
        if self.out is not None and self.lead:
            write_json(self.out / "metrics.json", metrics)
        model.eval()
        selected = model
        if state.best_model is not None and not self.stopped:
            selected = build(cfg.model, cfg.dataset, cfg.normalize).to(self.dev)
            selected.load_state_dict(state.best_model)
            selected.eval()
        if self.callback is not None and self.lead:
            self.callback({"event": "end", "iteration": state.iteration, "epoch": state.epoch,
                           "stopped": self.stopped})
        return TrainResult(selected, state.history, metrics, cfg, self.out, last_model=model, stopped=self.stopped,
                           snapshots=state.snapshots)


def _metrics(cfg, state: RunState, dev, complete: bool) -> dict:
    times = state.epoch_times
    return {"complete": complete, "epochs_done": state.epoch, "iterations": state.iteration,
            "seconds_per_epoch": (sum(times) / len(times)) if times else None, "epoch_seconds": times,
            "train_seconds": sum(times), "best_epoch": state.best_epoch,
            "best_val_ifgsm3": state.best_score if state.best_epoch else None,
            "device": str(dev), "precision": cfg.precision, "environment": environment_info(dev),
            "config": cfg.to_dict()}


def _save(out, cfg, ctx, opt, sched, state: RunState, dev, complete: bool):
    rng = {"torch": torch.get_rng_state(), "noise": ctx.generator.get_state(),
           "host": ctx.host_generator.get_state(),
           "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
    model_state = {k: v.detach().to("cpu") for k, v in ctx.model.state_dict().items()}
    save_checkpoint(out / CHECKPOINT, {
        "arch": cfg.model, "dataset": cfg.dataset, "config": cfg.to_dict(), "model": model_state,
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng, "complete": complete,
        **state.to_checkpoint()})
    write_csv(out / "history.csv", state.history)
    write_json(out / "metrics.json", _metrics(cfg, state, dev, complete))


def _result_from_checkpoint(ckpt, cfg, out, dev) -> TrainResult:
    model = load_model(out, device=dev)
    last = load_model(out, which="last", device=dev)
    metrics = read_json(out / "metrics.json") if (out / "metrics.json").exists() else {}
    return TrainResult(model, ckpt["history"], metrics, cfg, out, last_model=last,
                       snapshots=ckpt.get("snapshots") or {})

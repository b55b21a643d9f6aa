"""How computations run on a device: device choice, precision, synchronisation, cuDNN autotuning, and a training
iteration executed eagerly, compiled, as a CUDA graph, or compiled inside a CUDA graph.

Every layer of the package needs some of this (training, evaluation, diagnostics, the benchmark), so it lives here,
below all of them: this module imports nothing else from the package but :mod:`errors`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from typing import Callable

import torch

from .errors import GmregError

log = logging.getLogger(__name__)


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` or a ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise GmregError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise GmregError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


# --- precision --------------------------------------------------------------------------------------------------
ENV_PRECISION = "GMREG_PRECISION"   # "fp32" / "bf16": what "auto" resolves to on this machine (e.g. to teach or test
                                    # the other kind of CPU); unset: decided from what torch reports


@functools.lru_cache(maxsize=None)
def _cpu_capabilities() -> dict:
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:  # an older torch or an unknown CPU: nothing is known, so nothing is native
        return {}


def cpu_description() -> str:
    """The CPU as a benchmark or a notebook header names it: its name, cores, and its bf16 units, e.g.
    ``"Intel Xeon, 2 cores, AVX-512-BF16 yes, AMX-BF16 no"``."""
    caps = _cpu_capabilities()
    name = caps.get("cpu_name") or platform.processor() or platform.machine()
    cores = caps.get("num_logical_cores") or os.cpu_count()
    yes = lambda k: "yes" if caps.get(k) else "no"  # noqa: E731
    return f"{name}, {cores} cores, AVX-512-BF16 {yes('avx512_bf16')}, AMX-BF16 {yes('amx_bf16')}"


def bf16_pays(device) -> bool:
    """Whether bf16 autocast is native *and faster than fp32* on ``device``, from what torch reports: a CUDA GPU
    with bf16 (``torch.cuda.is_bf16_supported``), or a CPU with AMX-BF16 tiles. AVX-512-BF16 alone does not count:
    on this project's Xeon (AVX-512-BF16, no AMX) LeNet+'s proposed step ran 1.37x *slower* under bf16 autocast
    than in fp32 (``gmreg-lab bench`` prints both; BENCHMARKS.md), and CPUs without any bf16 unit emulate it about
    ten times slower."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    return bool(_cpu_capabilities().get("amx_bf16"))


@functools.lru_cache(maxsize=None)
def _auto_precision(device_type: str) -> str:
    forced = os.environ.get(ENV_PRECISION, "").strip()
    if forced:
        if forced not in ("fp32", "bf16"):
            raise GmregError(f"{ENV_PRECISION}={forced!r}: must be fp32 or bf16 (or unset: decided by the hardware)")
        return forced
    chosen = "bf16" if bf16_pays(torch.device(device_type)) else "fp32"
    log.info("precision auto -> %s on %s", chosen, device_type)
    return chosen


def resolve_precision(precision: str, device) -> str:
    """The precision a computation on ``device`` runs in: ``"fp32"`` and ``"bf16"`` as they are; ``"auto"`` (every
    default of the kit) is bf16 autocast where :func:`bf16_pays`, fp32 elsewhere, decided once per process and
    device type (``$GMREG_PRECISION`` overrides the decision)."""
    if precision == "auto":
        return _auto_precision(torch.device(device).type)
    if precision not in ("fp32", "bf16"):
        raise GmregError(f"unknown precision {precision!r}; valid: auto, fp32, bf16")
    return precision


def autocast(device: torch.device, precision: str, cache: bool = True):
    """bf16 autocast, or nothing for fp32. ``cache=False``: no weight-cast cache, as a CUDA graph needs (its casts
    would otherwise be baked into the graph); a capture turns it off in any case."""
    if resolve_precision(precision, device) == "bf16":
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache and not capturing)
    return contextlib.nullcontext()


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): before reading a clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def cudnn_autotune(device):
    """cuDNN picks its fastest kernels per shape while training (fixed batch shapes), and the setting is restored
    afterwards: evaluation attacks shrink their batches as examples break, and autotuning every new shape would
    cost far more than it saves."""
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = prev or torch.device(device).type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


# torch.compile's backend for ``compile_model``: inductor (generated kernels). The CPU test of the kit's compile
# plumbing swaps in "aot_eager" (same graphs and autograd, no kernel generation): inductor's kernels are torch's
# to test.
COMPILE_BACKEND = "inductor"


def compile_for_training(model):
    """``torch.compile`` of ``model`` for the training steps (same parameters, shapes fixed): the compiler fuses
    the batch-norm, ReLU and residual passes around each convolution that eager mode runs one by one. The first
    steps compile (seconds for LeNet+, about a minute per mode for ResNet-34)."""
    return torch.compile(model, dynamic=False, backend=COMPILE_BACKEND)


class Step:
    """One training iteration, ``step(x, y) -> (loss, parts)``, run the fastest way asked for.

    ``iteration(model, x, y, in_graph)`` does the forward passes, the backward pass and the optimizer update on
    ``model`` (``in_graph``: it is being captured into a CUDA graph, so it must draw its randomness from the
    default CUDA generator, which a replay advances, and use no autocast weight cache).

    * ``compiled``: ``iteration`` runs on ``torch.compile(model)`` (same parameters);
    * ``graphs`` (CUDA only): the iteration is captured once as a CUDA graph and replayed: one launch instead of
      hundreds. The graph bakes in the batch shape and the learning rate, so it is captured again when the
      learning rate changes. Capture needs warm-up iterations: they run on the real batch and are then undone
      (weights, buffers, optimizer state and the CUDA RNG restored in place), so the trajectory is the eager one
      up to the order of floating-point sums. A capture error falls back to uncaptured steps, logged.

    One rule for every mode: the fast path serves the first batch shape it sees; a batch of another shape (an
    epoch's short last batch) runs eagerly on the plain model instead of compiling or capturing again.
    """

    def __init__(self, iteration: Callable, model, opt, device, *, graphs: bool = False, compiled: bool = False):
        self.iteration, self.model, self.opt, self.dev = iteration, model, opt, torch.device(device)
        self.fast_model = compile_for_training(model) if compiled else model
        self.graphs = bool(graphs) and self.dev.type == "cuda"
        self.compiled = bool(compiled)
        self.shape = None          # the batch shape the fast path serves
        self.graph, self.lr_key, self.failed = None, None, False

    @property
    def mode(self) -> str:
        return "+".join(m for m, on in (("compiled", self.compiled), ("graph", self.graphs and not self.failed))
                        if on) or "eager"

    def __call__(self, x, y):
        if self.shape is None:
            self.shape = x.shape
        if x.shape != self.shape:
            return self.iteration(self.model, x, y, False)
        if not self.graphs or self.failed:
            return self.iteration(self.fast_model, x, y, False)
        key = tuple(g["lr"] for g in self.opt.param_groups)
        if key != self.lr_key:
            try:
                self._capture(x, y)
            except Exception as e:  # any capture problem: keep training, uncaptured
                log.warning("CUDA graph capture failed (%s); training continues without graphs", e)
                self.failed = True
                return self.iteration(self.fast_model, x, y, False)
            self.lr_key = key
        self.sx.copy_(x)
        self.sy.copy_(y)
        self.graph.replay()
        return self.out

    # --- CUDA graph capture -----------------------------------------------------------------------------------------
    def _optimizer_tensors(self) -> list:
        """(parameter, state key) of every tensor in the optimizer's state, e.g. SGD's momentum buffers."""
        return [(p, k) for g in self.opt.param_groups for p in g["params"]
                for k, v in self.opt.state.get(p, {}).items() if torch.is_tensor(v)]

    def _capture(self, x, y):
        model, opt, dev = self.model, self.opt, self.dev
        self.graph = None
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_opt = {(id(p), k): opt.state[p][k].clone() for p, k in self._optimizer_tensors()}
        saved_rng = torch.cuda.get_rng_state(dev)
        self.sx, self.sy = x.clone(), y.clone()
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        try:
            with torch.cuda.stream(side):
                for _ in range(2):   # the capture's settings: a compiled model must not recompile inside it
                    self.iteration(self.fast_model, self.sx, self.sy, True)
        finally:   # undo the warm-up in place (the graph will hold these very tensors), also if it failed
            torch.cuda.current_stream(dev).wait_stream(side)
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(saved_model[k])
                for p, k in self._optimizer_tensors():
                    # state made by the warm-up itself is zeroed: for SGD a zero momentum buffer acts as none
                    old = saved_opt.get((id(p), k))
                    opt.state[p][k].copy_(old) if old is not None else opt.state[p][k].zero_()
            torch.cuda.set_rng_state(saved_rng, dev)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, parts = self.iteration(self.fast_model, self.sx, self.sy, True)
        # detached views of the graph's outputs (a replay refreshes them): holding the captured autograd graph would
        # keep its AccumulateGrad nodes, made on the capture stream, alive into later eager steps
        self.out = (loss.detach(), {k: v.detach() for k, v in parts.items()})
        self.graph = graph


# --- data-parallel training (torchrun) ------------------------------------------------------------------------------
def distributed() -> bool:
    """Whether this process is one rank of a ``torch.distributed`` process group (``torchrun``), of any size."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: (0, 1) unless a ``torch.distributed`` process group is running."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)


def init_distributed(device="auto") -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL on GPUs, gloo on the CPU. Returns this rank's device (GPU
    ``LOCAL_RANK`` on a multi-GPU node)."""
    import os

    import torch.distributed as dist

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return dev


def all_max(value: int, device) -> int:
    """The largest ``value`` over all ranks (itself when not distributed)."""
    import torch.distributed as dist

    if not distributed():
        return value
    t = torch.tensor([value], dtype=torch.long, device=device if torch.device(device).type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def broadcast_error(message: str | None) -> str | None:
    """Rank 0's error message (or None) on every rank, so that all ranks stop with the same clear line."""
    import torch.distributed as dist

    if not distributed():
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]

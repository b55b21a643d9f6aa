"""`TrainConfig`: every setting of a training run, validated in one place.

Defaults that depend on the dataset are written as ``None`` and resolved when the config is made, so the saved config
always holds concrete numbers. MNIST defaults follow the authors' released code for this method (REPRODUCTION.md
lists every setting the paper leaves out and where the kit's value comes from); CIFAR-10 defaults the same source.
Variants are made with :func:`dataclasses.replace`, which re-runs the validation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

from .errors import GmregError

DATASETS = ("mnist", "cifar10")
METHODS = ("normal", "fgsm", "rfgsm", "fgsm_rfgsm", "eat", "pgd", "proposed", "fgsm_rs", "nfgsm", "gradalign")
PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cyclic")

# Dataset-dependent defaults (pixel units for every epsilon / step size).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": dict(model="lenet_plus", eps=0.3, alpha=0.01, epochs=20, batch_size=32, lr=0.01,
                  lr_milestones=(5, 10, 15),
                  pgd_steps=40, pgd_step_size=0.01, val_size=10_000, align_lam=1.0),
    "cifar10": dict(model="resnet34", eps=8 / 255, alpha=2 / 255, epochs=100, batch_size=64, lr=0.1,
                    lr_milestones=(25, 50, 75),
                    pgd_steps=7, pgd_step_size=2 / 255, val_size=10_000, align_lam=0.2),
}


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise GmregError(msg)


def check_choice(kind: str, value: str, valid) -> None:
    """Raise a GmregError listing the valid names when ``value`` is not one of them."""
    _check(value in valid, f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def check_eps(eps: float, name: str = "eps") -> None:
    _check(isinstance(eps, (int, float)) and math.isfinite(eps) and 0.0 <= eps <= 1.0,
           f"{name} must be a number in [0, 1] (pixel units), got {eps!r}")


def _pos_int(value, name: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
           f"{name} must be an integer >= 1, got {value!r}")


RUNTIME_FIELDS = ("cuda_graphs", "compile_model")   # how a step runs, not what it computes


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist"
    model: Optional[str] = None             # architecture name; None -> lenet_plus (MNIST) / resnet34 (CIFAR-10)
    method: str = "proposed"                # one of METHODS
    eps: Optional[float] = None             # L-inf radius of training adversaries, pixels in [0, 1]; 0.3 / 8/255
    alpha: Optional[float] = None           # R-FGSM noise size, pixels (Eq. 2); 0.01 (MNIST) / 2/255 (CIFAR-10)
    lam: float = 5.0                        # lambda of Eq. 8 (only for method "proposed"; 0 = the ablation)
    epochs: Optional[int] = None            # passes over the training set; 20 / 100
    batch_size: Optional[int] = None        # clean samples per minibatch (m of Algorithm 1); 32 / 64
    lr: Optional[float] = None              # initial SGD learning rate; 0.01 / 0.1
    momentum: float = 0.9                   # SGD momentum
    weight_decay: float = 5e-4              # L2 weight decay
    lr_milestones: Optional[tuple] = None   # epochs after which lr is multiplied by lr_gamma; (5,10,15) / (25,50,75)
    lr_gamma: float = 0.2                   # step-policy factor (÷5)
    lr_schedule: str = "step"               # "step": x lr_gamma after each of lr_milestones; "cyclic": triangular,
                                            #   0 -> lr at lr_peak of the run -> 0, set every iteration (Wong et al.
                                            #   2020's MNIST recipe; lr_milestones and lr_gamma are then unused)
    lr_peak: float = 0.4                    # cyclic: where lr peaks, as a fraction of the run (Wong et al.: 2/5)
    optimizer: str = "sgd"                  # "sgd" (with momentum) or "adam" (default betas; momentum unused,
                                            #   weight_decay is Adam's L2 term; Wong et al.'s MNIST recipe: Adam, 0)
    pgd_steps: Optional[int] = None         # PGD-AT inner steps; 40 (MNIST) / 7 (CIFAR-10)
    pgd_step_size: Optional[float] = None   # PGD-AT step, pixels; 0.01 / 2/255
    eat_sources: tuple = ()                 # EAT: run directories of static pre-trained source models
    rs_step: float = 1.25                   # FGSM-RS: step after the uniform start, in units of eps (Wong et al.)
    rs_clip_start: bool = True              # FGSM-RS: clip the random start x + delta to [0, 1] before taking the
                                            #   gradient there; False: the gradient at the unclipped x + delta, as
                                            #   Wong et al.'s MNIST code (the result is clipped either way)
    nfgsm_k: float = 2.0                    # N-FGSM: noise U(-k eps, k eps), in units of eps (de Jorge et al.)
    align_lam: Optional[float] = None       # GradAlign's lambda; 0.2 at 8/255 on CIFAR-10 (their scripts), MNIST:
                                            #   1.0, chosen here by a small sweep (README, "Beyond the paper")
    eps_warmup_epochs: float = 0.0          # epochs over which the training eps ramps linearly from 0 to eps, per
                                            #   iteration (eps * min(1, iteration / warm-up iterations)); every
                                            #   eps-tied quantity of the step follows (R-FGSM's alpha, FGSM-RS's
                                            #   step, N-FGSM's noise, GradAlign's noise; not PGD-AT's pixel step
                                            #   size). 0 = off. Probes and model selection always use the full eps
    val_size: Optional[int] = None          # images held out of the training split for validation; 10000
    limit: Optional[int] = None             # train on only the first `limit` training images (quick runs)
    select_best: bool = True                # keep the epoch with the best validation I-FGSM-3 accuracy too
    select_size: int = 1000                 # validation images used for that selection
    log_every: int = 500                    # iterations between history rows and probes (probes cost ~3.5 %
                                            #   of a 32-image proposed epoch at 500; notebooks log every 25)
    probe_size: int = 200                   # fixed validation images for the per-row probes
    probe_pgd_steps: int = 10               # PGD steps of the cheap robustness probe (step 2.5·eps/steps)
    precision: str = "auto"                 # "auto": bf16 autocast where the device runs it natively and faster
                                            #   (CUDA with bf16, AMX-BF16 CPUs), fp32 elsewhere (runtime.
                                            #   resolve_precision); "bf16" / "fp32" force one. A run records
                                            #   the precision it actually used in config.json and metrics.json
    channels_last: bool = True              # NHWC memory layout for conv models
    cuda_graphs: bool = True                # on a GPU, replay each training step as one CUDA graph (not EAT)
    compile_model: bool = False             # torch.compile the model for the training steps (compiles first)
    seed: int = 0                           # seeds init, data order, dropout and attack noise
    augment: Optional[bool] = None          # random crop + flip; None -> True for CIFAR-10, False for MNIST
    normalize: bool = False                 # True: a fixed mean/std layer inside the model; False: raw [0, 1]
                                            # pixels, as the paper's code (more robust under APGD: REPRODUCTION.md)

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, METHODS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for key, value in DATASET_DEFAULTS[self.dataset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.augment is None:
            object.__setattr__(self, "augment", self.dataset == "cifar10")
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        object.__setattr__(self, "eat_sources", tuple(str(s) for s in self.eat_sources))
        from .models import check_model  # local import: models imports torch, config stays light
        check_model(self.model, self.dataset)
        check_eps(self.eps, "eps")
        check_eps(self.alpha, "alpha")
        _check(self.method not in ("rfgsm", "fgsm_rfgsm", "proposed") or self.alpha <= self.eps,
               f"alpha ({self.alpha}) must not exceed eps ({self.eps}): R-FGSM steps eps - alpha after the noise")
        check_eps(self.pgd_step_size, "pgd_step_size")
        for name in ("lam", "align_lam"):
            v = getattr(self, name)
            _check(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                   f"{name} must be a finite number >= 0, got {v!r}")
        _check(isinstance(self.rs_step, (int, float)) and 0 < self.rs_step <= 2,
               f"rs_step (FGSM-RS step in units of eps) must be in (0, 2], got {self.rs_step!r}")
        _check(isinstance(self.nfgsm_k, (int, float)) and 0 <= self.nfgsm_k <= 10,
               f"nfgsm_k (N-FGSM noise in units of eps) must be in [0, 10], got {self.nfgsm_k!r}")
        for name in ("epochs", "batch_size", "pgd_steps", "log_every", "probe_size", "probe_pgd_steps",
                     "select_size"):
            _pos_int(getattr(self, name), name)
        _check(isinstance(self.val_size, int) and self.val_size >= 0, f"val_size must be >= 0, got {self.val_size!r}")
        if self.limit is not None:
            _pos_int(self.limit, "limit")
        _check(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
               f"lr must be > 0, got {self.lr!r}")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _check(0 < self.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        _check(isinstance(self.lr_peak, (int, float)) and 0 < self.lr_peak < 1,
               f"lr_peak (where the cyclic schedule peaks, a fraction of the run) must be in (0, 1), "
               f"got {self.lr_peak!r}")
        _check(isinstance(self.eps_warmup_epochs, (int, float)) and not isinstance(self.eps_warmup_epochs, bool)
               and math.isfinite(self.eps_warmup_epochs) and 0 <= self.eps_warmup_epochs <= self.epochs,
               f"eps_warmup_epochs must be a number of epochs in [0, epochs={self.epochs}], "
               f"got {self.eps_warmup_epochs!r}")
        _check(all(math.isfinite(m) and m > 0 for m in self.lr_milestones),
               f"lr_milestones must be positive epoch counts, got {self.lr_milestones!r}")
        _check(self.method != "eat" or len(self.eat_sources) > 0,
               "method 'eat' needs eat_sources: run directories of static pre-trained models")

    # --- sizes ----------------------------------------------------------------------------------------------------
    @property
    def train_images(self) -> int:
        """Images trained on per epoch: the training split less the validation hold-out, capped by ``limit``."""
        n = (60_000 if self.dataset == "mnist" else 50_000) - self.val_size
        return n if self.limit is None else min(self.limit, n)

    @property
    def iterations(self) -> int:
        """Optimizer steps of the whole run (the last batch of an epoch may be smaller)."""
        return -(-self.train_images // self.batch_size) * self.epochs

    # --- serialisation -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        _check(not unknown, f"unknown config keys: {', '.join(unknown)}")
        d = dict(d)
        d.setdefault("normalize", True)     # runs saved before the option existed normalised inside the model
        for key in ("lr_milestones", "eat_sources"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def same_run(self, other: "TrainConfig") -> bool:
        """Equal except in how the steps are executed (:data:`RUNTIME_FIELDS`, which change results only by
        floating-point noise): a run started on a CPU may be resumed on a GPU with CUDA graphs or compiled. A
        precision of "auto" on either side matches the other's: an "auto" run resumes in the precision it started
        with, whatever this machine would pick."""
        return not self.differences(other)

    def differences(self, other: "TrainConfig") -> list:
        """The fields in which ``other`` is another run (see :meth:`same_run`)."""
        a, b = self.to_dict(), other.to_dict()
        skip = set(RUNTIME_FIELDS) | ({"precision"} if "auto" in (a["precision"], b["precision"]) else set())
        return [k for k in a if k not in skip and a[k] != b[k]]

"""The gradient-masking diagnostics of the paper (Sec. 4.2, Fig. 1/2).

Under gradient masking, a small random nudge changes the input gradient a lot, so the FGSM and R-FGSM adversaries
of the same clean image land far apart in logit space, and FGSM stops maximising the loss (PGD loss >> FGSM loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .attacks import fgsm_rfgsm, input_grad, pgd
from .losses import logit_dist
from .models import to_model_device


def logit_distance(model, x, y, eps: float, alpha: float, *, generator: Optional[torch.Generator] = None) -> float:
    """Mean L2 distance between the logits of FGSM and R-FGSM adversaries of the same clean samples."""
    x, y = to_model_device(model, x, y)
    x_f, x_r = fgsm_rfgsm(model, x, y, eps, alpha, generator=generator)
    with torch.no_grad():
        return float(logit_dist(model(x_f), model(x_r)))


def probe(model, x, y, eps: float, alpha: float, pgd_steps: int = 10, *, seed: int = 0) -> dict:
    """Cheap robustness probe on a fixed batch, with fixed noise (``seed``) so rows are comparable over training.

    Returns accuracy (%) and mean loss on clean, FGSM, R-FGSM and PGD-``pgd_steps`` (step 2.5·eps/steps)
    adversaries, and the FGSM/R-FGSM logit distance. Runs the model as it is (the caller picks eval mode).
    """
    x, y = to_model_device(model, x, y)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x_f, x_r = fgsm_rfgsm(model, x, y, eps, alpha, generator=gen)
    x_p = pgd(model, x, y, eps, 2.5 * eps / pgd_steps, pgd_steps, generator=gen)
    with torch.no_grad():
        logits = [model(v).float() for v in (x, x_f, x_r, x_p)]
    out = {}
    for name, lg in zip(("clean", "fgsm", "rfgsm", "pgd"), logits):
        out[f"acc_{name}"] = (lg.argmax(1) == y).float().mean() * 100
        out[f"loss_{name}"] = F.cross_entropy(lg, y)
    out["logit_dist"] = logit_dist(logits[1], logits[2])
    return {k: float(v) for k, v in out.items()}


# --- the gradient-masking checklist ---------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    passed: Optional[bool]      # None = skipped (e.g. no source model for the black-box check)
    detail: str
    numbers: dict


@dataclass
class MaskingReport:
    checks: list

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks don't count)."""
        return all(c.passed is not False for c in self.checks)

    @property
    def failed(self) -> list:
        return [c.name for c in self.checks if c.passed is False]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failed": self.failed,
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail, **c.numbers}
                           for c in self.checks]}

    def __str__(self) -> str:
        mark = {True: "pass", False: "FAIL", None: "skip"}
        return "\n".join(f"[{mark[c.passed]}] {c.name}: {c.detail}" for c in self.checks)


# Thresholds, in accuracy points unless said otherwise. Chosen to separate the behaviours the paper describes
# (FGSM-AT: FGSM accuracy ~90 %, PGD ~0 %) from honest robustness (PGD-AT: FGSM 95.6 %, PGD 92.1 %).
GAP_POINTS = 15.0           # FGSM accuracy may exceed PGD accuracy by at most this much
LEAK_POINTS = 0.5           # FGSM accuracy may exceed clean accuracy by at most this much
NOISE_POINTS = 1.0          # tolerance for "not higher" comparisons
LARGE_EPS_ACC = 20.0        # accuracy (%) allowed at eps = 1 (chance is 10 %)
LOGIT_DIST_MAX = 2.0        # mean FGSM/R-FGSM logit L2 distance (see Fig. 1/2: masking drives it up)
ZERO_GRAD_FRAC = 0.05       # fraction of inputs allowed an all-zero input gradient


def masking_report(model, x, y, eps: float, *, alpha: Optional[float] = None, step_size: float = 0.01,
                   steps: int = 40, large_eps_steps: int = 100, source=None, seed: int = 0,
                   batch_size: int = 1000) -> MaskingReport:
    """The standard sanity checks for gradient masking (Athalye et al. 2018, Carlini et al. 2019, the paper's
    logit-distance diagnostic), each a named pass/fail with its numbers.

    ``source``: a separately trained model for the black-box check (skipped when None). ``alpha``: R-FGSM noise
    of the logit-distance check (default 0.01 on MNIST-like eps, eps/4 otherwise capped at eps).
    """
    from .evaluate import Attack, attack_stats

    model.eval()
    x, y = to_model_device(model, x, y)
    alpha = alpha if alpha is not None else min(eps, 0.01 if eps >= 0.1 else eps / 4)
    kw = dict(batch_size=batch_size, seed=seed)
    acc = lambda a, e=eps: attack_stats(model, a, x, y, e, early_stop=True, **kw)["acc"]  # noqa: E731
    clean = acc(Attack("clean"))
    fgsm_acc = acc(Attack("fgsm"))
    pgd_acc = acc(Attack("pgd", steps, step_size))
    pgd_more = acc(Attack("pgd", round(2.5 * steps), step_size, 3))
    big = acc(Attack("pgd", large_eps_steps, 2.5 / large_eps_steps), e=1.0)
    checks = [
        Check("iterative_beats_single_step", pgd_acc <= fgsm_acc + NOISE_POINTS,
              f"PGD-{steps} {pgd_acc:.1f}% vs FGSM {fgsm_acc:.1f}% (an iterative attack must not be weaker)",
              {"pgd": pgd_acc, "fgsm": fgsm_acc}),
        Check("single_step_close_to_iterative", fgsm_acc - pgd_acc <= GAP_POINTS,
              f"FGSM {fgsm_acc:.1f}% - PGD-{steps} {pgd_acc:.1f}% = {fgsm_acc - pgd_acc:.1f} points "
              f"(<= {GAP_POINTS:g}: FGSM's linear approximation still finds the loss maximum)",
              {"gap": fgsm_acc - pgd_acc}),
        Check("no_label_leaking", fgsm_acc <= clean + LEAK_POINTS,
              f"FGSM {fgsm_acc:.1f}% vs clean {clean:.1f}% (an attack must not raise accuracy)",
              {"clean": clean, "fgsm": fgsm_acc}),
        Check("more_steps_and_restarts_dont_help", pgd_more <= pgd_acc + NOISE_POINTS,
              f"PGD-{round(2.5 * steps)} x3 restarts {pgd_more:.1f}% vs PGD-{steps} {pgd_acc:.1f}%",
              {"pgd_more": pgd_more, "pgd": pgd_acc}),
        Check("large_eps_reaches_chance", big <= LARGE_EPS_ACC,
              f"PGD-{large_eps_steps} at eps=1 {big:.1f}% (<= {LARGE_EPS_ACC:g}%: an unbounded attack must win)",
              {"acc_eps1": big}),
    ]
    if source is not None:
        bb = attack_stats(model, Attack("pgd", steps, step_size), x, y, eps, source=source, **kw)["acc"]
        checks.append(Check("black_box_not_stronger", bb + NOISE_POINTS >= pgd_acc,
                            f"transfer PGD-{steps} {bb:.1f}% vs white-box {pgd_acc:.1f}%",
                            {"black_box": bb, "white_box": pgd_acc}))
    else:
        checks.append(Check("black_box_not_stronger", None, "no source model given", {}))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    dists, zero = [], 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        dists.append(logit_distance(model, xb, yb, eps, alpha, generator=gen) * len(yb))
        g = input_grad(model, xb, yb)
        zero += int((g.flatten(1).abs().amax(1) == 0).sum())
    dist = sum(dists) / len(y)
    checks.append(Check("logit_distance_small", dist <= LOGIT_DIST_MAX,
                        f"mean FGSM/R-FGSM logit distance {dist:.3f} (<= {LOGIT_DIST_MAX:g}; alpha={alpha:g})",
                        {"logit_dist": dist}))
    frac = zero / len(y)
    checks.append(Check("gradients_not_vanishing", frac <= ZERO_GRAD_FRAC,
                        f"{100 * frac:.1f}% of inputs have an all-zero input gradient", {"zero_grad_frac": frac}))
    return MaskingReport(checks)

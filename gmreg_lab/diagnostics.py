"""The gradient-masking diagnostics of the paper (Sec. 4.2, Fig. 1/2).

Under gradient masking, a small random nudge changes the input gradient a lot, so the FGSM and R-FGSM adversaries
of the same clean image land far apart in logit space, and FGSM stops maximising the loss (PGD loss >> FGSM loss).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .attacks import fgsm_rfgsm, pgd
from .losses import logit_dist


def logit_distance(model, x, y, eps: float, alpha: float, *, generator: Optional[torch.Generator] = None) -> float:
    """Mean L2 distance between the logits of FGSM and R-FGSM adversaries of the same clean samples."""
    x_f, x_r = fgsm_rfgsm(model, x, y, eps, alpha, generator=generator)
    with torch.no_grad():
        return float(logit_dist(model(x_f), model(x_r)))


def probe(model, x, y, eps: float, alpha: float, pgd_steps: int = 10, *, seed: int = 0) -> dict:
    """Cheap robustness probe on a fixed batch, with fixed noise (``seed``) so rows are comparable over training.

    Returns accuracy (%) and mean loss on clean, FGSM, R-FGSM and PGD-``pgd_steps`` (step 2.5·eps/steps)
    adversaries, and the FGSM/R-FGSM logit distance. Runs the model as it is (the caller picks eval mode).
    """
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

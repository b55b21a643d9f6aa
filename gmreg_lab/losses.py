"""The training losses: Eq. 8 of the paper, the logit-distance diagnostic, and GradAlign's regulariser."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logit_sq_dist(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared L2 distance between two logit tensors (Eq. 8's regulariser)."""
    return (logits_a.float() - logits_b.float()).pow(2).sum(1).mean()


def logit_dist(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the (not squared) L2 distance: the diagnostic of the paper's Fig. 1/2."""
    return (logits_a.float() - logits_b.float()).norm(dim=1).mean()


def proposed_loss(logits_fgsm, logits_rfgsm, y, lam: float):
    """Eq. 8: mean CE on the FGSM adversaries + lam * mean squared L2 distance of FGSM and R-FGSM logits.

    Returns ``(loss, ce, reg)``; ``reg`` is the unweighted regulariser.
    """
    ce = F.cross_entropy(logits_fgsm.float(), y)
    reg = logit_sq_dist(logits_fgsm, logits_rfgsm)
    return ce + lam * reg, ce, reg


def gradient_misalignment(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """GradAlign's regulariser without its lambda (Andriushchenko & Flammarion 2020): ``1 - mean_i cos(g1_i, g2_i)``,
    the cosines of per-example input gradients, over the examples where both gradients are non-zero (an example
    with a zero gradient has no direction; none counts then as perfectly aligned: 0)."""
    a, b = g1.flatten(1).float(), g2.flatten(1).float()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    ok = (na > 0) & (nb > 0)
    cos = (a * b).sum(1) / (na * nb).clamp_min(1e-30)
    return ((1 - cos) * ok).sum() / ok.sum().clamp_min(1)

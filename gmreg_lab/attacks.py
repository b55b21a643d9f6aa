"""L-infinity attacks in pixel space (inputs and outputs in [0, 1]).

Pure functions: gradients come from ``torch.autograd.grad`` (parameter ``.grad`` is never touched), the model's
train/eval mode is the caller's choice, randomness comes from an optional ``generator``, and the device comes from
``x``. ``y=None`` attacks the model's own predictions (avoids label leaking, as in ensemble adversarial training).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .config import check_eps
from .errors import GmregError


def _labels(model, x, y):
    if y is not None:
        return y
    with torch.no_grad():
        return model(x).argmax(1)


def input_grad(model, x: torch.Tensor, y: torch.Tensor, *, return_logits: bool = False):
    """Gradient of the summed cross-entropy loss with respect to the input ``x`` (fp32, same shape), and the logits
    of that same forward pass when ``return_logits``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return (g, logits.detach()) if return_logits else g


def _random_sign(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """sign(N(0, I)) of ``x``'s shape: a random +-1 per pixel (Eq. 2)."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev).sign().to(x.device)


def fgsm(model, x, y, eps: float) -> torch.Tensor:
    """Eq. 1: ``x + eps * sign(grad_x J)``, clipped to [0, 1]."""
    check_eps(eps)
    y = _labels(model, x, y)
    return (x + eps * input_grad(model, x, y).sign()).clamp(0, 1).detach()


def rfgsm(model, x, y, eps: float, alpha: float, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """R-FGSM, Eq. 2-3 (Tramèr et al.): ``x' = x + alpha * sign(N(0, I))``, then an FGSM step of ``eps - alpha``.

    ``alpha`` has no default on purpose: Tramèr et al. evaluate with alpha = eps/2, while this paper's method uses a
    *small* noise (the authors' code: 0.01 on MNIST, 2/255 on CIFAR-10; ``TrainConfig`` defaults).
    """
    check_eps(eps)
    check_eps(alpha, "alpha")
    if alpha > eps:
        raise GmregError(f"alpha ({alpha}) must not exceed eps ({eps})")
    y = _labels(model, x, y)
    x1 = (x + alpha * _random_sign(x, generator)).clamp(0, 1)
    return (x1 + (eps - alpha) * input_grad(model, x1, y).sign()).clamp(0, 1).detach()


def fgsm_rfgsm(model, x, y, eps: float, alpha: float, *, generator: Optional[torch.Generator] = None):
    """FGSM and R-FGSM adversaries of the *same* clean samples from ONE gradient pass over [x, x'].

    Equal to ``(fgsm(model, x, y, eps), rfgsm(model, x, y, eps, alpha))`` for a model in eval mode (no batch
    statistics mixing the halves), at the cost of a single forward+backward over a double batch.
    """
    check_eps(eps)
    check_eps(alpha, "alpha")
    y = _labels(model, x, y)
    x1 = (x + alpha * _random_sign(x, generator)).clamp(0, 1)
    g = input_grad(model, torch.cat([x, x1]), torch.cat([y, y])).sign()
    n = x.shape[0]
    x_fgsm = (x + eps * g[:n]).clamp(0, 1).detach()
    x_rfgsm = (x1 + (eps - alpha) * g[n:]).clamp(0, 1).detach()
    return x_fgsm, x_rfgsm


def _project(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def _iterate(model, x, y, x_adv, eps: float, step: float, steps: int, early_stop: bool) -> torch.Tensor:
    """``steps`` signed-gradient steps of ``step`` from ``x_adv``, projected on the eps-ball around ``x``.

    ``early_stop``: an example is frozen at the first iterate that the model misclassifies (a valid adversarial
    example inside the ball; the worst case over iterates), and only the others are attacked further. Same
    strength or stronger than keeping the last iterate, much cheaper on weak models; for evaluation, not training.
    """
    if not early_stop:
        for _ in range(steps):
            x_adv = _project(x_adv + step * input_grad(model, x_adv, y).sign(), x, eps).detach()
        return x_adv
    x_adv = x_adv.detach().clone()
    active = torch.arange(len(y), device=x.device)
    for _ in range(steps):
        g, logits = input_grad(model, x_adv[active], y[active], return_logits=True)
        keep = logits.argmax(1) == y[active]
        active, g = active[keep], g[keep]
        if active.numel() == 0:
            break
        x_adv[active] = _project(x_adv[active] + step * g.sign(), x[active], eps)
    return x_adv


def ifgsm(model, x, y, eps: float, steps: int, *, early_stop: bool = False) -> torch.Tensor:
    """I-FGSM, Eq. 4-5: ``steps`` FGSM steps of ``eps / steps`` from the clean image, kept in the eps-ball."""
    check_eps(eps)
    if not (isinstance(steps, int) and steps >= 1):
        raise GmregError(f"steps must be an integer >= 1, got {steps!r}")
    y = _labels(model, x, y)
    return _iterate(model, x.detach(), y, x.detach(), eps, eps / steps, steps, early_stop)


def pgd(model, x, y, eps: float, alpha: float, steps: int, *, random_start: bool = True, restarts: int = 1,
        generator: Optional[torch.Generator] = None, early_stop: bool = False) -> torch.Tensor:
    """PGD (Madry et al.): uniform random start in the eps-ball, ``steps`` signed steps of ``alpha``, projection.

    With ``restarts > 1`` each example keeps its worst case: a misclassifying restart wins, and among equals the one
    with the higher loss. ``early_stop``: see :func:`_iterate` (evaluation only).
    """
    check_eps(eps)
    check_eps(alpha, "alpha (step size)")
    for name, v in (("steps", steps), ("restarts", restarts)):
        if not (isinstance(v, int) and v >= 1):
            raise GmregError(f"{name} must be an integer >= 1, got {v!r}")
    y = _labels(model, x, y)
    x = x.detach()
    best, best_key = x, None
    for _ in range(restarts):
        x_adv = x
        if random_start:
            dev = generator.device if generator is not None else x.device
            noise = torch.rand(x.shape, generator=generator, device=dev).to(x.device)
            x_adv = (x + eps * (2 * noise - 1)).clamp(0, 1)
        x_adv = _iterate(model, x, y, x_adv, eps, alpha, steps, early_stop)
        if restarts == 1:
            return x_adv
        with torch.no_grad():
            logits = model(x_adv).float()
            key = F.cross_entropy(logits, y, reduction="none") + 1e6 * (logits.argmax(1) != y).float()
        if best_key is None:
            best, best_key = x_adv, key
        else:
            better = key > best_key
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
            best_key = torch.where(better, key, best_key)
    return best

"""L-infinity attacks in pixel space (inputs and outputs in [0, 1]).

One calling convention for every attack: ``attack(model, x, y, eps, *, generator=None, **params)``, its settings
keyword-only (``pgd(model, x, y, 0.3, steps=40, step=0.01)``), and :data:`ATTACKS` maps each name that evaluation
specs, the CLI, ``audit`` and the ensembles use to its function. Pure functions: gradients come from
``torch.autograd.grad`` (parameter ``.grad`` is never touched), the model's train/eval mode is the caller's choice,
randomness comes from the optional ``generator`` (never the global RNG when one is given), and the device comes
from ``x``. ``y=None`` attacks the model's own predictions (avoids label leaking, as in ensemble adversarial
training).
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .config import check_eps
from .errors import GmregError

log = logging.getLogger(__name__)


def _labels(model, x, y):
    if y is not None:
        return y
    with torch.no_grad():
        return model(x).argmax(1)


def input_grad(model, x: torch.Tensor, y: torch.Tensor, *, return_logits: bool = False,
               create_graph: bool = False):
    """Gradient of the summed cross-entropy loss with respect to the input ``x`` (fp32, same shape), and the logits
    of that same forward pass when ``return_logits``. ``create_graph``: keep the gradient differentiable with
    respect to the model's weights (a regulariser on input gradients, as GradAlign's, back-propagates through it)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return (g, logits.detach()) if return_logits else g


def draw(fn, x: torch.Tensor, *args, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The one random draw of the attacks: ``fn(*args)`` (``torch.rand`` / ``randn`` / ``randint`` with its size
    argument) from ``generator`` on the generator's own device, then moved to ``x``'s device."""
    dev = generator.device if generator is not None else x.device
    return fn(*args, generator=generator, device=dev).to(x.device)


def _random_sign(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """sign(N(0, I)) of ``x``'s shape: a random +-1 per pixel (Eq. 2)."""
    return draw(torch.randn, x, x.shape, generator=generator).sign()


def uniform_noise(x: torch.Tensor, scale: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """U(-scale, scale) noise of ``x``'s shape, on ``x``'s device."""
    return scale * (2 * draw(torch.rand, x, x.shape, generator=generator) - 1)


def clean(model, x, y, eps: float, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """No attack: ``x`` itself (clean accuracy through the same interface)."""
    return x


def fgsm(model, x, y, eps: float, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 1: ``x + eps * sign(grad_x J)``, clipped to [0, 1] (deterministic: ``generator`` is not used)."""
    check_eps(eps)
    y = _labels(model, x, y)
    return (x + eps * input_grad(model, x, y).sign()).clamp(0, 1).detach()


def rfgsm(model, x, y, eps: float, *, alpha: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
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


def fgsm_rfgsm(model, x, y, eps: float, *, alpha: float, generator: Optional[torch.Generator] = None,
               return_steps: bool = False):
    """FGSM and R-FGSM adversaries of the *same* clean samples from ONE gradient pass over [x, x'].

    Equal to ``(fgsm(model, x, y, eps), rfgsm(model, x, y, eps, alpha=alpha))`` for a model in eval mode (no batch
    statistics mixing the halves), at the cost of a single forward+backward over a double batch.

    ``return_steps``: also return a dict of what the two adversaries were made of, so that a caller never has to
    re-draw the noise: ``"grad_sign"`` (sign of the input gradient at x, FGSM's step direction), ``"noise"`` (the
    random +-1 signs s of Eq. 2), ``"x_noise"`` (x' = clip(x + alpha s)) and ``"grad_sign_noise"`` (the sign at x').
    """
    check_eps(eps)
    check_eps(alpha, "alpha")
    y = _labels(model, x, y)
    s = _random_sign(x, generator)
    x1 = (x + alpha * s).clamp(0, 1)
    g = input_grad(model, torch.cat([x, x1]), torch.cat([y, y])).sign()
    n = x.shape[0]
    x_fgsm = (x + eps * g[:n]).clamp(0, 1).detach()
    x_rfgsm = (x1 + (eps - alpha) * g[n:]).clamp(0, 1).detach()
    if return_steps:
        return x_fgsm, x_rfgsm, {"grad_sign": g[:n], "noise": s, "x_noise": x1.detach(), "grad_sign_noise": g[n:]}
    return x_fgsm, x_rfgsm


def fgsm_rs(model, x, y, eps: float, *, step: Optional[float] = None,
            generator: Optional[torch.Generator] = None, clip_start: bool = True) -> torch.Tensor:
    """FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free"): a uniform start
    ``delta ~ U(-eps, eps)`` (kept so that ``x + delta`` is in [0, 1]), one signed gradient step of ``step``
    (default 1.25 * eps, their choice) from there, projected back onto the eps-ball and [0, 1].

    ``clip_start=False``: the gradient is taken at the unclipped ``x + delta`` and the step starts from there, as
    in Wong et al.'s MNIST code (the result is projected onto the ball and [0, 1] all the same)."""
    check_eps(eps)
    step = 1.25 * eps if step is None else step
    if not (isinstance(step, (int, float)) and 0 <= step <= 2):
        raise GmregError(f"step must be a number in [0, 2] (pixels), got {step!r}")
    y = _labels(model, x, y)
    x1 = x + uniform_noise(x, eps, generator)
    if clip_start:
        x1 = x1.clamp(0, 1)
    return _project(x1 + step * input_grad(model, x1, y).sign(), x, eps).detach()


def nfgsm(model, x, y, eps: float, *, k: float = 2.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """N-FGSM (de Jorge et al. 2022, "Make some noise"): noise ``eta ~ U(-k * eps, k * eps)`` (k = 2 in their
    paper), then a signed gradient step of ``eps`` from ``x + eta``, clipped to [0, 1] only. There is no projection
    onto the eps-ball: the training input lies up to (k + 1) * eps from x, and that is the method."""
    check_eps(eps)
    if not (isinstance(k, (int, float)) and 0 <= k <= 10):
        raise GmregError(f"k (noise magnitude in units of eps) must be a number in [0, 10], got {k!r}")
    y = _labels(model, x, y)
    x1 = (x + uniform_noise(x, k * eps, generator)).clamp(0, 1)
    return (x1 + eps * input_grad(model, x1, y).sign()).clamp(0, 1).detach()


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


def ifgsm(model, x, y, eps: float, *, steps: int, early_stop: bool = False,
          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """I-FGSM, Eq. 4-5: ``steps`` FGSM steps of ``eps / steps`` from the clean image, kept in the eps-ball
    (deterministic: ``generator`` is not used)."""
    check_eps(eps)
    if not (isinstance(steps, int) and steps >= 1):
        raise GmregError(f"steps must be an integer >= 1, got {steps!r}")
    y = _labels(model, x, y)
    return _iterate(model, x.detach(), y, x.detach(), eps, eps / steps, steps, early_stop)


def pgd(model, x, y, eps: float, *, step: float, steps: int, random_start: bool = True, restarts: int = 1,
        early_stop: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PGD (Madry et al.): uniform random start in the eps-ball, ``steps`` signed steps of size ``step`` (pixels;
    in this package ``alpha`` is R-FGSM's random step, never a step size), projection.

    With ``restarts > 1`` each example keeps its worst case: a misclassifying restart wins, and among equals the one
    with the higher loss. ``early_stop``: see :func:`_iterate` (evaluation only).
    """
    check_eps(eps)
    check_eps(step, "step (PGD step size)")
    for name, v in (("steps", steps), ("restarts", restarts)):
        if not (isinstance(v, int) and v >= 1):
            raise GmregError(f"{name} must be an integer >= 1, got {v!r}")
    y = _labels(model, x, y)
    x = x.detach()
    best, best_key = x, None
    for _ in range(restarts):
        x_adv = x
        if random_start:
            x_adv = (x + uniform_noise(x, eps, generator)).clamp(0, 1)
        x_adv = _iterate(model, x, y, x_adv, eps, step, steps, early_stop)
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


# --- APGD (Croce & Hein, ICML 2020): the step-size-free gradient attacks of AutoAttack ----------------------------
def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations where APGD may halve its step: w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps - 1e-9) for q in p[1:]})


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Difference-of-logits-ratio loss per example (Croce & Hein 2020), invariant to shifting and scaling the
    logits, so a saturated softmax cannot hide the gradient.

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted at ``target``:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, with z_pi the logits sorted in decreasing order. The
    untargeted loss reads the 3rd largest logit and needs 3 classes, the targeted one the 4th and needs 4 (the
    limits of AutoAttack's ``check_n_classes``); with fewer, a one-line error says so."""
    need = 3 if target is None else 4
    if logits.shape[1] < need:
        raise GmregError(f"the {'targeted ' if target is not None else ''}DLR loss needs at least {need} classes "
                         f"(it reads the {'3rd' if need == 3 else '4th'} largest logit); the model has "
                         f"{logits.shape[1]}: use a cross-entropy loss")
    z = logits.float()
    zs = z.sort(1, descending=True).values
    zy = z.gather(1, y[:, None])[:, 0]
    if target is None:
        zo = z.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(zy - zo) / (zs[:, 0] - zs[:, 2] + 1e-12)
    zt = z.gather(1, target[:, None])[:, 0]
    return -(zy - zt) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


def _loss_and_grad(model, x, y, loss: str, target):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x).float()
        if loss == "ce":
            per = F.cross_entropy(logits, y, reduction="none")
        elif loss == "ce-t":     # AutoAttack's 'ce-targeted': raise the target's log-probability
            per = -F.cross_entropy(logits, target, reduction="none")
        else:
            per = dlr_loss(logits, y, target)
        (g,) = torch.autograd.grad(per.sum(), x)
    return per.detach(), g, logits.detach().argmax(1) != y


def apgd(model, x, y, eps: float, *, steps: int = 100, loss: str = "ce", target: Optional[torch.Tensor] = None,
         rho: float = 0.75, step_weight: float = 0.75, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Auto-PGD, L-infinity (Croce & Hein 2020, Algorithm 1): step size 2*eps halved at the checkpoints of
    :func:`apgd_checkpoints` when fewer than ``rho`` of the steps since the last one raised the loss, or when the best
    loss did not move and the step was not halved last time (then the attack restarts from its best point); each
    update mixes the new signed step (weight ``step_weight``) with the previous displacement
    (``1 - step_weight``). ``loss``: ``"ce"``, ``"dlr"`` (3 classes or more), or targeted at ``target``: ``"dlr-t"``
    (4 classes or more) or ``"ce-t"`` (the target's cross-entropy, AutoAttack's 'ce-targeted', any number of
    classes). Returns, per example, the first misclassified iterate found, else the highest-loss one. Examples stop
    being attacked once misclassified (evaluation, not training)."""
    check_eps(eps)
    if not (isinstance(steps, int) and steps >= 1):
        raise GmregError(f"steps must be an integer >= 1, got {steps!r}")
    if loss not in ("ce", "dlr", "dlr-t", "ce-t"):
        raise GmregError(f"unknown APGD loss {loss!r}; valid: ce, dlr, dlr-t, ce-t")
    if (loss in ("dlr-t", "ce-t")) != (target is not None):
        raise GmregError("APGD: the targeted losses 'dlr-t' and 'ce-t' need target classes, and only they take them")
    y = _labels(model, x, y)
    x = x.detach()
    n, view = len(y), (-1,) + (1,) * (x.dim() - 1)
    t = uniform_noise(x, 1.0, generator)
    t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)
    cur = (x + eps * t).clamp(0, 1)
    prev = cur.clone()
    eta = torch.full((n,), 2.0 * eps, device=x.device)
    f_cur, g, broken = _loss_and_grad(model, cur, y, loss, target)
    best_adv = torch.where(broken.view(view), cur, x)
    f_max, x_max, g_max = f_cur.clone(), cur.clone(), g.clone()
    f_max_ckpt = f_max.clone()
    reduced_ckpt = torch.zeros(n, dtype=torch.bool, device=x.device)
    raised = torch.zeros(n, device=x.device)
    checkpoints, last_ckpt = set(apgd_checkpoints(steps)), 0
    for k in range(1, steps + 1):
        a = step_weight if k > 1 else 1.0
        z = _project(cur + eta.view(view) * g.sign(), x, eps)
        nxt = _project(cur + a * (z - cur) + (1 - a) * (cur - prev), x, eps)
        idx = (~broken).nonzero()[:, 0]
        if idx.numel() == 0:
            break
        f_new, g_new, mis = _loss_and_grad(model, nxt[idx], y[idx], loss, None if target is None else target[idx])
        prev, cur = cur, nxt
        raised[idx] += (f_new > f_cur[idx]).float()
        f_cur[idx], g[idx] = f_new, g_new
        hit = idx[mis]
        best_adv[hit], broken[hit] = nxt[hit], True
        up = idx[f_new > f_max[idx]]
        f_max[up], x_max[up], g_max[up] = f_cur[up], nxt[up], g[up]
        if k in checkpoints:
            span = k - last_ckpt
            reduce = (raised < rho * span) | (~reduced_ckpt & (f_max <= f_max_ckpt))
            eta[reduce] /= 2
            cur[reduce], prev[reduce], g[reduce] = x_max[reduce], x_max[reduce], g_max[reduce]
            reduced_ckpt, f_max_ckpt, last_ckpt = reduce, f_max.clone(), k
            raised.zero_()
    return torch.where(broken.view(view), best_adv, x_max).detach()


def apgd_t_loss(classes: int) -> str:
    """The loss APGD-T uses on a model with ``classes`` outputs: the targeted DLR loss, which reads the 4th largest
    logit, from 4 classes on; with 2 or 3 classes the target's cross-entropy (``"ce-t"``, AutoAttack's
    'ce-targeted' loss: its ``check_n_classes`` flags targeted DLR as impossible there)."""
    return "dlr-t" if classes >= 4 else "ce-t"


def apgd_t(model, x, y, eps: float, *, steps: int = 100, targets: int = 9,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """APGD-T: targeted APGD against each of the ``targets`` likeliest wrong classes of the clean input in turn,
    on the examples not yet misclassified (as in AutoAttack), with the loss of :func:`apgd_t_loss` (targeted DLR,
    or the target's cross-entropy on a model with fewer than 4 classes)."""
    check_eps(eps)
    y = _labels(model, x, y)
    x = x.detach()
    with torch.no_grad():
        logits = model(x).float()
    if not (isinstance(targets, int) and 1 <= targets < logits.shape[1]):
        raise GmregError(f"APGD-T targets must be an integer in [1, {logits.shape[1] - 1}] (the model has "
                         f"{logits.shape[1]} classes), got {targets!r}")
    loss = apgd_t_loss(logits.shape[1])
    if loss != "dlr-t":
        log.info("APGD-T on a %d-class model: targeted cross-entropy instead of targeted DLR (which needs 4 classes)",
                 logits.shape[1])
    ranked = logits.sort(1, descending=True).indices
    broken = logits.argmax(1) != y
    out = x.clone()
    for i in range(targets):
        idx = (~broken).nonzero()[:, 0]
        if idx.numel() == 0:
            break
        tgt = ranked[idx, i + 1]
        xa = apgd(model, x[idx], y[idx], eps, steps=steps, loss=loss, target=tgt, generator=generator)
        with torch.no_grad():
            mis = model(xa).argmax(1) != y[idx]
        out[idx] = xa
        broken[idx[mis]] = True
    return out


def apgd_worst(model, x, y, eps: float, *, steps: int = 100, targets: int = 9,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """APGD-CE, then APGD-T on the examples it did not break: each example's worst case of both (AutoAttack's
    gradient part; the spec ``apgd:STEPS[:TARGETS]``)."""
    y = _labels(model, x, y)
    xa = apgd(model, x, y, eps, steps=steps, generator=generator)
    with torch.no_grad():
        alive = (model(xa).argmax(1) == y).nonzero()[:, 0]
    if alive.numel():
        xa[alive] = apgd_t(model, x[alive], y[alive], eps, steps=steps, targets=targets, generator=generator)
    return xa


# --- Square (Andriushchenko et al., ECCV 2020): gradient-free, the score-based attack of AutoAttack ----------------
def square_p(p_init: float, it: int, queries: int) -> float:
    """Square's schedule of the fraction of pixels changed per query: ``p_init``, halved at 10, 50, 200, 500,
    1000, 2000, 4000, 6000 and 8000 ten-thousandths of the query budget."""
    t = int(it / queries * 10_000)
    for k, bound in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if t <= bound:
            return p_init / 2 ** k
    return p_init / 512


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example ``z_y - max_{j != y} z_j``: negative exactly when the example is misclassified."""
    z = logits.float()
    return z.gather(1, y[:, None])[:, 0] - z.scatter(1, y[:, None], float("-inf")).amax(1)


def square(model, x, y, eps: float, *, queries: int = 5000, p_init: float = 0.8,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Square attack, L-infinity (Andriushchenko et al. 2020), as AutoAttack runs it: start from random vertical
    stripes of +-eps, then per query add a random +-2 eps square (side from :func:`square_p`, one position and one
    sign per channel for the whole batch), project onto the eps-ball and [0, 1], and keep it for the examples whose
    margin (:func:`margin`) it lowered. Only the model's outputs are used, never a gradient, so gradient masking
    cannot hide from it. Examples stop being attacked once misclassified."""
    check_eps(eps)
    if not (isinstance(queries, int) and queries >= 1):
        raise GmregError(f"queries must be an integer >= 1, got {queries!r}")
    y = _labels(model, x, y)
    x = x.detach()
    n, c, h, w = x.shape

    def signs(*shape):
        return (2 * draw(torch.randint, x, 0, 2, shape, generator=generator) - 1).to(x.dtype)

    def scores(xa, ya):
        with torch.no_grad():
            return margin(model(xa), ya)

    best = (x + eps * signs(n, c, 1, w)).clamp(0, 1)
    best_margin = scores(best, y)
    for it in range(queries):
        idx = (best_margin > 0).nonzero()[:, 0]
        if idx.numel() == 0:
            break
        s = max(int(round(math.sqrt(square_p(p_init, it, queries) * h * w))), 1)
        s = min(s, h, w)
        vh = int(draw(torch.randint, x, 0, h - s + 1, (1,), generator=generator))
        vw = int(draw(torch.randint, x, 0, w - s + 1, (1,), generator=generator))
        step = torch.zeros(c, h, w, device=x.device, dtype=x.dtype)
        step[:, vh:vh + s, vw:vw + s] = 2 * eps * signs(c, 1, 1)
        cand = _project(best[idx] + step, x[idx], eps)
        m = scores(cand, y[idx])
        better = m < best_margin[idx]
        best[idx[better]], best_margin[idx[better]] = cand[better], m[better]
    return best


# --- The table: one name per attack, each called as f(model, x, y, eps, *, generator=None, **params) ---------------
ATTACKS = {"clean": clean, "fgsm": fgsm, "rfgsm": rfgsm, "ifgsm": ifgsm, "pgd": pgd, "apgd-ce": apgd,
           "apgd-t": apgd_t, "apgd": apgd_worst, "square": square, "fgsm_rs": fgsm_rs, "nfgsm": nfgsm}


def settings(name: str) -> dict:
    """The keyword settings attack ``name`` takes, ``{setting: default or inspect.Parameter.empty}`` (``generator``
    left out)."""
    if name not in ATTACKS:
        raise GmregError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    return {k: p.default for k, p in inspect.signature(ATTACKS[name]).parameters.items()
            if p.kind is p.KEYWORD_ONLY and k != "generator"}

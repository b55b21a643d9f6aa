"""The loss of one image over a 2-D slice of its eps-ball, as Tramèr et al. 2018 (Fig. 1) draw it, the picture on
which this paper's argument rests: one axis along the FGSM direction sign(grad_x J), the other along an *adversarial*
direction orthogonal to it, here the PGD perturbation with its gradient-axis component removed.

Why that second axis: a random direction of a high-dimensional ball almost never meets the region where the loss is
high, so a random slice of a masked model looks flat everywhere and says nothing. The PGD perturbation goes where the
loss really is high; removing its component along sign(grad) makes the two axes orthogonal, and PGD's adversary lies
*on* the slice by construction. Under gradient masking the surface folds sharply near x: the loss along the gradient
axis stays low at eps, while along the adversarial axis, at the same L-inf distance eps, it is far higher. For a
smooth model the gradient axis is the steeper one: FGSM reaches at least what the adversarial axis reaches.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .attacks import fgsm_rfgsm, margin, pgd
from .config import check_eps
from .errors import GmregError
from .models import to_model_device

# Images per forward pass over the grid: small chunks stay in the CPU's cache (41 x 41 on 2 threads: about 0.5 s in
# chunks of 128 vs 0.85 s in one batch of 1681; benchmarks/landscape_redraw.py measures both side by side).
GRID_CHUNK = 128


def _random_sign(x: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return (2 * torch.randint(0, 2, x.shape, generator=gen, device=x.device) - 1).to(x.dtype)


def _adversarial_axis(u: torch.Tensor, delta: torch.Tensor, seed: int):
    """``delta`` (the PGD perturbation) without its component along ``u``, scaled to L-inf norm 1: ``(v, kind)``.
    When PGD moved along ``u`` only (a model on which FGSM is already optimal), a random sign direction made
    orthogonal to ``u`` instead (kind ``"random"``)."""
    uu = float((u * u).sum())
    v = delta - float((delta * u).sum()) / uu * u
    kind = "pgd"
    if float(v.abs().max()) < 1e-6:
        r = _random_sign(u, seed + 3)                       # not the seed of a random gradient axis
        v, kind = r - float((r * u).sum()) / uu * u, "random"
    return v / v.abs().max(), kind


def _grid_losses(model, x, y, u, v, a, b, eps):
    """Loss and margin (z_y - the largest other logit; < 0 where the model is wrong) at x + a u + b v, projected
    into the eps-ball and [0, 1], for every (a, b) of the grid; rows: b, columns: a."""
    b_grid, a_grid = torch.meshgrid(b, a, indexing="ij")
    pts = x + a_grid.reshape(-1, 1, 1, 1) * u + b_grid.reshape(-1, 1, 1, 1) * v
    pts = torch.min(torch.max(pts, x - eps), x + eps).clamp(0, 1)     # every point of the picture is in the ball
    losses, margins = [], []
    with torch.no_grad():
        for chunk in pts.split(GRID_CHUNK):
            z = model(chunk).float()
            yy = y.expand(len(chunk))
            losses.append(F.cross_entropy(z, yy, reduction="none"))
            margins.append(margin(z, yy))
    return torch.cat(losses).reshape(len(b), len(a)), torch.cat(margins).reshape(len(b), len(a))


def _axis(top: float, grid: int, device) -> torch.Tensor:
    """``grid`` values from -top to top with 0 and +-top exact (odd ``grid``): FGSM's point is a grid point."""
    c = torch.linspace(-top, top, grid, device=device)
    c[0], c[grid // 2], c[-1] = -top, 0.0, top
    return c


def loss_landscape(model, x, y, eps: float, alpha: float, *, grid: int = 41, pgd_steps: int = 40,
                   pgd_step: Optional[float] = None, seed: int = 0) -> dict:
    """Cross-entropy of ``model`` on ``x + a u + b v`` (projected onto the eps-ball and [0, 1]) on a ``grid`` x
    ``grid`` lattice, ``a`` in [-eps, eps] along FGSM's step ``u = (x_fgsm - x) / eps`` (``sign(grad_x J(x))``
    less what the [0, 1] box clips: a pixel already at 0 cannot step down) and ``b`` in [-B, B] along ``v``, the
    PGD-``pgd_steps`` perturbation minus its component along ``u``, scaled to L-inf norm 1 (``B`` = max(eps, PGD's
    b): the PGD adversary is in the picture). One image: ``x`` of shape (1, C, H, W) or (C, H, W); ``grid`` odd, so
    that the gradient axis (b = 0) is a row of the grid.

    Exact by construction: the FGSM adversary is the grid point (eps, 0) (x itself, at (0, 0), when the input
    gradient is zero: then ``u`` is a random sign direction, ``axes["gradient"]`` says so), and the PGD adversary
    is x + a_p u + b_p v exactly. The R-FGSM adversary and its noise point x' are off the slice: their marks are
    their orthogonal projections, ``off_slice`` their L-inf distance from it. The noise comes from
    :func:`~gmreg_lab.attacks.fgsm_rfgsm` itself (``return_steps``), never drawn twice.

    Returns ``{"a", "b": axis values, "loss", "margin": grid x grid lists (rows: b, columns: a; margin < 0 where
    the model is wrong: the decision boundary is its 0 contour), "points": {name: (a, b)} for x, fgsm, noise,
    rfgsm, pgd, "off_slice": {name: L-inf distance}, "axes", "logits": {"fgsm", "rfgsm"}, "logit_distance",
    "loss_at": {name: loss} (also ``"adversarial"``: at (0, eps), the adversarial axis at FGSM's distance),
    "slice_max", "eps", "alpha", "label", "predicted"}``. The headline a learner can read:
    ``loss_at["fgsm"]`` vs ``loss_at["adversarial"]``, the loss at distance eps along each axis."""
    check_eps(eps)
    if not (isinstance(grid, int) and 3 <= grid <= 201 and grid % 2 == 1):
        raise GmregError(f"grid must be an odd integer in [3, 201] (the gradient axis is its middle row), got {grid!r}")
    x = x if x.dim() == 4 else x.unsqueeze(0)
    if x.shape[0] != 1:
        raise GmregError(f"loss_landscape draws one image, got a batch of {x.shape[0]}")
    y = torch.as_tensor(y, device=x.device).reshape(1).long()
    x, y = to_model_device(model, x, y)
    model.eval()
    x_f, x_r, made = fgsm_rfgsm(model, x, y, eps, alpha=alpha, generator=torch.Generator(device=x.device).manual_seed(
        seed + 1), return_steps=True)
    u, grad_axis = (x_f - x) / eps, "sign(grad)"            # FGSM's step: sign(grad), less what [0, 1] clips
    if not bool(u.any()):                                   # no gradient: FGSM stays at x, draw a random axis
        u, grad_axis = _random_sign(x, seed), "random (the input gradient is zero)"
    x_p = pgd(model, x, y, eps, step=pgd_step or 2.5 * eps / pgd_steps, steps=pgd_steps,
              generator=torch.Generator(device=x.device).manual_seed(seed + 2))
    v, adv_axis = _adversarial_axis(u, x_p - x, seed)
    coords = {name: _coords(p - x, u, v) for name, p in (("noise", made["x_noise"]), ("rfgsm", x_r), ("pgd", x_p))}
    # x and FGSM exactly: x_f = x + eps u is the grid point (eps, 0) (x itself when the gradient is zero)
    a = _axis(eps, grid, x.device)
    coords = {"x": ((0.0, 0.0), 0.0), "fgsm": ((float(a[-1]) if grad_axis == "sign(grad)" else 0.0, 0.0), 0.0),
              **coords}
    b = _axis(max(eps, coords["pgd"][0][1]), grid, x.device)
    loss, marg = _grid_losses(model, x, y, u, v, a, b, eps)
    x_adv_axis = torch.min(torch.max(x + eps * v, x - eps), x + eps).clamp(0, 1)
    names = ("x", "fgsm", "rfgsm", "noise", "pgd", "adversarial")
    with torch.no_grad():                                   # the marked points in one forward pass
        z = model(torch.cat([x, x_f, x_r, made["x_noise"], x_p, x_adv_axis])).float()
        at = dict(zip(names, F.cross_entropy(z, y.expand(len(z)), reduction="none").tolist()))
    lf, lr, pred_x = z[1], z[2], int(z[0].argmax())
    return {"a": a.tolist(), "b": b.tolist(), "loss": loss.cpu().tolist(), "margin": marg.cpu().tolist(),
            "points": {k: c[0] for k, c in coords.items()}, "off_slice": {k: c[1] for k, c in coords.items()},
            "axes": {"gradient": grad_axis, "adversarial": adv_axis},
            "logits": {"fgsm": lf.cpu().tolist(), "rfgsm": lr.cpu().tolist()},
            "logit_distance": float((lf - lr).norm()), "loss_at": at, "slice_max": float(loss.max()), "eps": eps,
            "alpha": alpha, "label": int(y), "predicted": {"x": pred_x, "fgsm": int(lf.argmax()),
                                                          "rfgsm": int(lr.argmax())}}


def _coords(d: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """The orthogonal projection of the displacement ``d`` on span(u, v) (u and v are orthogonal): ``((a, b),
    L-inf distance of d from the slice)``; 0 for a point on the slice."""
    a = float((d * u).sum() / (u * u).sum())
    b = float((d * v).sum() / (v * v).sum())
    return (a, b), float((d - a * u - b * v).abs().max())

"""The loss of one image over a 2-D slice of its eps-ball (the picture of Tramèr et al. 2018, Fig. 1, on which this
paper's argument rests): one axis along the FGSM direction sign(grad_x J), the other along a random sign direction.

Under gradient masking the surface folds sharply near x: the loss along the gradient axis stays low at eps while a
step off the axis finds far higher loss, so FGSM's linear guess is wrong and a small random nudge (R-FGSM) lands
somewhere else entirely. A smooth model's surface rises along the gradient axis to the highest loss of the slice.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .attacks import fgsm_rfgsm, input_grad, pgd
from .config import check_eps
from .errors import GmregError
from .models import to_model_device

# Images per forward pass over the grid: small chunks stay in the CPU's cache (41 x 41 on 2 threads: about 0.5 s in
# chunks of 128 vs 0.85 s in one batch of 1681; benchmarks/landscape_redraw.py measures both side by side).
GRID_CHUNK = 128


def loss_landscape(model, x, y, eps: float, alpha: float, *, grid: int = 41, pgd_steps: int = 40,
                   pgd_step: Optional[float] = None, seed: int = 0) -> dict:
    """Cross-entropy of ``model`` on ``x + a u + b v`` (projected onto the eps-ball and [0, 1]) for ``a, b`` on a
    ``grid`` x ``grid`` lattice over [-eps, eps]^2, with ``u = sign(grad_x J(x))`` and ``v`` a random sign vector
    (``seed``). One image: ``x`` of shape (1, C, H, W) or (C, H, W).

    Returns ``{"a", "b": axis values, "loss": grid x grid list (rows: b, columns: a), "points": {name: (a, b)}
    for x, the FGSM and R-FGSM adversaries, the R-FGSM noise point x' and the PGD adversary (each projected on
    the slice), "logits": {"fgsm", "rfgsm"}, "logit_distance", "loss_at": {name: loss}, "fgsm_shortfall"}``;
    ``fgsm_shortfall`` = the slice's highest loss minus the loss FGSM reaches, ``fgsm_fraction`` = FGSM's loss over
    the slice's highest: 1 when FGSM finds the top of the slice (a smooth model), near 0 under masking."""
    check_eps(eps)
    if not (isinstance(grid, int) and 3 <= grid <= 201):
        raise GmregError(f"grid must be an integer in [3, 201], got {grid!r}")
    x = x if x.dim() == 4 else x.unsqueeze(0)
    if x.shape[0] != 1:
        raise GmregError(f"loss_landscape draws one image, got a batch of {x.shape[0]}")
    y = torch.as_tensor(y, device=x.device).reshape(1).long()
    x, y = to_model_device(model, x, y)
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    u = input_grad(model, x, y).sign()
    u = torch.where(u == 0, torch.ones_like(u), u)          # a zero gradient still needs a direction to draw
    v = (2 * torch.randint(0, 2, x.shape, generator=gen, device=x.device) - 1).to(x.dtype)
    coords = torch.linspace(-eps, eps, grid, device=x.device)
    b_grid, a_grid = torch.meshgrid(coords, coords, indexing="ij")
    pts = x + a_grid.reshape(-1, 1, 1, 1) * u + b_grid.reshape(-1, 1, 1, 1) * v
    pts = torch.min(torch.max(pts, x - eps), x + eps).clamp(0, 1)     # every point of the picture is in the ball
    with torch.no_grad():
        losses = torch.cat([F.cross_entropy(model(chunk).float(), y.expand(len(chunk)), reduction="none")
                            for chunk in pts.split(GRID_CHUNK)])
    x_f, x_r = fgsm_rfgsm(model, x, y, eps, alpha, generator=torch.Generator(device=x.device).manual_seed(seed + 1))
    noise = (x + alpha * torch.randn(x.shape, generator=torch.Generator(device=x.device).manual_seed(seed + 1),
                                     device=x.device).sign()).clamp(0, 1)
    x_p = pgd(model, x, y, eps, pgd_step or 2.5 * eps / pgd_steps, pgd_steps,
              generator=torch.Generator(device=x.device).manual_seed(seed + 2))
    n = float(u.numel())

    def on_slice(p):
        d = (p - x).flatten()
        return float(d @ u.flatten() / n), float(d @ v.flatten() / n)

    with torch.no_grad():
        lf, lr = model(x_f).float()[0], model(x_r).float()[0]
        at = {name: float(F.cross_entropy(model(p).float(), y)) for name, p in
              (("x", x), ("fgsm", x_f), ("rfgsm", x_r), ("noise", noise), ("pgd", x_p))}
    loss = losses.reshape(grid, grid)
    return {"a": coords.tolist(), "b": coords.tolist(), "loss": loss.cpu().tolist(),
            "points": {name: on_slice(p) for name, p in (("x", x), ("fgsm", x_f), ("noise", noise),
                                                          ("rfgsm", x_r), ("pgd", x_p))},
            "logits": {"fgsm": lf.cpu().tolist(), "rfgsm": lr.cpu().tolist()},
            "logit_distance": float((lf - lr).norm()), "loss_at": at,
            "fgsm_shortfall": float(loss.max()) - at["fgsm"],
            "fgsm_fraction": at["fgsm"] / max(float(loss.max()), 1e-12), "eps": eps, "alpha": alpha,
            "label": int(y), "predicted": {"x": int(model(x).argmax(1)), "fgsm": int(lf.argmax()),
                                           "rfgsm": int(lr.argmax())}}

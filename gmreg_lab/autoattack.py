"""AutoAttack's *standard* ensemble (Croce & Hein, ICML 2020) at its original settings: APGD-CE (100 steps), APGD-T
(100 steps, 9 target classes), FAB-T (100 steps, 9 target classes) and Square (5000 queries), each run on the
examples the earlier ones left, an example robust only if all four fail.

:func:`standard` uses the kit's own APGD-CE, APGD-T and Square and torchattacks' FAB-T (the kit has no FAB);
:func:`reference` runs all four from torchattacks, configured the same way (torchattacks' own ``AutoAttack`` class
defaults to 10 steps instead of the original 100, so it is not used). :func:`headline` runs both on the same images
and reports the gap: the number to trust is the lower one.
"""

from __future__ import annotations

import torch

from .config import check_eps
from .errors import GmregError
from .evaluate import Attack, ensemble
from .models import to_model_device

STEPS, TARGETS, QUERIES = 100, 9, 5000


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise GmregError("FAB-T and the independent AutoAttack need torchattacks: pip install torchattacks") from None
    return torchattacks


def standard(model, x, y, eps: float, *, batch_size: int = 500, seed: int = 0, queries: int = QUERIES,
             steps: int = STEPS, targets: int = TARGETS) -> dict:
    """The standard ensemble with the kit's APGD-CE, APGD-T and Square (FAB-T from torchattacks): the output of
    :func:`gmreg_lab.evaluate.ensemble` (robust accuracy, which attack broke how many examples, seconds)."""
    check_eps(eps)
    ta = _torchattacks()
    x, y = to_model_device(model, x, y)
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    fab = ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                 n_classes=targets + 1, seed=seed)
    attacks = {"apgd-ce": Attack("apgd-ce", steps=steps).on(model, eps, generator=gen),
               "apgd-t": Attack("apgd-t", steps=steps, targets=targets).on(model, eps, generator=gen),
               "fab-t (torchattacks)": fab,
               "square": Attack("square", queries=queries).on(model, eps, generator=gen)}
    return {**ensemble(model, x, y, attacks, eps=eps, batch_size=batch_size), "eps": eps,
            "settings": {"steps": steps, "targets": targets, "queries": queries}}


def reference(model, x, y, eps: float, *, batch_size: int = 500, seed: int = 0, queries: int = QUERIES,
              steps: int = STEPS, targets: int = TARGETS) -> dict:
    """The same ensemble entirely from torchattacks (APGD, APGDT, FAB, Square at the original settings)."""
    check_eps(eps)
    ta = _torchattacks()
    x, y = to_model_device(model, x, y)
    model.eval()
    apgdt = ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=targets + 1, seed=seed)
    apgdt.n_target_classes = targets
    attacks = {"apgd-ce": ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
               "apgd-t": apgdt,
               "fab-t": ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                               n_classes=targets + 1, seed=seed),
               "square": ta.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, seed=seed)}
    return {**ensemble(model, x, y, attacks, eps=eps, batch_size=batch_size), "eps": eps,
            "settings": {"steps": steps, "targets": targets, "queries": queries}}


def headline(model, x, y, eps: float, **kw) -> dict:
    """Both ensembles on the same images: ``{"ours", "torchattacks", "robust": the lower of the two (%),
    "gap_points": ours minus theirs}``."""
    ours = standard(model, x, y, eps, **kw)
    theirs = reference(model, x, y, eps, **kw)
    return {"n": ours["n"], "ours": ours, "torchattacks": theirs, "robust": min(ours["robust"], theirs["robust"]),
            "gap_points": ours["robust"] - theirs["robust"]}

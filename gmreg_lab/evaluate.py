"""Evaluation: white-box tables (Table 3/4), black-box transfer (Table 5/6), and accuracy / loss vs epsilon
(Fig. 1-4). Attacks run with the model in eval mode, in large batches; clean passes under ``torch.inference_mode``.

Accuracy tables (``evaluate``, ``attack_stats(early_stop=True)``) stop iterative attacks early per example: an
example counts as broken at the first iterate the model misclassifies (``early_stop`` in :mod:`gmreg_lab.attacks`),
never weaker than keeping the last iterate and much cheaper. The loss of such an adversary is *not* the maximised
loss, so those rows report ``loss: None``; loss-vs-eps sweeps (Fig. 1/2 bottom, Fig. 4) run every step.

Attack specs are short strings: ``clean``, ``fgsm``, ``rfgsm[:alpha]``, ``ifgsm:STEPS``,
``pgd:STEPS[:STEP_SIZE[:RESTARTS]]`` (PGD step size defaults to 0.01 on MNIST, 2/255 on CIFAR-10), and the
step-size-free attacks of AutoAttack: ``apgd-ce:STEPS``, ``apgd-t:STEPS[:TARGETS]`` (targeted DLR against the
TARGETS likeliest wrong classes, default 9) and ``apgd:STEPS[:TARGETS]`` (APGD-CE, then APGD-T on the survivors:
the per-example worst case of both, AutoAttack's gradient part), and the gradient-free ``square:QUERIES``
(AutoAttack's score-based attack). :func:`ensemble` / :func:`worst_case` run several attacks the way AutoAttack
does: each on what the earlier ones left, reporting which attack broke which examples.

Every adversary, from a kit attack or another library's, is checked before it is counted (:func:`check_adversary`):
finite, in [0, 1], and within eps of the clean image in the L-inf norm; a violation is an error naming the attack.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .attacks import ATTACKS, settings
from .config import DATASET_DEFAULTS, check_eps
from .errors import GmregError
from .models import to_model_device
from .runtime import autocast

APGD_NAMES = ("apgd-ce", "apgd-t", "apgd")
_NEEDED = object()
# What each ":"-separated field of an evaluation spec sets, in order, with its default (_NEEDED: must be given;
# None: the dataset's default from DATASET_DEFAULTS, R-FGSM's alpha and PGD's step size).
SPEC_FIELDS = {"clean": {}, "fgsm": {}, "rfgsm": {"alpha": None}, "ifgsm": {"steps": _NEEDED},
               "pgd": {"steps": _NEEDED, "step": None, "restarts": 1}, "apgd-ce": {"steps": _NEEDED},
               "apgd-t": {"steps": _NEEDED, "targets": 9}, "apgd": {"steps": _NEEDED, "targets": 9},
               "square": {"queries": _NEEDED}}
ATTACK_NAMES = tuple(SPEC_FIELDS)      # the attacks an evaluation spec can name
SPEC_FORMS = ("clean, fgsm, rfgsm[:alpha], ifgsm:STEPS, pgd:STEPS[:STEP_SIZE[:RESTARTS]], apgd-ce:STEPS, "
              "apgd-t:STEPS[:TARGETS], apgd:STEPS[:TARGETS], square:QUERIES")
_DATASET_KEYS = {"alpha": "alpha", "step": "pgd_step_size"}
_SIZE = ("steps", "queries")          # what a label shows after the name, and the multiplier after an "x"
_TIMES = {"restarts": 1, "targets": 9}


class Attack:
    """One attack and its settings, e.g. ``Attack("pgd", steps=40, step=0.01)``: a name in
    :data:`gmreg_lab.attacks.ATTACKS` and keyword settings of that function. Made, it refuses a setting the function
    does not take and a missing required one; the values are checked by the attack when it runs. ``run`` calls
    ``ATTACKS[name](model, x, y, eps, generator=..., **settings)``; ``on`` gives the ``attack(xb, yb)`` callable an
    ensemble runs. Immutable and hashable; equal when the name and the settings are."""

    __slots__ = ("name", "params")

    def __init__(self, name: str, **params):
        known = settings(name)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise GmregError(f"attack {name!r} has no setting {', '.join(unknown)}; its settings: "
                             f"{', '.join(known) or 'none'}")
        missing = [k for k, d in known.items() if d is inspect.Parameter.empty and k not in params]
        if missing:
            raise GmregError(f"attack {name!r} needs the setting(s) {', '.join(missing)}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "params", tuple(sorted(params.items())))

    def __setattr__(self, key, value):
        raise AttributeError("Attack is immutable: make a new one")

    def __eq__(self, other):
        return isinstance(other, Attack) and (self.name, self.params) == (other.name, other.params)

    def __hash__(self):
        return hash((self.name, self.params))

    def __repr__(self):
        return f"Attack({self.name!r}" + "".join(f", {k}={v!r}" for k, v in self.params) + ")"

    def get(self, key: str, default=None):
        return dict(self.params).get(key, default)

    @property
    def label(self) -> str:
        """``pgd-40``, ``pgd-50x10`` (restarts), ``apgd-t-100x3`` (targets), ``square-5000``, ``fgsm``."""
        size = next((self.get(k) for k in _SIZE if self.get(k) is not None), None)
        times = next((self.get(k) for k, usual in _TIMES.items() if self.get(k, usual) != usual), None)
        return self.name + (f"-{size}" if size is not None else "") + (f"x{times}" if times is not None else "")

    @property
    def iterative(self) -> bool:
        return any(k in dict(self.params) for k in _SIZE)

    def on(self, model, eps: float, *, generator=None, early_stop: bool = False):
        """``attack(xb, yb) -> adversarial xb``: this attack on ``model`` at ``eps`` (for :func:`ensemble`)."""
        return lambda xb, yb: self.run(model, xb, yb, eps, generator=generator, early_stop=early_stop)

    def run(self, model, x, y, eps: float, generator=None, early_stop: bool = False):
        """The adversaries of (x, y) at ``eps`` (``x`` itself at eps 0). ``early_stop``: passed to the attacks that
        take it (I-FGSM, PGD; evaluation only). R-FGSM's random step is capped at ``eps`` (a sweep's small eps)."""
        if eps == 0:
            return x
        kw = dict(self.params)
        if early_stop and "early_stop" in settings(self.name):
            kw["early_stop"] = True
        if "alpha" in kw:
            kw["alpha"] = min(kw["alpha"], eps)
        return ATTACKS[self.name](model, x, y, eps, generator=generator, **kw)


def parse_attack(spec: str, dataset: str = "mnist") -> Attack:
    """``"pgd:40"`` -> ``Attack("pgd", steps=40, step=0.01, restarts=1)``, by :data:`SPEC_FIELDS`. Unknown names
    list the valid ones; a malformed spec names the valid forms."""
    if isinstance(spec, Attack):
        return spec
    parts = str(spec).strip().lower().split(":")
    name, args = parts[0], parts[1:]
    if name not in SPEC_FIELDS:
        raise GmregError(f"unknown attack {name!r}; valid: {', '.join(ATTACK_NAMES)} "
                         f"(e.g. clean,fgsm,ifgsm:40,pgd:40,pgd:100:0.01:5)")
    fields = SPEC_FIELDS[name]
    defaults = DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["mnist"])
    needed = sum(1 for d in fields.values() if d is _NEEDED)
    params = {}
    try:
        if not needed <= len(args) <= len(fields):
            raise ValueError
        for (key, default), text in zip(fields.items(), args + [None] * len(fields)):
            value = default if text is None else (int(text) if key in _SIZE + tuple(_TIMES) else float(text))
            params[key] = defaults[_DATASET_KEYS[key]] if value is None else value
    except ValueError:
        raise GmregError(f"cannot parse attack {spec!r}; forms: {SPEC_FORMS}") from None
    for key, value in params.items():
        if key in _DATASET_KEYS:
            check_eps(value, {"alpha": "R-FGSM alpha", "step": "PGD step size"}[key])
        elif value < 1 or (key == "targets" and value > 9):
            raise GmregError(f"attack {spec!r}: {key} = {value} is out of range (steps, restarts and queries >= 1, "
                             f"targets in [1, 9])")
    return Attack(name, **params)


def parse_attacks(specs, dataset: str = "mnist") -> list[Attack]:
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    attacks = [parse_attack(s, dataset) for s in specs]
    if not attacks:
        raise GmregError("no attacks given")
    return attacks


# Slack on ||x_adv - x||_inf <= eps: float rounding of x + eps * sign(g) (AutoAttack prints the same quantity).
EPS_SLACK = 1e-6


def check_adversary(x_adv, x, eps: Optional[float], name: str) -> None:
    """What every attack must return, whoever wrote it: a tensor of ``x``'s shape, finite, in [0, 1], and (``eps``
    given) within ``eps`` (+``EPS_SLACK``) of ``x`` in the L-inf norm. Anything else is a :class:`GmregError`
    naming the attack, never a silently lower accuracy."""
    if not torch.is_tensor(x_adv) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if torch.is_tensor(x_adv) else type(x_adv).__name__
        raise GmregError(f"attack {name!r} returned {got} for inputs of shape {tuple(x.shape)}")
    with torch.no_grad():
        xa = x_adv.detach().to(x.device, torch.float32)
        finite = torch.isfinite(xa)
        xa = torch.where(finite, xa, x.float())
        lo, hi, dist, bad = torch.stack([xa.min(), xa.max(), (xa - x.float()).abs().max(),
                                         (~finite).sum().float()]).tolist()
    if bad:
        raise GmregError(f"attack {name!r} returned {int(bad)} NaN or Inf pixel value(s)")
    if lo < 0 or hi > 1:
        raise GmregError(f"attack {name!r} returned pixels outside [0, 1] (from {lo:.6g} to {hi:.6g})")
    if eps is not None and dist > eps + EPS_SLACK:
        raise GmregError(f"attack {name!r} moved a pixel by {dist:.6g}, more than eps = {eps:.6g}: its adversaries "
                         f"are outside the threat model")


def outcomes(model, attack: Callable, x, y, *, batch_size: int = 1000, eps: Optional[float] = None,
             name: Optional[str] = None):
    """The one batched attack-and-count loop of the kit: ``attack(xb, yb) -> adversarial xb`` on batches of
    ``batch_size``, then ``model`` on the adversaries. Returns ``(correct, loss)``, per example and on the device:
    whether ``model`` still classifies it correctly, and its cross-entropy.

    ``attack`` is any callable (a kit attack, another library's, or ``lambda xb, yb: xb`` for clean accuracy);
    the caller chooses the model's mode and the precision. Every batch an attack returns is checked
    (:func:`check_adversary`: finite, in [0, 1], within ``eps`` of the clean batch; ``eps`` defaults to the attack's
    own ``.eps`` attribute, which torchattacks' attacks have) before the model sees it; ``name`` names the attack in
    the error. An attack that returns its input unchanged (clean accuracy) is not checked."""
    if eps is None and isinstance(getattr(attack, "eps", None), (int, float)):
        eps = float(attack.eps)
    if name is None:   # a function's name, an attack object's class (torchattacks' PGD, FAB, ...), else "attack"
        name = getattr(attack, "__name__", None) or type(attack).__name__
        name = "attack" if name in ("<lambda>", "function", "partial") else name
    correct = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    loss = torch.zeros(len(y), device=y.device)
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = attack(xb, yb)
        if xa is not xb:
            check_adversary(xa, xb, eps, name)
        with torch.no_grad():
            logits = model(xa).float()
            correct[i:i + batch_size] = logits.argmax(1) == yb
            loss[i:i + batch_size] = F.cross_entropy(logits, yb, reduction="none")
    return correct, loss


def attack_stats(model, attack: Attack, x, y, eps: float, *, source=None, batch_size: int = 1000,
                 precision: str = "fp32", seed: int = 0, early_stop: bool = False) -> dict:
    """Accuracy (%) and mean cross-entropy of ``model`` on ``attack`` adversaries of (x, y) at ``eps``.

    ``source``: craft the adversaries on this model instead (black-box transfer). ``early_stop``: stop attacking
    an example once it is misclassified (accuracy only: the loss is then reported as None for iterative attacks).
    """
    early_stop = early_stop and source is None
    check_eps(eps)
    x, y = to_model_device(model, x, y)
    source = model if source is None else source
    model.eval()
    source.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    with autocast(x.device, precision):
        correct, loss = outcomes(
            model, lambda xb, yb: attack.run(source, xb, yb, eps, generator=gen, early_stop=early_stop), x, y,
            batch_size=batch_size, eps=eps, name=attack.label)
    n = len(y)
    return {"acc": float(correct.sum()) * 100 / n,
            "loss": None if (early_stop and attack.iterative or attack.name in APGD_NAMES + ("square",)) and eps > 0
            else float(loss.sum()) / n}


def ensemble(model, x, y, attacks: dict, *, eps: Optional[float] = None, batch_size: int = 1000,
             every: bool = False) -> dict:
    """Attacks run in order, each only on the examples that every earlier one failed on (AutoAttack's scheme): an
    example counts as robust only if all of them fail. ``attacks``: ``{label: attack(xb, yb) -> adversarial xb}``
    (a kit attack, another library's, ...). The caller picks the model's mode and precision. Every adversary is
    checked against the threat model (:func:`check_adversary`, within ``eps``; without ``eps``, an attack's own
    ``.eps`` attribute if it has one): a violation is an error naming the attack.

    ``every=True`` runs every attack on every example instead, so that ``"acc"`` (``{label: %}``) holds each
    attack's own accuracy and the worst case is never above any of them (one set of draws for both).

    Returns ``{"n", "clean" (%), "robust" (%, the ensemble's accuracy), "broke": {label: examples that attack
    broke first}, "robust_after": {label: % robust after it}, "seconds": {label: s}}`` (+ ``"acc"`` if ``every``)."""
    import time

    robust, _ = outcomes(model, lambda xb, yb: xb, x, y, batch_size=batch_size)
    n = len(y)
    out = {"n": n, "clean": float(robust.sum()) * 100 / n, "broke": {}, "robust_after": {}, "seconds": {}}
    for label, attack in attacks.items():
        t0 = time.perf_counter()
        idx = torch.arange(n, device=y.device) if every else robust.nonzero()[:, 0]
        broke = 0
        if idx.numel():
            ok, _ = outcomes(model, attack, x[idx], y[idx], batch_size=batch_size, eps=eps, name=label)
            if every:
                out.setdefault("acc", {})[label] = float(ok.sum()) * 100 / n
            broke = int((robust[idx] & ~ok).sum())
            robust[idx[~ok]] = False
        out["broke"][label], out["robust_after"][label] = broke, float(robust.sum()) * 100 / n
        out["seconds"][label] = time.perf_counter() - t0
    out["robust"] = float(robust.sum()) * 100 / n
    return out


def worst_case(model, x, y, attacks, eps: float, *, batch_size: int = 1000, seed: int = 0,
               every: bool = False) -> dict:
    """:func:`ensemble` of kit attack specs (e.g. ``"pgd:40,apgd-ce:100,apgd-t:100"``) at ``eps``, in fp32: the
    per-example worst case, and which attack broke what (``every``: see :func:`ensemble`)."""
    check_eps(eps)
    x, y = to_model_device(model, x, y)
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    named = {a.label: a.on(model, eps, generator=gen, early_stop=True)
             for a in parse_attacks(attacks, getattr(model, "dataset", "mnist"))}
    return ensemble(model, x, y, named, eps=eps, batch_size=batch_size, every=every)


def evaluate(model, x, y, attacks, eps: float, *, batch_size: int = 1000, precision: str = "fp32",
             seed: int = 0, progress: bool = False, early_stop: bool = True) -> dict:
    """White-box table: ``{label: {"acc": %, "loss": mean CE or None}}`` for every attack spec, at ``eps``.

    Iterative attacks stop early per example by default (see the module docstring); ``early_stop=False`` runs
    every step and reports their maximised loss too."""
    from tqdm.auto import tqdm

    dataset = getattr(model, "dataset", "mnist")
    out = {}
    for a in tqdm(parse_attacks(attacks, dataset), desc="attacks", disable=not progress, leave=False):
        out[a.label] = attack_stats(model, a, x, y, eps, batch_size=batch_size, precision=precision, seed=seed,
                                    early_stop=early_stop)
    return out


def transfer(source, target, x, y, attack="fgsm", eps: float = 0.3, **kw) -> dict:
    """Black-box: adversaries crafted on ``source``, accuracy and loss of ``target`` on them. A black-box source is
    a model ``target`` never trained against (not one of EAT's own static sources: hold those out)."""
    return attack_stats(target, parse_attack(attack, getattr(target, "dataset", "mnist")), x, y, eps,
                        source=source, **kw)


def sweep(model, x, y, attacks, eps_values: Sequence[float], *, batch_size: int = 1000, precision: str = "fp32",
          seed: int = 0, progress: bool = False) -> dict:
    """Accuracy and mean loss vs epsilon for each attack (Fig. 1/2 bottom, Fig. 3, Fig. 4).

    Returns ``{"eps": [...], "<label>": {"acc": [...], "loss": [...]}, ...}``.
    """
    from tqdm.auto import tqdm

    eps_values = [float(e) for e in eps_values]
    for e in eps_values:
        check_eps(e)
    dataset = getattr(model, "dataset", "mnist")
    out: dict = {"eps": eps_values}
    todo = [(a, e) for a in parse_attacks(attacks, dataset) for e in eps_values]
    for a, e in tqdm(todo, desc="sweep", disable=not progress, leave=False):
        r = attack_stats(model, a, x, y, e, batch_size=batch_size, precision=precision, seed=seed)
        entry = out.setdefault(a.label, {"acc": [], "loss": []})
        entry["acc"].append(r["acc"])
        entry["loss"].append(r["loss"])
    return out


def format_table(results: dict, title: str = "") -> str:
    """A plain-text table of ``{label: {"acc", "loss"}}``."""
    lines = [title] if title else []
    lines.append(f"{'attack':<14}{'accuracy %':>12}{'mean loss':>12}")
    for label, r in results.items():
        loss = "—" if r["loss"] is None else f"{r['loss']:.4f}"
        lines.append(f"{label:<14}{r['acc']:>12.2f}{loss:>12}")
    return "\n".join(lines)

"""`gmreg-lab audit`: is *this* model masking its gradients? The kit's checklist, white-box table and logit-distance
diagnostic for a model the kit did not train.

A model comes as a TorchScript file (``torch.jit.save``), a ``torch.export`` program (``torch.export.save``, .pt2),
``package.module:factory`` (a callable returning an ``nn.Module``; ``weights``: a state-dict file for it), or a
gmreg-lab run directory / checkpoint. It must take NCHW pixels in [0, 1] and return logits. Data: MNIST, CIFAR-10 or
a ``.pt`` file holding ``(images, labels)`` (or a dict with those keys). Every problem with the model or the data is
one :class:`~gmreg_lab.errors.GmregError` line.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import torch

from .. import data as data_mod
from ..config import check_eps
from ..diagnostics import kind_of, masking_report
from ..errors import GmregError
from ..evaluate import evaluate, worst_case
from ..models import to_model_device

DEFAULT_EPS = {"mnist": 0.3, "cifar10": 8 / 255}


def load_any_model(spec: str, *, weights: Optional[str] = None, device="cpu") -> torch.nn.Module:
    """A model from a TorchScript / torch.export file, ``package.module:factory`` or a gmreg-lab run."""
    path = Path(spec)
    if ":" in spec and not path.exists():
        model = _from_factory(spec)
    elif path.is_dir() or path.suffix == ".pt" and _is_gmreg_checkpoint(path):
        from ..runs import load_model
        model = load_model(path, device=device)
    elif path.is_file():
        model = _from_file(path)
    else:
        raise GmregError(f"{spec}: no such file, and not package.module:factory")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, OSError, ValueError, AttributeError, TypeError) as e:
            raise GmregError(f"--weights {weights} do not fit the model ({str(e).splitlines()[0]})") from None
    return model.to(device).eval()


def _is_gmreg_checkpoint(path: Path) -> bool:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain checkpoint (TorchScript, export, junk): decided by the caller
        return False
    return isinstance(ckpt, dict) and str(ckpt.get("format", "")).startswith("gmreg-lab")


class Exported(torch.nn.Module):
    """A ``torch.export`` program as a module the kit can attack: its graph module does not support ``eval()`` /
    ``train()`` (an exported program has no modes), so switching modes here leaves it alone."""

    def __init__(self, program):
        super().__init__()
        self.program = program

    def forward(self, x):
        return self.program(x)

    def train(self, mode: bool = True):
        self.training = mode
        return self


def _from_file(path: Path) -> torch.nn.Module:
    import logging

    errors = []
    for kind, load in (("TorchScript", lambda p: torch.jit.load(str(p), map_location="cpu")),
                       ("torch.export", lambda p: Exported(torch.export.load(str(p)).module()))):
        logging.disable(logging.WARNING)     # torch.export logs its own failure at length: one line is ours
        try:
            return load(path)
        except Exception as e:  # try the next format, report both
            errors.append(f"{kind}: {type(e).__name__}")
        finally:
            logging.disable(logging.NOTSET)
    raise GmregError(f"{path} is not a model file this kit can load (tried {', '.join(errors)}); save it with "
                     f"torch.jit.save or torch.export.save, or pass package.module:factory")


def _from_factory(spec: str) -> torch.nn.Module:
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise GmregError(f"cannot import {spec} ({e})") from None
    model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(model, torch.nn.Module):
        raise GmregError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_data(dataset: str, *, data_file: Optional[str] = None, limit: Optional[int] = None, data_dir=None):
    """``(x, y)``: the first ``limit`` test images of MNIST / CIFAR-10, or a user's ``(images, labels)`` file."""
    if data_file is None:
        return data_mod.load(dataset, "test", data_dir).tensors(limit)
    try:
        obj = torch.load(data_file, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: one line
        raise GmregError(f"{data_file} is not a tensor file ({type(e).__name__}); save (images, labels) with "
                         f"torch.save") from None
    x, y = (obj.get("images"), obj.get("labels")) if isinstance(obj, dict) else (tuple(obj) + (None, None))[:2]
    if not (torch.is_tensor(x) and torch.is_tensor(y)) or x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise GmregError(f"{data_file} must hold (images NCHW, labels N) tensors of the same length")
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.min() < 0 or x.max() > 1:
        raise GmregError(f"{data_file}: pixels must be in [0, 1] (got {float(x.min()):.3g} to {float(x.max()):.3g}); "
                         f"the model must take raw pixels and normalise inside")
    return x[:limit], y[:limit].long()


def check_model(model, x, y) -> int:
    """Forward passes on batches of three and two images: the right input shape (any batch size, as the attacks
    need), logits (not probabilities), no NaN, at least two classes; returns the number of classes."""
    for n in (3, 2):
        x2, y2 = to_model_device(model, x[:n], y[:n])
        try:
            with torch.no_grad():
                out = model(x2)
        except Exception as e:  # any shape / dtype mismatch: one line
            raise GmregError(f"the model fails on inputs of shape {tuple(x2.shape)} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); it must take NCHW batches of any size "
                             f"(export it with a dynamic batch dimension)") from None
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 2:
        raise GmregError(f"the model must return logits of shape (N, classes); it returned "
                         f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
    if out.shape[1] < 2:
        raise GmregError(f"the model returns {out.shape[1]} output per image; a classifier needs one logit per "
                         f"class, at least 2")
    if not torch.isfinite(out).all():
        raise GmregError("the model returns NaN or Inf on clean test images")
    # AutoAttack's check_range_output: every row in [0, 1] and summing to 1
    if out.min() >= -1e-5 and out.max() <= 1 + 1e-5 and torch.allclose(out.sum(1), torch.ones(2, device=out.device),
                                                                        atol=1e-3):
        raise GmregError("the model returns probabilities (rows in [0, 1] summing to 1); audit needs logits: "
                         "remove the final softmax")
    if int(y.max()) >= out.shape[1]:
        raise GmregError(f"labels go up to {int(y.max())} but the model has {out.shape[1]} classes")
    return out.shape[1]


# AutoAttack's check_randomized: outputs of repeated passes, each row scaled to unit L2 norm, may differ by this much
RANDOM_TOL = 1e-4
RANDOM_PASSES = 5


def check_deterministic(model, x, y, *, passes: int = RANDOM_PASSES) -> None:
    """AutoAttack's ``check_randomized``: ``passes`` forward passes of the same batch must give the same predictions
    and (rows scaled to unit norm) the same outputs within ``RANDOM_TOL``. A randomized model (a random defence, or
    dropout left on) makes every attack number here a single draw: a one-line error."""
    x, y = to_model_device(model, x, y)
    with torch.no_grad():
        outs = [model(x).float() for _ in range(passes)]
    outs = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in outs]
    diff = max(float((o - outs[0]).norm(dim=1).max()) for o in outs[1:])
    same_pred = all(torch.equal(o.argmax(1), outs[0].argmax(1)) for o in outs[1:])
    if diff > RANDOM_TOL or not same_pred:
        raise GmregError(f"the model's output changes between identical forward passes (normalised difference "
                         f"{diff:.2g} > {RANDOM_TOL:g}, or other predictions): a randomized model, or dropout left "
                         f"on; these attacks need a deterministic model (a randomized defence needs EoT attacks, "
                         f"AutoAttack's version='rand')")


def inference_uses_gradients(model, x) -> bool:
    """AutoAttack's ``check_dynamic``: whether a forward pass calls torch.autograd's ``grad`` or ``backward`` (a
    defence that optimises at inference time). Python modules only: a TorchScript / exported graph cannot be
    traced this way (False)."""
    import sys

    calls = []

    def trace(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_name in ("grad", "backward", "_make_grads") and "autograd" in code.co_filename:
            calls.append(code.co_name)
        return None
    old = sys.gettrace()
    sys.settrace(trace)
    try:
        model(x)
    finally:
        sys.settrace(old)
    return bool(calls)


def preflight(model, x, y, *, apgd_targets: int = 9) -> dict:
    """AutoAttack's pre-flight checks (fra31/auto-attack ``checks.py``) that apply here, before any attack runs.
    Errors (:class:`GmregError`, one line): a bad input shape, outputs that are not (N, classes) logits, fewer than 2
    classes, NaN, probabilities instead of logits, labels beyond the classes, a randomized model. Notes (the audit
    runs, the report says what to keep in mind): the number of classes for DLR (untargeted DLR needs 3 classes, the
    targeted DLR of APGD-T 4: below that APGD-T uses the target's cross-entropy, AutoAttack's 'ce-targeted'), APGD-T
    targets capped at classes - 1, and a model that computes gradients while it predicts (a dynamic defence).

    Returns ``{"classes", "apgd_targets", "notes": [one line each]}``."""
    from ..attacks import apgd_t_loss

    classes = check_model(model, x, y)
    check_deterministic(model, x[:250], y[:250])
    notes = []
    targets = min(apgd_targets, classes - 1)
    if targets < apgd_targets:
        notes.append(f"{classes} classes: APGD-T attacks {targets} target class(es), not {apgd_targets}")
    if apgd_t_loss(classes) != "dlr-t":
        notes.append(f"{classes} classes: the targeted DLR loss needs 4 (it reads the 4th largest logit), so APGD-T "
                     f"maximises the target's cross-entropy instead (AutoAttack's 'ce-targeted' loss)")
    if inference_uses_gradients(model, to_model_device(model, x[:2])[0]):
        notes.append("the model computes gradients while it predicts (a dynamic defence): attacks that differentiate "
                     "through it may not see what it does; an adaptive attack is needed (AutoAttack's "
                     "check_dynamic)")
    return {"classes": classes, "apgd_targets": targets, "notes": notes}


def audit(model, x, y, eps: float, *, steps: int = 40, square_queries: int = 1000, source=None,
          alpha: Optional[float] = None, seed: int = 0, apgd_steps: int = 100) -> dict:
    """The checklist (``masking_report``), a white-box table (clean, FGSM, PGD, APGD-CE, APGD-T, Square) with the
    per-example worst case, and a verdict in plain words. PGD takes ``steps`` steps of 2.5 eps / steps, APGD-CE and
    APGD-T ``apgd_steps`` each (100: AutoAttack's budget; fewer only for a quick look)."""
    check_eps(eps)
    x, y = to_model_device(model, x, y)
    pre = preflight(model, x, y)
    classes, targets = pre["classes"], pre["apgd_targets"]
    step = 2.5 * eps / steps
    table = {k: v["acc"] for k, v in evaluate(model, x, y, "clean,fgsm", eps, seed=seed).items()}
    # every attack on every image, one set of draws for the table and the worst case (never above any attack)
    worst = worst_case(model, x, y, f"pgd:{steps}:{step},apgd-ce:{apgd_steps},apgd-t:{apgd_steps}:{targets},"
                                    f"square:{square_queries}", eps, seed=seed, every=True)
    table.update(worst["acc"])
    report = masking_report(model, x, y, eps, alpha=alpha, step=step, steps=steps, source=source, seed=seed,
                            square_queries=square_queries).to_dict()
    return {"n": len(y), "eps": eps, "classes": classes, "preflight": pre["notes"], "table": table,
            "worst_case": worst, "checklist": report, "verdict": verdict(report)}


MEANING = {
    "iterative_beats_single_step": "a multi-step attack did worse than one step: its gradients mislead iteration",
    "single_step_close_to_iterative": "one gradient step finds far less than many: the loss surface is curved "
                                      "near the data, FGSM's linear guess fails (the masking the paper cures)",
    "no_label_leaking": "FGSM with the true label raised accuracy: the label leaks into the single-step adversary "
                        "(a separate effect of single-step training, not gradient masking)",
    "more_steps_and_restarts_dont_help": "more steps and restarts lowered PGD's accuracy beyond noise: the shorter "
                                         "PGD had not converged, so its number overstates robustness",
    "large_eps_reaches_chance": "an unbounded attack did not win: gradients are blocked or vanishing",
    "black_box_not_stronger": "another model's adversaries transfer better than the model's own: its gradients "
                              "are useless to an attacker",
    "gradient_free_not_stronger": "an attack that never reads a gradient beat the gradient-based one: the "
                                  "gradients are hidden or obfuscated",
    "gradient_beats_random_search": "a 20-query random search beat one gradient step: the gradient at the image "
                                    "points nowhere useful",
    "logit_distance_small": "a tiny random step changes the adversary's logits a lot: the paper's sign of masking "
                            "(the converse does not hold: a constant or saturated model has a small distance)",
    "gradients_not_vanishing": "many inputs have an exactly zero gradient: non-differentiable or saturated parts",
}

HEADINGS = {
    "masking": "Signs of gradient masking ({n}): treat the model's robustness numbers with suspicion",
    "convergence": "An attack had not converged ({n}): its accuracy overstates robustness; read the worst case, "
                   "or run the attack longer",
    "leaking": "Label leaking ({n}), not a sign of masking: the FGSM accuracy with true labels is inflated",
}


def verdict(report: dict) -> str:
    """Plain words: which checks failed, grouped by what a failure means (masking, an unconverged attack, label
    leaking), and what each failure means."""
    kinds = {c["name"]: kind_of(c) for c in report["checks"]}
    failed = report["failed"]
    if not failed:
        return ("No sign of gradient masking, no unconverged attack, no label leaking: every check passed. The "
                "white-box numbers (worst case above) are the model's robustness as far as these attacks can tell.")
    lines = [] if any(kinds[n] == "masking" for n in failed) else ["No sign of gradient masking."]
    for kind, heading in HEADINGS.items():
        names = [n for n in failed if kinds[n] == kind]
        if names:
            lines.append(heading.format(n=len(names)) + ":")
            lines += [f"- {name}: {MEANING.get(name, '')}" for name in names]
    return "\n".join(lines)

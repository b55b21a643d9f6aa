"""Notebook helpers: the series' training recipes, cached runs, early checkpoints, and the gradient-masking checklist.

Everything here only calls the compute package (torch only, no plotly / ipywidgets), so the notebooks stay thin:
``lab.recipe("fgsm", smoke=SMOKE)`` gives the config a notebook trains, ``lab.cached_train(cfg)`` trains it once
under ``runs/`` and returns it instantly afterwards. Smoke runs (the tests) go to a fresh temporary folder, so they
never read or pollute the full-mode cache.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from . import attacks as atk
from .config import TrainConfig, check_eps
from .errors import GmregError
from .evaluate import parse_attacks
from .train import TrainResult, train

log = logging.getLogger(__name__)

ENV_RUNS_DIR = "GMREG_RUNS_DIR"
MNIST_TRAIN_IMAGES = 50_000  # the training split after the 10k validation hold-out

# Full-mode recipes: short enough for a 2-core laptop CPU (about a minute each, PGD-AT a few), long enough to show
# the paper's effects (FGSM-AT masks its gradients within a few hundred iterations).
RECIPES: dict[str, dict] = {
    "normal": dict(method="normal", epochs=1, log_every=50),
    "fgsm": dict(method="fgsm", epochs=1, log_every=25),
    "rfgsm": dict(method="rfgsm", epochs=1, log_every=50),
    "fgsm_rfgsm": dict(method="fgsm_rfgsm", epochs=1, log_every=50),
    "proposed": dict(method="proposed", lam=5.0, epochs=1, log_every=25),
    "lambda0": dict(method="proposed", lam=0.0, epochs=1, log_every=25),
    "pgd": dict(method="pgd", epochs=1, limit=9_600, log_every=25),      # 300 iterations: PGD-40 is ~10x slower
    "normal_a": dict(method="normal", model="a", epochs=1, limit=12_800, log_every=100),   # black-box sources
    "normal_b": dict(method="normal", model="b", epochs=1, limit=12_800, log_every=100),
}

# Smoke mode (tests, CI): a handful of real MNIST images, a couple of iterations, tiny probes.
SMOKE = dict(epochs=1, batch_size=32, limit=64, val_size=200, probe_size=32, select_size=32, log_every=1,
             probe_pgd_steps=2, precision="fp32")


def recipe(name: str, *, smoke: bool = False, dataset: str = "mnist", **changes) -> TrainConfig:
    """The series' training config ``name`` (see ``RECIPES``); ``smoke=True`` shrinks it to a few iterations."""
    if name not in RECIPES:
        raise GmregError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    kw = {"dataset": dataset, **RECIPES[name]}
    if smoke:
        kw.update(SMOKE)
    kw.update(changes)
    return TrainConfig(**kw)


_SMOKE_DIR: Optional[Path] = None


def runs_dir(smoke: bool = False) -> Path:
    """Where notebook runs are cached: ``$GMREG_RUNS_DIR``, else the repository's ``runs/``.

    Smoke mode uses one fresh temporary folder per process instead (deleted at exit), so a smoke test always trains
    for real and never touches the full-mode cache.
    """
    global _SMOKE_DIR
    if smoke:
        if _SMOKE_DIR is None:
            _SMOKE_DIR = Path(tempfile.mkdtemp(prefix="gmreg-smoke-runs-"))
            atexit.register(shutil.rmtree, _SMOKE_DIR, ignore_errors=True)   # removed when the kernel exits
        return _SMOKE_DIR
    env = os.environ.get(ENV_RUNS_DIR)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    return repo / "runs" if (repo / "pyproject.toml").is_file() else Path.cwd() / "runs"


def run_name(cfg: TrainConfig, prefix: str = "nb") -> str:
    """A readable, config-specific folder name: the same config always maps to the same cached run."""
    digest = hashlib.sha1(cfg.to_json().encode()).hexdigest()[:8]
    lam = f"-lam{cfg.lam:g}" if cfg.method == "proposed" else ""
    return f"{prefix}-{cfg.dataset}-{cfg.model}-{cfg.method}{lam}-eps{cfg.eps:.3g}-{digest}"


def cached_train(cfg: TrainConfig, *, smoke: bool = False, callback=None, **kw) -> TrainResult:
    """``gl.train(cfg, runs_dir/run_name(cfg), resume=True)``: trains once, then returns the cached run at once.

    An interrupted run resumes from its last finished epoch. ``callback`` only sees rows of a run that trains now;
    a cached run's rows are in ``result.history``.
    """
    out = runs_dir(smoke) / run_name(cfg)
    return train(cfg, out, resume=True, callback=callback, progress=kw.pop("progress", False), **kw)


def train_until(cfg: TrainConfig, iteration: int, *, callback=None, **kw) -> TrainResult:
    """Train ``cfg`` in memory and stop at the first history row at or after ``iteration``.

    The run follows exactly the trajectory of ``train(cfg)`` (same seed, data order and noise), so
    ``result.model`` is an early checkpoint of that run (the paper's Fig. 1 bottom-left).
    """
    if not (isinstance(iteration, int) and iteration >= 1):
        raise GmregError(f"iteration must be an integer >= 1, got {iteration!r}")

    def stop_at(row):
        if callback is not None:
            callback(row)
        return row["event"] == "log" and row["iteration"] >= iteration

    return train(cfg, None, callback=stop_at, progress=kw.pop("progress", False), **kw)


def sweep(model, x, y, attacks, eps_values, *, batch_size: int = 1000, seed: int = 0) -> dict:
    """Accuracy and mean loss vs eps like ``gl.evaluate.sweep``, but every iterative attack runs *all* its steps.

    ``gl.evaluate`` stops attacking an example at its first misclassified iterate (the strongest accuracy
    measure, and cheap), so the loss it reports is the loss at that iterate, not the maximised loss. The loss plots
    of the paper (Fig. 1 bottom, Fig. 4) and the PGD - FGSM loss gap need the loss after all steps: this function.
    Same output format: ``{"eps": [...], "<label>": {"acc": [...], "loss": [...]}}``.
    """
    eps_values = [float(e) for e in eps_values]
    for e in eps_values:
        check_eps(e)
    dataset = getattr(model, "dataset", "mnist")
    specs = parse_attacks(attacks, dataset)
    model.eval()
    out: dict = {"eps": eps_values}
    for a in specs:
        entry = out.setdefault(a.label, {"acc": [], "loss": []})
        for eps in eps_values:
            gen = torch.Generator(device=x.device).manual_seed(seed)
            correct, loss = 0.0, 0.0
            for i in range(0, len(y), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                xa = _run_full(a, model, xb, yb, eps, gen)
                with torch.no_grad():
                    logits = model(xa).float()
                correct += float((logits.argmax(1) == yb).sum())
                loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            entry["acc"].append(correct * 100 / len(y))
            entry["loss"].append(loss / len(y))
    return out


def _run_full(a, model, x, y, eps, gen):
    if a.name == "clean" or eps == 0:
        return x
    if a.name == "fgsm":
        return atk.fgsm(model, x, y, eps)
    if a.name == "rfgsm":
        return atk.rfgsm(model, x, y, eps, min(a.step_size, eps), generator=gen)
    if a.name == "ifgsm":
        return atk.ifgsm(model, x, y, eps, a.steps)
    return atk.pgd(model, x, y, eps, a.step_size, a.steps, restarts=a.restarts, generator=gen)


def log_rows(history) -> list:
    """The periodic ``"log"`` rows of a training history (the probe measurements)."""
    return [r for r in history if r.get("event") == "log"]


def seconds_per_epoch(result: TrainResult, images: int = MNIST_TRAIN_IMAGES) -> float:
    """Training seconds for ``images`` images (a full MNIST epoch by default), from the run's measured time.

    Short runs (``limit``) train on fewer images; this scales their measured time per image, probes excluded.
    """
    m = result.metrics
    if not m or not m.get("train_seconds") or not m.get("iterations"):
        raise GmregError("this run has no finished epoch to time")
    cfg = result.config
    trained = min(m["iterations"] * cfg.batch_size, m["epochs_done"] * _train_images(cfg))
    return m["train_seconds"] / trained * images


def _train_images(cfg: TrainConfig) -> int:
    n = (60_000 if cfg.dataset == "mnist" else 50_000) - cfg.val_size
    return n if cfg.limit is None else min(cfg.limit, n)


def masking_checklist(table: dict, *, transfer_acc: Optional[float] = None, sweep: Optional[dict] = None,
                      logit_dist: Optional[float] = None, margin: float = 10.0, dist_limit: float = 10.0) -> list:
    """The gradient-masking checklist for one model, from results already computed.

    ``table``: ``evaluate`` output holding at least ``clean``, ``fgsm`` and one ``pgd-*`` entry (accuracy %).
    ``transfer_acc``: accuracy under a black-box FGSM transfer attack at the same eps (a masked model resists its
    own FGSM better than FGSM transferred from another model; 2 points of tolerance for sampling noise). ``sweep``: a ``sweep``
    output with a ``pgd-*`` entry. ``logit_dist``: the FGSM/R-FGSM logit distance. Returns a list of
    ``{"check", "ok", "detail"}``; ``ok=False`` is a sign of gradient masking. ``margin`` is in accuracy points.
    """
    pgd = [k for k in table if k.startswith("pgd")]
    for key in ("clean", "fgsm"):
        if key not in table:
            raise GmregError(f"the table needs a {key!r} entry; it has {', '.join(table)}")
    if not pgd:
        raise GmregError(f"the table needs a pgd entry; it has {', '.join(table)}")
    clean, fg, pg = table["clean"]["acc"], table["fgsm"]["acc"], table[pgd[-1]]["acc"]
    out = [
        {"check": "no label leaking: FGSM accuracy not above clean accuracy", "ok": fg <= clean,
         "detail": f"clean {clean:.1f}%, FGSM {fg:.1f}%"},
        {"check": f"single-step attack about as strong as multi-step: FGSM - {pgd[-1].upper()} accuracy < "
                  f"{margin:g} points", "ok": fg - pg < margin,
         "detail": f"FGSM {fg:.1f}%, {pgd[-1].upper()} {pg:.1f}%"},
    ]
    if transfer_acc is not None:
        out.append({"check": "white-box FGSM at least as strong as black-box FGSM (transferred)",
                    "ok": fg <= transfer_acc + 2.0,
                    "detail": f"white-box FGSM {fg:.1f}%, black-box FGSM {transfer_acc:.1f}%"})
    if sweep is not None:
        key = [k for k in sweep if k.startswith("pgd")]
        if not key:
            raise GmregError("the sweep needs a pgd entry")
        accs = sweep[key[0]]["acc"]
        out.append({"check": f"accuracy falls as eps grows (PGD at eps={sweep['eps'][-1]:g} below {margin:g}%)",
                    "ok": accs[-1] < margin,
                    "detail": f"{key[0].upper()} accuracy {accs[0]:.1f}% at eps={sweep['eps'][0]:g} -> "
                              f"{accs[-1]:.1f}% at eps={sweep['eps'][-1]:g}"})
    if logit_dist is not None:
        out.append({"check": f"FGSM and R-FGSM logits close (distance < {dist_limit:g})",
                    "ok": logit_dist < dist_limit, "detail": f"mean L2 distance {logit_dist:.2f}"})
    return out

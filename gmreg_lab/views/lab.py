"""Notebook helpers (``gl.lab``): the series' training recipes, cached runs, and timing.

Everything here only calls the compute package (torch only, no plotly / ipywidgets), so the notebooks stay thin:
``gl.lab.recipe("fgsm", smoke=SMOKE)`` gives the config a notebook trains, ``gl.lab.cached_train(cfg)`` trains it
once under ``runs/`` and returns it instantly afterwards. Smoke runs (the tests) go to a fresh temporary folder, so
they never read or pollute the full-mode cache.

What the core already does is not repeated here: loss / accuracy vs eps is ``gl.evaluate.sweep`` (every attack
step, maximised losses), early checkpoints are ``cached_train(cfg, snapshot_at=(N,))`` then
``gl.load_model(run.run_dir, which=f"iter:{N}")``, and the gradient-masking checklist is
``gl.diagnostics.masking_report``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from ..config import TrainConfig
from ..errors import GmregError
from ..runs import CHECKPOINT, load_checkpoint, log_rows, read_json, write_json
from ..training import TrainResult, train
from ..runners.cache import ENV_RUNS_DIR, run_dir, run_name, runs_dir  # noqa: F401 -- gl.lab.run_dir, ...
from ..runners.course import ENV_COURSE_BUILD, times_text

log = logging.getLogger(__name__)

MNIST_TRAIN_IMAGES = 50_000  # the training split after the 10k validation hold-out

# Full-mode recipes: as short as still shows the paper's effects (FGSM-AT masks its gradients within a few hundred
# iterations). How long each takes is measured, not written here: gl.lab.estimate_seconds on the machine at hand
# (shown on the progress bar before a run starts), and each notebook's first run in course/MANIFEST.json.
RECIPES: dict[str, dict] = {
    "normal": dict(method="normal", epochs=1, log_every=50),   # (400 iterations: at eps 0.3 FGSM breaks as many
    # images as PGD, and notebook 01's FGSM-vs-PGD lesson fails; one epoch keeps it)
    # notebook 01's first look: 100 iterations of 64 images at lr 0.05, seconds on a CPU (clean accuracy about 98 %);
    # enough to show one adversarial example fooling a model while the full "normal" run trains
    "first_look": dict(method="normal", epochs=1, batch_size=64, limit=6_400, lr=0.05, log_every=100,
                       probe_size=50, select_best=False),
    "fgsm": dict(method="fgsm", epochs=1, log_every=25),
    # baselines shown in 04's and 05's tables: 8 probe rows of 100 images (the probes cost as much as the training)
    "rfgsm": dict(method="rfgsm", epochs=1, log_every=200, probe_size=100),
    "fgsm_rfgsm": dict(method="fgsm_rfgsm", epochs=1, log_every=200, probe_size=100),
    "proposed": dict(method="proposed", lam=5.0, epochs=1, log_every=25),
    "lambda0": dict(method="proposed", lam=0.0, epochs=1, log_every=50),
    # PGD-AT: 1000 iterations of PGD-10 with step 0.075 (= 2.5 eps / 10, the fewer, larger steps Madry et al. use
    # for short budgets) instead of the paper's PGD-40 / 0.01, about 4x cheaper per step; benchmarks/pgd_at_recipe.py
    # scores both after 1000 iterations (BENCHMARKS.md: the PGD-10 recipe ends the more robust of the two)
    "pgd": dict(method="pgd", epochs=1, limit=32_000, log_every=25, pgd_steps=10, pgd_step_size=0.075),
    # notebook 04's live panel: a short budget that still shows whether a setting masks (benchmarks/live_panel.py:
    # at lr 0.02 FGSM-AT and lambda = 0 mask within ~350-500 iterations, lambda = 5 keeps its PGD probe at 40-50 %)
    "panel": dict(method="proposed", lam=5.0, epochs=1, limit=16_000, lr=0.02, log_every=50, probe_size=100,
                  select_best=False),
    "fgsm_rs": dict(method="fgsm_rs", epochs=1, log_every=50),                  # Wong et al. 2020
    "nfgsm": dict(method="nfgsm", epochs=1, log_every=50),                      # de Jorge et al. 2022
    "gradalign": dict(method="gradalign", epochs=1, log_every=50),              # Andriushchenko & Flammarion 2020
    "eat": dict(method="eat", epochs=1, log_every=200, probe_size=100),   # sources: eat_recipe() trains A and B
    "normal_a": dict(method="normal", model="a", epochs=1, limit=12_800, log_every=100),   # black-box sources
    "normal_b": dict(method="normal", model="b", epochs=1, limit=12_800, log_every=100),
}

# Smoke mode (tests, CI): a handful of real MNIST images, a couple of iterations, tiny probes.
SMOKE = dict(epochs=1, batch_size=32, limit=64, val_size=200, probe_size=32, select_size=32, log_every=1,
             probe_pgd_steps=2, precision="fp32")
# CIFAR-10 (notebook 06): a ResNet-18 for one epoch; on a CPU only CPU_LIMIT training images (a pipeline check)
CIFAR = dict(model="resnet18", epochs=1, log_every=50)
CIFAR_CPU_LIMIT = 1_280   # 20 iterations of 64: on a CPU notebook 06 is a pipeline check (its claims need a GPU)
CIFAR_SMOKE = dict(batch_size=16, limit=32, val_size=20, probe_size=8, select_size=8, log_every=1, probe_pgd_steps=1,
                   precision="fp32")


def course_time(notebook: str, manifest=None) -> str:
    """One line for a notebook's set-up cell: how long ``notebook`` (e.g. "03_logit_distance") took in the last
    ``./kit.sh course`` build, on the machine that build names, from ``course/MANIFEST.json``."""
    import json

    building = bool(os.environ.get(ENV_COURSE_BUILD))
    default = Path(__file__).resolve().parents[2] / "course" / "MANIFEST.json"
    manifest = Path(manifest) if manifest is not None else default
    first = ("How long: this page was made by the course build, whose banner at the top gives this build's time; "
             if building else "How long, ")
    try:
        e = json.loads(manifest.read_text())[notebook]
    except (OSError, ValueError, KeyError):
        return f"{first}no course build has timed {notebook} yet (./kit.sh course records it)."
    return (f"{first}{'in the build before it' if building else 'in the course build'} of {e.get('started', '?')} "
            f"on {e.get('machine', '?')}: {times_text(e)}"
            + (" (the notebook changed since that build)" if e.get("stale") else ""))


def machine() -> str:
    """One line for a notebook's set-up cell: this machine's CPU and bf16 units, and the precision the kit's
    default ``"auto"`` computes in here (times quoted in a notebook's header come from the machine they name)."""
    import torch

    from ..runtime import cpu_description, resolve_precision

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = f", GPU {torch.cuda.get_device_name()}" if dev == "cuda" else ""
    import os

    from ..runtime import ENV_PRECISION

    forced = os.environ.get(ENV_PRECISION, "").strip()
    why = f" (set by ${ENV_PRECISION}={forced})" if forced else ""
    return (f"This machine: {cpu_description()}{gpu}, {torch.get_num_threads()} torch thread(s); precision 'auto' "
            f"computes in {resolve_precision('auto', dev)} here{why}")


def recipe(name: str, *, smoke: bool = False, dataset: str = "mnist", **changes) -> TrainConfig:
    """The series' training config ``name`` (see ``RECIPES``); ``smoke=True`` shrinks it to a few iterations.
    ``dataset="cifar10"``: notebook 06's settings (ResNet-18, one epoch; ``CIFAR_CPU_LIMIT`` images without a GPU)."""
    if name not in RECIPES:
        raise GmregError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    kw = {"dataset": dataset, **RECIPES[name]}
    if dataset == "cifar10":
        import torch

        kw.update(CIFAR, limit=None if torch.cuda.is_available() else CIFAR_CPU_LIMIT)
    if smoke:
        kw.update(SMOKE if dataset == "mnist" else {**SMOKE, **CIFAR_SMOKE})
    kw.update(changes)
    return TrainConfig(**kw)


def eat_recipe(*, smoke: bool = False, sources=("normal_a", "normal_b"), **changes) -> TrainConfig:
    """Ensemble adversarial training as the series runs it: the model being trained plus the static models
    ``sources`` (recipes, trained and cached here if missing) as the FGSM sources."""
    runs = cached_train_many({s: recipe(s, smoke=smoke) for s in sources}, smoke=smoke)   # side by side
    dirs = tuple(str(runs[s].run_dir) for s in sources)
    return recipe("eat", smoke=smoke, eat_sources=dirs, **changes)


def cached_train(cfg: TrainConfig, *, smoke: bool = False, root=None, callback=None, snapshot_at=(),
                 **kw) -> TrainResult:
    """``gl.train(cfg, run_dir(cfg), resume=True)``: trains once, then returns the cached run at once.

    A run that is not cached yet shows a progress bar (``progress=True``, the default) whose label says, before the
    first step, how long it will take on this machine (:func:`estimate_seconds`, measured here, not a constant); the
    bar then counts iterations with the time left. An interrupted run resumes from its last finished epoch.
    ``callback`` only sees rows of a run that trains now;
    a cached run's rows are in ``result.history``. ``snapshot_at``: iterations whose weights the run keeps
    (``gl.train(..., snapshot_at=...)``), loaded back with ``gl.load_model(result.run_dir, which=f"iter:{N}")``.
    A cached run that went past one of them without keeping it (runs cached before snapshots existed) is trained
    again from scratch, with a warning: same config and seed, so the same weights, now with the snapshot.
    """
    snapshot_at = tuple(snapshot_at)
    for n in snapshot_at:
        if not (isinstance(n, int) and n >= 1):
            raise GmregError(f"snapshot iterations must be integers >= 1, got {n!r}")
    out = run_dir(cfg, smoke=smoke, root=root)
    missing = _missing_snapshots(out, cfg, snapshot_at)
    if missing:
        log.warning("cached run %s has no snapshot at iteration %s (trained without snapshot_at): training it again",
                    out, ", ".join(map(str, missing)))
    progress = kw.pop("progress", True)
    if (progress is True and cfg.iterations >= ESTIMATE_FROM and (missing or not _finished(out, cfg))
            and not missing_data(cfg)):
        est = estimate_seconds(cfg, device=kw.get("device", "auto"))
        progress = f"trains {describe(cfg)}: about {format_seconds(est)} on this machine"
        log.info("%s (measured here: %s)", progress, est)
    res = train(cfg, out, resume=not missing, overwrite=bool(missing), callback=callback,
                progress=progress, snapshot_at=snapshot_at, **kw)
    if cfg.precision == "auto":     # the folder's name holds "auto": a run cached where auto meant the other one
        from ..runtime import resolve_precision

        here = resolve_precision("auto", next(res.model.parameters()).device)
        if res.config.precision != here:
            log.warning("cached run %s was trained in %s, and precision 'auto' computes in %s here: its numbers are "
                        "that precision's (delete the folder to train it again in %s)", out, res.config.precision,
                        here, here)
    beyond = [n for n in snapshot_at if n > res.metrics.get("iterations", 0)]
    if beyond and res.metrics.get("complete"):
        raise GmregError(f"snapshot_at={beyond} is past the end of the run ({res.metrics['iterations']} iterations)")
    return res


def cached_train_many(cfgs: dict, *, smoke: bool = False, root=None, jobs: Optional[int] = None,
                      device="auto") -> dict:
    """``{name: cached_train(cfg)}`` for every ``name: cfg``, training the runs not cached yet side by side first:
    ``jobs`` worker processes (default: one per CPU core, one thread each; 1 in smoke mode, where a process's start
    costs more than the runs), which on a CPU do more work per second than one process with every thread
    (BENCHMARKS.md). One progress bar counts all their iterations; its label says, before the first step, how long
    the slowest lane will take, from :func:`estimate_seconds` measured here with one thread. Runs that need others
    (EAT's sources) wait for the wave before theirs. The results are the cached runs, as ``cached_train`` returns."""
    from ..runners import jobs as jobs_mod
    from ..runtime import resolve_device

    root_dir = Path(root) if root is not None else runs_dir(smoke)
    todo = {}
    for cfg in cfgs.values():
        if not _finished(run_dir(cfg, root=root_dir), cfg) and not missing_data(cfg):
            todo[run_name(cfg)] = cfg
    if jobs is None:
        jobs = 1 if smoke else jobs_mod.default_jobs(device, len(todo))
    n = min(jobs, len(todo))
    if n > 1:
        import torch

        before = torch.get_num_threads()
        threads = max(1, before // n)
        torch.set_num_threads(threads)
        try:     # each worker runs with `threads` threads: time a step as the worker will run it
            est = {k: estimate_seconds(cfg, device=device) for k, cfg in todo.items()}
        finally:
            torch.set_num_threads(before)
        todo = {k: todo[k] for k in sorted(est, key=est.get, reverse=True)}   # longest first: the pool hands
        lanes = [0.0] * n                                                     # each free worker the next run
        for k in todo:
            lanes[lanes.index(min(lanes))] += est[k]
        label = (f"trains {len(todo)} runs in {n} processes ({', '.join(describe(c) for c in todo.values())}): "
                 f"about {format_seconds(max(lanes))} on this machine")
        log.info("%s (measured here: %s)", label, est)
        jobs_mod.train_runs(todo, root_dir, jobs=n, device=resolve_device(device), progress=label)
    return {name: cached_train(cfg, smoke=smoke, root=root_dir, device=device) for name, cfg in cfgs.items()}


def _missing_snapshots(out: Path, cfg: TrainConfig, wanted: tuple) -> list:
    """Iterations in ``wanted`` that the run of ``cfg`` cached in ``out`` went past without keeping a snapshot."""
    if not wanted or not (out / CHECKPOINT).is_file():
        return []
    ckpt = load_checkpoint(out)
    if not TrainConfig.from_dict(ckpt["config"]).same_run(cfg):
        return []        # another run: never overwritten here, gl.train reports the clash
    return [n for n in wanted if n <= ckpt.get("iteration", 0) and n not in (ckpt.get("snapshots") or {})]


RECORDED_DIR = Path(__file__).resolve().parent.parent / "recorded"   # gmreg_lab/recorded/<recipe>.json
RECORDED_KEYS = ("iteration", "acc_clean", "acc_fgsm", "acc_pgd", "logit_dist")


def record(name: str, *, out_dir=None, smoke: bool = False, device="auto", progress=True) -> Path:
    """Train recipe ``name`` afresh (in a temporary folder: never a cached run, and never a run in the series'
    cache, whose snapshots a notebook expects) and write its probe curve to ``out_dir/<name>.json`` (default the
    package's ``recorded/``, what :func:`recorded` reads): the recipe's config, the probe rows, the wall time of the
    training, probes included, and the environment of the training (machine, commit, source hash, command, time).
    ``gmreg-lab record NAME`` runs it. A notebook draws the recorded curve at once, beside the run it trains live."""
    import tempfile
    import time

    cfg = recipe(name, smoke=smoke)
    with tempfile.TemporaryDirectory(prefix="gmreg-record-") as tmp:
        t0 = time.perf_counter()
        res = train(cfg, Path(tmp) / "run", device=device, progress=progress)
        wall = time.perf_counter() - t0
    rows = [{k: r[k] for k in RECORDED_KEYS if k in r} for r in log_rows(res.history)]
    doc = {"recipe": name, "config": cfg.to_dict(), "rows": rows, "wall_seconds": wall,
           "precision": res.metrics.get("precision"),
           "train_seconds": res.metrics.get("train_seconds"), "environment": res.metrics.get("environment", {})}
    path = Path(out_dir) if out_dir is not None else RECORDED_DIR
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / f"{name}.json", doc)
    return path / f"{name}.json"


def recorded(name: str, *, path=None) -> dict:
    """The recorded curve of recipe ``name`` (written by :func:`record`): ``{"rows", "config" (a TrainConfig),
    "label", ...}``, with ``label`` naming where and when it was trained ("recorded: AMD EPYC, 2 cores, 2026-12-02,
    fp32, 2.6 min with its probes"), for ``gl.plots.training_curves(..., recorded=...)``. Raises GmregError when
    there is none or it is broken."""
    f = Path(path) if path is not None else RECORDED_DIR / f"{name}.json"
    if not f.exists():
        raise GmregError(f"no recorded curve for recipe {name!r} at {f}; make it with `gmreg-lab record {name}`")
    try:
        doc = read_json(f)
        config = TrainConfig.from_dict(doc["config"])
        rows = doc["rows"]
    except (ValueError, KeyError, TypeError) as e:
        raise GmregError(f"the recorded curve {f} is broken ({type(e).__name__}: {e}); re-make it with "
                         f"`gmreg-lab record {name}`") from None
    if not isinstance(rows, list) or not rows:
        raise GmregError(f"the recorded curve {f} holds no probe rows; re-make it with `gmreg-lab record {name}`")
    env = doc.get("environment", {})
    when = str(env.get("time") or "")[:10]
    took = doc.get("wall_seconds")
    where = env.get("gpu") or ", ".join(str(env.get("cpu") or env.get("device") or "unknown machine").split(", ")[:2])
    bits = [where, when, doc.get("precision") or env.get("precision_auto") or "",
            format_seconds(took) + " with its probes" if took else ""]
    return {**doc, "config": config, "label": "recorded: " + ", ".join(b for b in bits if b)}


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
    return cfg.train_images


# --- how long a run will take on this machine ---------------------------------------------------------------------
ESTIMATE_FROM = 200   # iterations: shorter runs (smoke runs, 01's first look) get a plain progress bar: measuring the
# machine's speed first (seconds) would cost a large part of their run
_SPEED: dict = {}     # (what decides a step's and a probe's cost) -> (seconds per step, seconds per probe row)


def _finished(out: Path, cfg: TrainConfig) -> bool:
    from ..runs import read_json

    try:
        m = read_json(out / "metrics.json")
    except Exception:
        return False
    return bool(m.get("complete")) and m.get("epochs_done") == cfg.epochs


def missing_data(cfg: TrainConfig) -> bool:
    """True when the dataset's files are not here (training will report it; nothing to time)."""
    from .. import data

    try:
        data.load(cfg.dataset, "train")
    except Exception:
        return True
    return False


def describe(cfg: TrainConfig) -> str:
    """``"pgd, 1000 iterations"``: what a run trains, for a progress bar."""
    lam = f" (λ = {cfg.lam:g})" if cfg.method == "proposed" else ""
    return f"{cfg.method}{lam}, {cfg.iterations} iterations"


def format_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def estimate_seconds(cfg: TrainConfig, *, device="auto", steps: int = 5, cached: bool = True) -> float:
    """Seconds ``cfg`` will take to train on this machine, from a measurement made here and now: ``steps`` training
    steps of its method (after two warm-up steps) on random images of the right shape, and one probe row, scaled to
    the run's iterations and probe rows (model selection adds one I-FGSM-3 pass over ``select_size`` images per
    epoch, timed as a probe). Cached per process for the settings that decide the cost; a few seconds the first
    time (PGD-AT's steps are the slowest). A busy machine measures itself slow: the estimate follows."""
    import time

    import torch

    from ..diagnostics import probe
    from ..runtime import resolve_device, resolve_precision
    from ..training import standalone_step

    dev = resolve_device(device)
    precision = resolve_precision(cfg.precision, dev.type)
    key = (cfg.dataset, cfg.model, cfg.method, cfg.batch_size, cfg.pgd_steps, cfg.probe_size, cfg.probe_pgd_steps,
           len(cfg.eat_sources), precision, str(dev), torch.get_num_threads())
    if key not in _SPEED or not cached:     # cached=False: measure again now (a side-by-side comparison)
        step = standalone_step(cfg.replace(precision=precision, eps_warmup_epochs=0.0), dev)
        model = step.model
        shape = (3, 32, 32) if cfg.dataset == "cifar10" else (1, 28, 28)
        x = torch.rand((cfg.batch_size, *shape), generator=torch.Generator().manual_seed(0)).to(dev)
        y = torch.randint(0, 10, (cfg.batch_size,), generator=torch.Generator().manual_seed(0)).to(dev)
        for _ in range(2):      # warm-up: allocations and first-call dispatch are not a step's cost
            step(x, y)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = step(x, y)
        float(loss.detach())
        per_step = (time.perf_counter() - t0) / steps
        xp = torch.rand((cfg.probe_size, *shape), generator=torch.Generator().manual_seed(1)).to(dev)
        yp = torch.randint(0, 10, (cfg.probe_size,), generator=torch.Generator().manual_seed(1)).to(dev)
        model.eval()
        t0 = time.perf_counter()
        probe(model, xp, yp, cfg.eps, cfg.alpha, cfg.probe_pgd_steps)
        per_probe = time.perf_counter() - t0
        _SPEED[key] = (per_step, per_probe)
    per_step, per_probe = _SPEED[key]
    rows = cfg.iterations / cfg.log_every + cfg.epochs
    select = cfg.epochs * per_probe * cfg.select_size / cfg.probe_size * 0.3 if cfg.select_best else 0.0
    return cfg.iterations * per_step + rows * per_probe + select

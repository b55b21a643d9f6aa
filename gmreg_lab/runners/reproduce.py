"""`gmreg-lab reproduce`: the paper's MNIST (and CIFAR-10) experiments end to end.

Trains every method of Table 3 (plus the static models of Table 2 that ensemble adversarial training needs) into
``<out>/runs/<name>`` — each run cached and resumable — then writes Table 3 (white-box), Table 5 (black-box),
Table 7 (time per epoch, measured in this run), the data of Fig. 1-4, a gradient-masking checklist per model and an
independent cross-check with torchattacks, as Markdown + JSON (+ plotly HTML figures when plotly is installed).
Each phase is one function below; every evaluation is cached in ``<out>/eval/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import data as data_mod
from . import jobs as jobs_mod
from .. import paper
from ..config import TrainConfig
from ..diagnostics import masking_report
from ..errors import GmregError
from ..evaluate import Attack, evaluate, outcomes, sweep, transfer
from .report_tables import render_markdown
from ..runs import atomic_write_text, environment_info, load_checkpoint, load_model, log_rows, read_json, write_json
from ..runtime import resolve_device

log = logging.getLogger(__name__)

# Table 2: EAT network -> (its architecture, its static pre-trained sources); CIFAR-10 as in the paper's Sec. 5.2
EAT_SOURCES = {"mnist": {"eat_a": ("a", ("a", "b", "c")), "eat_b": ("b", ("b", "c", "d")),
                         "eat_c": ("c", ("c", "d", "a")), "eat_d": ("d", ("d", "a", "b"))},
               "cifar10": {"eat_a": ("resnet34", ("resnet34", "resnet18")),
                           "eat_b": ("resnet34", ("resnet34", "vgg16")),
                           "eat_c": ("resnet34", ("resnet18", "vgg16"))}}
STATIC_MODELS = {"mnist": ("a", "b", "c", "d"), "cifar10": ("resnet34", "resnet18", "vgg16", "vgg11", "vgg19")}
TABLE5_SOURCES = {"mnist": ("static_a", "static_b"), "cifar10": ("static_vgg11", "static_vgg19")}
TABLE3_ORDER = paper.ROW_ORDER
FIGURE_RUNS = ("fgsm", "pgd", "proposed")            # Fig. 1-4: logit distance over training, loss vs eps
MASKING_RUNS = ("fgsm", "proposed_lam0", "pgd", "proposed")
CROSSCHECK_RUNS = ("proposed", "pgd")


@dataclass(frozen=True)
class Scale:
    name: str
    train: dict                     # TrainConfig overrides for every method
    static: dict                    # overrides for the static models of EAT
    eval_limit: Optional[int]       # test images for the tables (None = all 10k)
    attacks: str                    # Table 3 columns
    early_iter: int                 # the "early" checkpoint of Fig. 1/2 (iterations)
    fig_limit: int                  # test images for the loss/accuracy-vs-eps figures
    fig_eps: tuple
    fig_pgd_steps: int
    crosscheck_limit: int           # test images for the torchattacks cross-check (0 = skip)
    apgd_targets: int               # target classes of APGD-T
    masking_limit: int
    pgd: dict = field(default_factory=dict)   # extra overrides for PGD-AT
    square_queries: int = 1000                # the checklist's gradient-free attack (Square) budget
    autoattack_cpu: int = 0                   # AutoAttack headline: first N test images on a CPU (0 = skip)
    autoattack_gpu: Optional[int] = None      # ... and on a GPU (None = all 10k)
    autoattack_budget: dict = field(default_factory=dict)   # smaller steps / queries (smoke only)


MNIST_SCALES = {
    "smoke": Scale("smoke", dict(limit=256, epochs=1, val_size=500, select_size=64, probe_size=32, log_every=2,
                                 probe_pgd_steps=2, lr_milestones=(0.5,)),
                   dict(limit=256, epochs=1, val_size=500, select_size=64, probe_size=32, log_every=4,
                        probe_pgd_steps=2), eval_limit=64, attacks="clean,fgsm,ifgsm:4,pgd:4,pgd:8",
                   early_iter=2, fig_limit=32, fig_eps=(0.0, 0.15, 0.3), fig_pgd_steps=4, crosscheck_limit=32,
                   apgd_targets=1, masking_limit=32, pgd=dict(pgd_steps=4, pgd_step_size=0.1), square_queries=10,
                   autoattack_cpu=16, autoattack_gpu=16, autoattack_budget=dict(steps=5, queries=20)),
    "quick": Scale("quick", dict(epochs=2, lr_milestones=(1.0, 1.5), log_every=50),
                   dict(epochs=1, lr_milestones=(0.5,), log_every=200), eval_limit=1000,
                   attacks="clean,fgsm,ifgsm:40,pgd:40,pgd:100", early_iter=200, fig_limit=200,
                   fig_eps=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), fig_pgd_steps=40, crosscheck_limit=1000,
                   apgd_targets=3, masking_limit=500, pgd=dict(epochs=1, lr_milestones=(0.5, 0.75)),
                   square_queries=300, autoattack_cpu=0, autoattack_gpu=1000),
    "paper": Scale("paper", dict(), dict(epochs=6), eval_limit=None,
                   attacks="clean,fgsm,ifgsm:40,pgd:40,pgd:100", early_iter=1000, fig_limit=1000,
                   fig_eps=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5), fig_pgd_steps=40,
                   crosscheck_limit=1000, apgd_targets=9, masking_limit=1000, autoattack_cpu=1000),
}


CIFAR_SCALES = {
    "smoke": Scale("smoke", dict(model="resnet18", limit=32, epochs=1, batch_size=16, val_size=20, select_size=8,
                                 probe_size=8, log_every=2, probe_pgd_steps=1, lr_milestones=(0.5,)),
                   dict(limit=32, epochs=1, batch_size=16, val_size=20, select_size=8, probe_size=8, log_every=2,
                        probe_pgd_steps=1), eval_limit=8, attacks="clean,fgsm,ifgsm:2,pgd:2,pgd:3", early_iter=1,
                   fig_limit=8, fig_eps=(0.0, 8 / 255), fig_pgd_steps=2, crosscheck_limit=0, apgd_targets=1,
                   masking_limit=4, pgd=dict(pgd_steps=2), square_queries=5),
    "paper": Scale("paper", dict(), dict(epochs=30), eval_limit=None, attacks="clean,fgsm,ifgsm:7,pgd:7,pgd:20",
                   early_iter=1000, fig_limit=1000, fig_eps=tuple(i / 255 for i in range(0, 17, 2)),
                   fig_pgd_steps=7, crosscheck_limit=1000, apgd_targets=9, masking_limit=1000, autoattack_cpu=1000),
}
SCALES = {"mnist": MNIST_SCALES, "cifar10": CIFAR_SCALES}


# --- what is trained ------------------------------------------------------------------------------------------------
def plan(dataset: str, scale: Scale) -> dict[str, TrainConfig]:
    """Every run of the reproduction but EAT, in training order (static EAT sources first), as name -> config."""
    base = TrainConfig(dataset=dataset)
    runs: dict[str, TrainConfig] = {f"static_{m}": base.replace(model=m, method="normal", **scale.static)
                                    for m in STATIC_MODELS[dataset]}
    t = scale.train
    runs["normal"] = base.replace(method="normal", **t)
    runs["fgsm"] = base.replace(method="fgsm", **t)
    runs["rfgsm"] = base.replace(method="rfgsm", **t)
    runs["fgsm_rfgsm"] = base.replace(method="fgsm_rfgsm", **t)
    runs["proposed_lam0"] = base.replace(method="proposed", lam=0.0, **t)
    runs["proposed"] = base.replace(method="proposed", **t)
    runs["pgd"] = base.replace(method="pgd", **{**t, **scale.pgd})
    return runs


def _eat_runs(dataset: str, scale: Scale, out: Path) -> dict[str, TrainConfig]:
    base = TrainConfig(dataset=dataset)
    return {name: base.replace(**{**scale.train, "model": model}, method="eat",
                               eat_sources=tuple(str(out / "runs" / f"static_{s}") for s in sources))
            for name, (model, sources) in EAT_SOURCES[dataset].items()}


def all_runs(dataset: str, scale: Scale, out: Path) -> dict[str, TrainConfig]:
    runs = plan(dataset, scale)
    statics = {k: v for k, v in runs.items() if k.startswith("static_")}
    rest = {k: v for k, v in runs.items() if not k.startswith("static_")}
    return {**statics, **_eat_runs(dataset, scale, out), **rest}


def select_runs(runs: dict, methods) -> dict:
    """The runs named in ``methods`` (comma-separated or a list), plus the static sources their EAT runs need."""
    if not methods:
        return runs
    wanted = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    bad = [m for m in wanted if m not in runs]
    if bad:
        raise GmregError(f"unknown run(s) {', '.join(bad)}; valid: {', '.join(runs)}")
    needed = set(wanted)
    for m in wanted:
        if m.startswith("eat_"):
            needed |= {Path(s).name for s in runs[m].eat_sources}
    return {k: v for k, v in runs.items() if k in needed}


# --- the phases -----------------------------------------------------------------------------------------------------
@dataclass
class Reproduction:
    """What every phase needs: the scale, the runs, where they live, the test set and the device."""
    dataset: str
    sc: Optional[Scale]                              # None: the suite's runs (suite.py), not a paper scale
    out: Path
    runs: dict
    test: data_mod.Split
    dev: torch.device
    data_dir: Optional[str] = None
    progress: bool = True
    jobs: int = 1                                    # training runs in parallel worker processes
    shard: Optional[tuple] = None                    # (I, N): train only this share of the runs
    histories: dict = field(default_factory=dict)

    def model(self, name: str, which: str = "best"):
        return load_model(self.out / "runs" / name, which=which, device=self.dev)

    def cached(self, file: str, compute: Callable, *args):
        """``compute(*args)``, stored in ``<out>/eval/<file>``; read back instead when it is there."""
        path = self.out / "eval" / file
        if path.exists():
            try:
                return read_json(path)
            except GmregError:
                pass   # a corrupt cache entry is computed again
        value = compute(*args)
        write_json(path, value)
        return value

    def present(self, names) -> list:
        return [n for n in names if n in self.runs]


def train_runs(r: Reproduction) -> dict:
    """Train (or resume, or reuse) every run, ``r.jobs`` at a time; their settings and times per epoch."""
    snaps = {name: (r.sc.early_iter,) for name in FIGURE_RUNS}
    metrics = jobs_mod.train_runs(r.runs, r.out / "runs", jobs=r.jobs, device=r.dev, data_dir=r.data_dir,
                                  progress=r.progress, snapshot_at=snaps, shard=r.shard)
    return {name: {"config": m.get("config"), "seconds_per_epoch": m.get("seconds_per_epoch"),
                   "epoch_seconds": m.get("epoch_seconds"), "best_epoch": m.get("best_epoch"),
                   "train_device": m.get("device")} for name, m in metrics.items()}


def table3(r: Reproduction) -> dict:
    """White-box accuracy of every run under the scale's attacks."""
    x, y = r.test.tensors(r.sc.eval_limit)

    def one(name):
        return evaluate(r.model(name), x, y, r.sc.attacks, r.runs[name].eps, progress=r.progress)
    return {name: r.cached(f"{name}.json", one, name) for name in r.present(TABLE3_ORDER)}


def table5(r: Reproduction) -> dict:
    """Black-box FGSM: adversaries from the normally trained A and B (MNIST) / VGG (CIFAR-10) models."""
    x, y = r.test.tensors(r.sc.eval_limit)

    def one(src, tgt):
        return transfer(r.model(src), r.model(tgt), x, y, "fgsm", r.runs[tgt].eps)
    return {f"{src}->{tgt}": r.cached(f"transfer_{src}_{tgt}.json", one, src, tgt)
            for src in r.present(TABLE5_SOURCES[r.dataset]) for tgt in r.present(("pgd", "proposed"))}


def figure_data(r: Reproduction) -> dict:
    """Fig. 1-4 data: each run's history (kept in ``r.histories``) and loss / accuracy vs eps sweeps of its early
    snapshot and its last epoch."""
    xf, yf = r.test.tensors(r.sc.fig_limit)
    sweeps, missing = {}, []

    def one(name, which):
        return sweep(r.model(name, which), xf, yf, f"fgsm,rfgsm,pgd:{r.sc.fig_pgd_steps}", r.sc.fig_eps,
                     progress=r.progress)
    for name in r.present(FIGURE_RUNS):
        ckpt = load_checkpoint(r.out / "runs" / name)
        r.histories[name] = log_rows(ckpt["history"])
        for which in (f"iter:{r.sc.early_iter}", "last"):
            if which != "last" and r.sc.early_iter not in (ckpt.get("snapshots") or {}):
                log.warning("%s has no snapshot at iteration %d (trained without it): early sweep skipped",
                            name, r.sc.early_iter)
                missing.append(f"{name}@{which}")
                continue
            sweeps[f"{name}@{which}"] = r.cached(f"sweep_{name}_{which.replace(':', '')}.json", one, name, which)
    return {"early_iter": r.sc.early_iter, "sweeps": sweeps, "missing": missing}


def masking(r: Reproduction) -> dict:
    """The gradient-masking checklist of each adversarially trained run (black-box source: the first Table 5
    source, when trained)."""
    xm, ym = r.test.tensors(r.sc.masking_limit)
    sources = r.present(TABLE5_SOURCES[r.dataset])

    def one(name):
        cfg = r.runs[name]
        return masking_report(r.model(name), xm, ym, cfg.eps, alpha=cfg.alpha, step=cfg.pgd_step_size,
                              steps=r.sc.fig_pgd_steps, large_eps_steps=round(2.5 * r.sc.fig_pgd_steps),
                              source=r.model(sources[0]) if sources else None,
                              square_queries=r.sc.square_queries).to_dict()
    return {name: r.cached(f"masking_{name}.json", one, name) for name in r.present(MASKING_RUNS)}


def crosschecks(r: Reproduction) -> dict:
    """Our strongest attacks beside an independent library's, on the robust runs (:func:`crosscheck`)."""
    if not r.sc.crosscheck_limit:
        return {}
    xc, yc = r.test.tensors(r.sc.crosscheck_limit)

    def one(name):
        cfg = r.runs[name]
        return crosscheck(r.model(name), xc, yc, cfg.eps, cfg.pgd_step_size, r.sc.apgd_targets)
    return {name: r.cached(f"crosscheck_{name}.json", one, name) for name in r.present(CROSSCHECK_RUNS)}


def autoattack_headline(r: Reproduction) -> dict:
    """AutoAttack (standard, original settings) on the robust runs, ours beside torchattacks': on all 10k test
    images on a GPU, on the first ``autoattack_cpu`` on a CPU (0: none; hours otherwise). A result cached by an
    earlier call on more images (a GPU run of the same command) is reported instead; the images used are recorded."""
    limit = r.sc.autoattack_gpu if r.dev.type == "cuda" else r.sc.autoattack_cpu
    from .. import autoattack

    batch = 10_000 if r.dev.type == "cuda" else 500   # one batch per query on a GPU: Square's 5000 queries

    def one(name, x, y):
        res = autoattack.headline(r.model(name), x, y, r.runs[name].eps, batch_size=batch, **r.sc.autoattack_budget)
        return {**res, "images": f"first {len(y)} test images", "device": str(r.dev)}
    out = {}
    for name in r.present(CROSSCHECK_RUNS):
        cached = sorted(r.out.glob(f"eval/autoattack_{name}_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        if cached and (limit == 0 or int(cached[-1].stem.rsplit("_", 1)[1]) >= (limit or len(r.test))):
            out[name] = read_json(cached[-1])
        elif limit != 0:
            x, y = r.test.tensors(limit)
            out[name] = r.cached(f"autoattack_{name}_{len(y)}.json", one, name, x, y)
    return out


def reproduce(dataset: str = "mnist", scale: str = "quick", out=None, *, methods=None, device="auto",
              data_dir=None, progress: bool = True, figures=None, jobs: Optional[int] = None,
              shard=None) -> dict:
    """Run (or resume) the reproduction and write its tables; returns the summary dict.

    ``jobs``: training runs in parallel processes (default: one per core on a CPU, one on a GPU). ``shard``
    (``"I/N"`` or ``(I, N)``): train only this share of the runs and write no tables; a later call without it
    finds them cached and writes everything. ``figures``: a writer ``figures(summary, histories, out)`` called after
    the tables (``gl.report_figures.write_figures``, which the CLI passes; runners never import the views)."""
    if dataset not in SCALES:
        raise GmregError(f"unknown dataset {dataset!r}; valid: {', '.join(SCALES)}")
    if scale not in SCALES[dataset]:
        raise GmregError(f"unknown scale {scale!r}; valid: {', '.join(SCALES[dataset])}")
    sc = SCALES[dataset][scale]
    out = Path(out) if out is not None else Path("results") / f"{dataset}-{scale}"
    dev = resolve_device(device)
    runs = select_runs(all_runs(dataset, sc, out), methods)
    shard = jobs_mod.parse_shard(shard) if isinstance(shard, str) else shard
    r = Reproduction(dataset, sc, out, runs, data_mod.load(dataset, "test", data_dir, device=dev), dev, data_dir,
                     progress, jobs or jobs_mod.default_jobs(dev, len(runs)), shard)
    t_start = time.time()
    summary: dict = {"dataset": dataset, "scale": scale, "scale_settings": asdict(sc),
                     "environment": environment_info(dev)}
    summary["runs"] = train_runs(r)
    if shard is not None:
        return summary
    for phase in (table3, table5, figure_data, masking, crosschecks, autoattack_headline):
        summary[PHASE_KEYS[phase.__name__]] = phase(r)
    summary["wall_seconds_this_invocation"] = time.time() - t_start
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "TABLES.md", render_markdown(summary, out))
    if figures:
        figures(summary, r.histories, out)
    return summary


PHASE_KEYS = {"table3": "table3", "table5": "table5", "figure_data": "figures", "masking": "masking",
              "crosschecks": "crosscheck", "autoattack_headline": "autoattack"}


# --- the independent cross-check ------------------------------------------------------------------------------------
def crosscheck(model, x, y, eps: float, step: float, apgd_targets: int, ours_steps=(40,), apgd_steps: int = 100,
               batch_size: int = 500) -> dict:
    """Our attacks (PGD, APGD-CE, APGD-T) beside torchattacks' (PGD, APGD-CE, APGD-T; APGD-T against the
    ``apgd_targets`` likeliest wrong classes), each side's per-example worst case, and ``gap_points`` = ours minus
    theirs (> 2 would mean our evaluation misses adversarial examples that an independent one finds). Accuracy in %.
    """
    try:
        import torchattacks
    except ImportError:
        raise GmregError("the cross-check needs torchattacks: pip install torchattacks") from None
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(0)
    ours = {f"ours_pgd-{k}": Attack("pgd", steps=k, step=step).on(model, eps, generator=gen, early_stop=True)
            for k in ours_steps}
    ours["ours_apgd-ce"] = Attack("apgd-ce", steps=apgd_steps).on(model, eps, generator=gen)
    ours["ours_apgd-t"] = Attack("apgd-t", steps=apgd_steps, targets=apgd_targets).on(model, eps, generator=gen)
    theirs = {
        "torchattacks_pgd-40": torchattacks.PGD(model, eps=eps, alpha=step, steps=40, random_start=True),
        "torchattacks_apgd-ce": torchattacks.APGD(model, norm="Linf", eps=eps, steps=apgd_steps, n_restarts=1,
                                                  loss="ce", seed=0),
        "torchattacks_apgd-t": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=apgd_steps, n_restarts=1,
                                                  n_classes=10, seed=0),
    }
    theirs["torchattacks_apgd-t"].n_target_classes = apgd_targets
    out = {"n": len(y)}
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        torch.manual_seed(0)   # torchattacks' PGD draws its start from the global RNG: the same in every process
        _crosscheck_sides(model, x, y, ours, theirs, batch_size, out, eps)
    out["gap_points"] = out["ours_worst_case"] - out["torchattacks_worst_case"]
    out["apgd_t_target_classes"] = apgd_targets
    return out


def _crosscheck_sides(model, x, y, ours, theirs, batch_size, out, eps) -> None:
    for side, attacks in (("ours", ours), ("torchattacks", theirs)):
        robust = torch.ones(len(y), dtype=torch.bool, device=y.device)
        for name, atk in attacks.items():
            t0 = time.time()
            ok, _ = outcomes(model, atk, x, y, batch_size=batch_size, eps=eps, name=name)   # each checked: within eps
            out[name] = float(ok.float().mean()) * 100
            out[f"{name}_seconds"] = time.time() - t0
            robust &= ok
        out[f"{side}_worst_case"] = float(robust.float().mean()) * 100

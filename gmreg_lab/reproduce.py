"""`gmreg-lab reproduce`: the paper's MNIST (and CIFAR-10) experiments end to end.

Trains every method of Table 3 (plus the static models of Table 2 that ensemble adversarial training needs) into
``<out>/runs/<name>`` — each run cached and resumable — then writes Table 3 (white-box), Table 5 (black-box),
Table 7 (time per epoch, measured in this run), the data of Fig. 1-4, a gradient-masking checklist per model and an
independent cross-check with torchattacks, as Markdown + JSON (+ plotly HTML figures when plotly is installed).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from . import data as data_mod
from .config import TrainConfig
from .diagnostics import masking_report
from .errors import GmregError
from .evaluate import evaluate, sweep, transfer
from .runs import environment_info, load_model, read_json, write_json, atomic_write_text
from .train import autocast, compile_pays, resolve_device, train

log = logging.getLogger(__name__)

# The paper's numbers, for side-by-side tables (Table 3, 5, 7 of the paper; MNIST, Titan Xp for Table 7).
PAPER_TABLE3 = {
    "normal": (99.24, 11.65, 0.31, 0.01, 0.00), "fgsm": (99.34, 89.04, 1.19, 0.17, 0.01),
    "rfgsm": (93.92, 57.06, 41.85, 29.31, 28.76), "eat_a": (99.35, 83.48, 18.75, 10.13, 3.41),
    "eat_b": (99.31, 80.16, 48.13, 37.85, 22.86), "eat_c": (99.20, 82.48, 4.00, 1.29, 0.08),
    "eat_d": (97.66, 56.85, 0.87, 0.29, 0.08), "fgsm_rfgsm": (95.39, 61.60, 44.62, 34.15, 33.41),
    "proposed_lam0": (97.62, 92.52, 4.92, 1.89, 0.17), "pgd": (98.41, 95.56, 92.64, 92.08, 91.13),
    "proposed": (98.74, 95.1, 89.91, 89.48, 87.74),
}
PAPER_TABLE5 = {("static_a", "pgd"): 93.70, ("static_a", "proposed"): 93.53,
                ("static_b", "pgd"): 93.57, ("static_b", "proposed"): 93.25}
PAPER_TABLE7 = {"normal": 2.7, "fgsm": 4.1, "eat_a": 5.5, "pgd": 53.0, "proposed": 8.8}
LABELS = {"normal": "Normal", "fgsm": "FGSM Adv.", "rfgsm": "R-FGSM Adv.", "eat_a": "EAT A", "eat_b": "EAT B",
          "eat_c": "EAT C", "eat_d": "EAT D", "fgsm_rfgsm": "R-FGSM + FGSM Adv.",
          "proposed_lam0": "Ablation: proposed, lambda=0", "pgd": "PGD Adv.", "proposed": "Proposed",
          "static_a": "Model A (normal)", "static_b": "Model B (normal)", "static_c": "Model C (normal)",
          "static_d": "Model D (normal)"}
# Table 2: EAT network -> its static pre-trained sources.
EAT_SOURCES = {"eat_a": ("a", ("a", "b", "c")), "eat_b": ("b", ("b", "c", "d")),
               "eat_c": ("c", ("c", "d", "a")), "eat_d": ("d", ("d", "a", "b"))}
STATIC_MODELS = {"mnist": ("a", "b", "c", "d"), "cifar10": ("resnet34", "resnet18", "vgg16", "vgg11", "vgg19")}
TABLE5_SOURCES = {"mnist": ("static_a", "static_b"), "cifar10": ("static_vgg11", "static_vgg19")}
TABLE3_ORDER = ("normal", "fgsm", "rfgsm", "eat_a", "eat_b", "eat_c", "eat_d", "fgsm_rfgsm", "proposed_lam0",
                "pgd", "proposed")


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


MNIST_SCALES = {
    "smoke": Scale("smoke", dict(limit=256, epochs=1, val_size=500, select_size=64, probe_size=32, log_every=2,
                                 probe_pgd_steps=2, lr_milestones=(0.5,)),
                   dict(limit=256, epochs=1, val_size=500, select_size=64, probe_size=32, log_every=4,
                        probe_pgd_steps=2), eval_limit=64, attacks="clean,fgsm,ifgsm:4,pgd:4,pgd:8",
                   early_iter=2, fig_limit=32, fig_eps=(0.0, 0.15, 0.3), fig_pgd_steps=4, crosscheck_limit=32,
                   apgd_targets=1, masking_limit=32, pgd=dict(pgd_steps=4, pgd_step_size=0.1)),
    "quick": Scale("quick", dict(epochs=2, lr_milestones=(1.0, 1.5), log_every=50),
                   dict(epochs=1, lr_milestones=(0.5,), log_every=200), eval_limit=1000,
                   attacks="clean,fgsm,ifgsm:40,pgd:40,pgd:100", early_iter=200, fig_limit=200,
                   fig_eps=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), fig_pgd_steps=40, crosscheck_limit=1000,
                   apgd_targets=3, masking_limit=500, pgd=dict(epochs=1, lr_milestones=(0.5, 0.75))),
    "paper": Scale("paper", dict(), dict(epochs=6), eval_limit=None,
                   attacks="clean,fgsm,ifgsm:40,pgd:40,pgd:100", early_iter=1000, fig_limit=1000,
                   fig_eps=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5), fig_pgd_steps=40,
                   crosscheck_limit=1000, apgd_targets=9, masking_limit=1000),
}


def plan(dataset: str, scale: Scale) -> dict[str, TrainConfig]:
    """Every run of the reproduction, in training order (static EAT sources first), as name -> config."""
    base = TrainConfig(dataset=dataset)
    runs: dict[str, TrainConfig] = {}
    arch = STATIC_MODELS[dataset]
    for m in arch:
        runs[f"static_{m}"] = base.replace(model=m, method="normal", **scale.static)
    t = scale.train
    runs["normal"] = base.replace(method="normal", **t)
    runs["fgsm"] = base.replace(method="fgsm", **t)
    runs["rfgsm"] = base.replace(method="rfgsm", **t)
    runs["fgsm_rfgsm"] = base.replace(method="fgsm_rfgsm", **t)
    runs["proposed_lam0"] = base.replace(method="proposed", lam=0.0, **t)
    runs["proposed"] = base.replace(method="proposed", **t)
    runs["pgd"] = base.replace(method="pgd", **{**t, **scale.pgd})
    return runs


def _eat_runs(dataset, scale, out: Path) -> dict[str, TrainConfig]:
    if dataset != "mnist":
        table = {"eat_a": ("resnet34", ("resnet34", "resnet18")), "eat_b": ("resnet34", ("resnet34", "vgg16")),
                 "eat_c": ("resnet34", ("resnet18", "vgg16"))}
    else:
        table = EAT_SOURCES
    base = TrainConfig(dataset=dataset)
    return {name: base.replace(**{**scale.train, "model": model}, method="eat",
                               eat_sources=tuple(str(out / "runs" / f"static_{s}") for s in sources))
            for name, (model, sources) in table.items()}


def all_runs(dataset: str, scale: Scale, out: Path) -> dict[str, TrainConfig]:
    runs = plan(dataset, scale)
    statics = {k: v for k, v in runs.items() if k.startswith("static_")}
    rest = {k: v for k, v in runs.items() if not k.startswith("static_")}
    return {**statics, **_eat_runs(dataset, scale, out), **rest}


def reproduce(dataset: str = "mnist", scale: str = "quick", out=None, *, methods=None, device="auto",
              data_dir=None, progress: bool = True, figures: bool = True) -> dict:
    """Run (or resume) the reproduction and write its tables; returns the summary dict."""
    if dataset not in ("mnist", "cifar10"):
        raise GmregError(f"unknown dataset {dataset!r}; valid: mnist, cifar10")
    scales = MNIST_SCALES if dataset == "mnist" else CIFAR_SCALES
    if scale not in scales:
        raise GmregError(f"unknown scale {scale!r}; valid: {', '.join(scales)}")
    sc = scales[scale]
    out = Path(out) if out is not None else Path("results") / f"{dataset}-{scale}"
    dev = resolve_device(device)
    runs = all_runs(dataset, sc, out)
    if methods:
        wanted = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
        bad = [m for m in wanted if m not in runs]
        if bad:
            raise GmregError(f"unknown run(s) {', '.join(bad)}; valid: {', '.join(runs)}")
        needed = set(wanted)
        for m in wanted:  # EAT needs its static sources
            if m.startswith("eat_"):
                needed |= {Path(s).name for s in runs[m].eat_sources}
        runs = {k: v for k, v in runs.items() if k in needed}
    test = data_mod.load(dataset, "test", data_dir, device=dev)
    t_start = time.time()
    summary: dict = {"dataset": dataset, "scale": scale, "scale_settings": _scale_dict(sc),
                     "environment": environment_info(dev), "runs": {}}

    # 1. train (cached / resumable)
    for name, cfg in runs.items():
        cfg = cfg.replace(compile_model=compile_pays(cfg, dev))   # CIFAR-10 on a GPU
        snaps = (sc.early_iter,) if name in ("fgsm", "pgd", "proposed") else ()
        log.info("training %s", name)
        res = train(cfg, out / "runs" / name, device=dev, data_dir=data_dir, resume=True, progress=progress,
                    snapshot_at=snaps)
        summary["runs"][name] = {"config": cfg.to_dict(), "seconds_per_epoch": res.metrics.get("seconds_per_epoch"),
                                 "epoch_seconds": res.metrics.get("epoch_seconds"),
                                 "best_epoch": res.metrics.get("best_epoch"),
                                 "train_device": res.metrics.get("device")}

    # 2. Table 3: white-box
    x, y = test.tensors(sc.eval_limit)
    table3 = {}
    for name in [n for n in TABLE3_ORDER if n in runs]:
        table3[name] = _cached(out / "eval" / f"{name}.json", lambda: evaluate(
            load_model(out / "runs" / name, device=dev), x, y, sc.attacks, runs[name].eps, progress=progress))
    summary["table3"] = table3

    # 3. Table 5: black-box FGSM from normally trained A and B (MNIST) / VGG (CIFAR-10)
    table5 = {}
    sources = [s for s in TABLE5_SOURCES[dataset] if s in runs]
    for src in sources:
        for tgt in ("pgd", "proposed"):
            if tgt in runs:
                table5[f"{src}->{tgt}"] = _cached(out / "eval" / f"transfer_{src}_{tgt}.json", lambda: transfer(
                    load_model(out / "runs" / src, device=dev), load_model(out / "runs" / tgt, device=dev),
                    x, y, "fgsm", runs[tgt].eps))
    summary["table5"] = table5

    # 4. Fig. 1-4 data: logit distance over training, loss / accuracy vs eps at early and late checkpoints
    xf, yf = test.tensors(sc.fig_limit)
    figs = {"history": {}, "sweeps": {}}
    for name in ("fgsm", "pgd", "proposed"):
        if name not in runs:
            continue
        hist = load_history(out / "runs" / name)
        figs["history"][name] = hist
        for which in (f"iter:{sc.early_iter}", "last"):
            key = f"{name}@{which}"
            if which != "last" and sc.early_iter not in _snapshots(out / "runs" / name):
                log.warning("%s has no snapshot at iteration %d (trained without it): early sweep skipped",
                            name, sc.early_iter)
                figs.setdefault("missing", []).append(key)
                continue
            figs["sweeps"][key] = _cached(out / "eval" / f"sweep_{name}_{which.replace(':', '')}.json", lambda: sweep(
                load_model(out / "runs" / name, which=which, device=dev), xf, yf,
                f"fgsm,rfgsm,pgd:{sc.fig_pgd_steps}", sc.fig_eps, progress=progress))
    summary["figures"] = {"early_iter": sc.early_iter, "sweeps": figs["sweeps"], "missing": figs.get("missing", [])}

    # 5. Gradient-masking checklist
    xm, ym = test.tensors(sc.masking_limit)
    src_model = sources[0] if sources else None
    masking = {}
    for name in [n for n in ("fgsm", "proposed_lam0", "pgd", "proposed") if n in runs]:
        masking[name] = _cached(out / "eval" / f"masking_{name}.json", lambda: masking_report(
            load_model(out / "runs" / name, device=dev), xm, ym, runs[name].eps,
            alpha=runs[name].alpha, step_size=runs[name].pgd_step_size, steps=sc.fig_pgd_steps,
            large_eps_steps=round(2.5 * sc.fig_pgd_steps),
            source=load_model(out / "runs" / src_model, device=dev) if src_model else None).to_dict())
    summary["masking"] = masking

    # 6. Independent cross-check with torchattacks
    cross = {}
    if sc.crosscheck_limit:
        xc, yc = test.tensors(sc.crosscheck_limit)
        for name in [n for n in ("proposed", "pgd") if n in runs]:
            cross[name] = _cached(out / "eval" / f"crosscheck_{name}.json", lambda: crosscheck(
                load_model(out / "runs" / name, device=dev), xc, yc, runs[name].eps, runs[name].pgd_step_size,
                sc.apgd_targets))
    summary["crosscheck"] = cross
    summary["wall_seconds_this_invocation"] = time.time() - t_start
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "TABLES.md", render_markdown(summary, out))
    if figures:
        try:
            from .report_figures import write_figures
        except ImportError:  # plotly missing (e.g. a bare GPU machine): tables only
            log.warning("plotly is not installed: figures skipped")
        else:
            write_figures(summary, figs["history"], out)
    return summary


def _cached(path: Path, compute):
    if path.exists():
        try:
            return read_json(path)
        except GmregError:
            pass
    value = compute()
    write_json(path, value)
    return value


def _snapshots(run_dir: Path) -> set:
    from .runs import load_checkpoint
    return set(load_checkpoint(run_dir).get("snapshots") or {})


def load_history(run_dir: Path) -> list:
    from .runs import load_checkpoint
    return [r for r in load_checkpoint(run_dir)["history"] if r.get("event") == "log"]


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
    from .attacks import apgd, apgd_t, pgd

    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(0)
    ours = {f"ours_pgd-{k}": (lambda xb, yb, k=k: pgd(model, xb, yb, eps, step, k, generator=gen, early_stop=True))
            for k in ours_steps}
    ours["ours_apgd-ce"] = lambda xb, yb: apgd(model, xb, yb, eps, apgd_steps, generator=gen)
    ours["ours_apgd-t"] = lambda xb, yb: apgd_t(model, xb, yb, eps, apgd_steps, targets=apgd_targets, generator=gen)
    theirs = {
        "torchattacks_pgd-40": torchattacks.PGD(model, eps=eps, alpha=step, steps=40, random_start=True),
        "torchattacks_apgd-ce": torchattacks.APGD(model, norm="Linf", eps=eps, steps=apgd_steps, n_restarts=1,
                                                  loss="ce", seed=0),
        "torchattacks_apgd-t": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=apgd_steps, n_restarts=1,
                                                  n_classes=10, seed=0),
    }
    theirs["torchattacks_apgd-t"].n_target_classes = apgd_targets
    out = {"n": len(y)}
    for side, attacks in (("ours", ours), ("torchattacks", theirs)):
        robust = torch.ones(len(y), dtype=torch.bool, device=y.device)
        for name, atk in attacks.items():
            t0 = time.time()
            ok = torch.zeros(len(y), dtype=torch.bool, device=y.device)
            for i in range(0, len(y), batch_size):
                xa = atk(x[i:i + batch_size], y[i:i + batch_size])
                with torch.no_grad():
                    ok[i:i + batch_size] = model(xa).argmax(1) == y[i:i + batch_size]
            out[name] = float(ok.float().mean()) * 100
            out[f"{name}_seconds"] = time.time() - t0
            robust &= ok
        out[f"{side}_worst_case"] = float(robust.float().mean()) * 100
    out["gap_points"] = out["ours_worst_case"] - out["torchattacks_worst_case"]
    out["apgd_t_target_classes"] = apgd_targets
    return out


def _scale_dict(sc: Scale) -> dict:
    from dataclasses import asdict
    return asdict(sc)


def _median_epoch(run: dict) -> Optional[float]:
    import statistics
    times = run.get("epoch_seconds") or []
    return statistics.median(times) if times else run.get("seconds_per_epoch")


def _fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def render_markdown(summary: dict, out: Path) -> str:
    sc = summary["scale_settings"]
    env = summary["environment"]
    lines = [f"# {summary['dataset'].upper()} reproduction, scale `{summary['scale']}`", "",
             f"Produced by `gmreg-lab reproduce --dataset {summary['dataset']} --scale {summary['scale']} "
             f"--out {out}` on {env.get('gpu') or env.get('processor') or env.get('machine')} "
             f"({env.get('cpu_count')} CPUs, torch {env.get('torch')}). Settings: see `summary.json` "
             f"(`scale_settings`, and each run's `config.json`).", ""]
    t3 = summary.get("table3", {})
    if t3:
        cols = [c for c in next(iter(t3.values()))]
        lines += [f"## Table 3 — white-box accuracy (%), first {sc['eval_limit'] or 10000} test images", "",
                  "| method | " + " | ".join(f"{c} (ours / paper)" for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for name, res in t3.items():
            paper = PAPER_TABLE3.get(name)
            cells = []
            for i, c in enumerate(cols):
                p = paper[i] if paper and i < len(paper) and len(cols) == 5 else None
                cells.append(f"{_fmt(res[c]['acc'])} / {_fmt(p)}")
            lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
        lines.append("")
    t5 = summary.get("table5", {})
    if t5:
        lines += ["## Table 5 — black-box FGSM accuracy (%)", "", "| source -> target | ours | paper |",
                  "|---|---|---|"]
        for key, res in t5.items():
            src, tgt = key.split("->")
            lines.append(f"| {LABELS.get(src, src)} -> {LABELS.get(tgt, tgt)} | {_fmt(res['acc'])} | "
                         f"{_fmt(PAPER_TABLE5.get((src, tgt)))} |")
        lines.append("")
    runs = summary.get("runs", {})
    if runs:
        lines += ["## Table 7 — training time per epoch (s), measured in this run", "",
                  "Median over the epochs (robust to an epoch slowed by other work on the machine); the mean and "
                  "every epoch's time are in `summary.json` (`runs.*.epoch_seconds`).", "",
                  "| method | s/epoch (ours, median) | mean | ratio to normal (medians) | paper (Titan Xp) |",
                  "|---|---|---|---|---|"]
        normal = _median_epoch(runs.get("normal", {}))
        for name, r in runs.items():
            s = _median_epoch(r)
            ratio = f"{s / normal:.2f}" if s and normal else "—"
            lines.append(f"| {LABELS.get(name, name)} | {_fmt(s, 1)} | {_fmt(r.get('seconds_per_epoch'), 1)} | {ratio} "
                         f"| {_fmt(PAPER_TABLE7.get(name), 1)} |")
        lines.append("")
    cross = summary.get("crosscheck", {})
    if cross:
        lines += ["## Independent cross-check: our PGD / APGD-CE / APGD-T vs torchattacks', accuracy (%)", "",
                  "`*_worst_case`: an example counts as robust only if every attack of that side fails on it; "
                  "`gap_points` = ours minus theirs.", ""]
        first = next(iter(cross.values()))
        keys = sorted((k for k in first if not k.endswith("_seconds") and k != "n"),
                      key=lambda k: (not k.startswith("ours"), not k.startswith("torchattacks"), k.endswith("case"),
                                     "apgd" in k, k))
        lines += ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, r in cross.items():
            lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(
                _fmt(r[k]) if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
        lines.append("")
    masking = summary.get("masking", {})
    if masking:
        lines += ["## Gradient-masking checklist", "", "| model | verdict | failed checks |", "|---|---|---|"]
        for name, rep in masking.items():
            lines.append(f"| {LABELS.get(name, name)} | {'pass' if rep['passed'] else 'FAIL'} | "
                         f"{', '.join(rep['failed']) or '—'} |")
        lines += [""]
        for name, rep in masking.items():
            lines += [f"**{LABELS.get(name, name)}**", ""]
            lines += [f"- {'pass' if c['passed'] else ('skip' if c['passed'] is None else 'FAIL')} "
                      f"`{c['name']}`: {c['detail']}" for c in rep["checks"]]
            lines.append("")
    return "\n".join(lines) + "\n"


CIFAR_SCALES = {
    "smoke": Scale("smoke", dict(model="resnet18", limit=32, epochs=1, batch_size=16, val_size=20, select_size=8,
                                 probe_size=8, log_every=2, probe_pgd_steps=1, lr_milestones=(0.5,)),
                   dict(limit=32, epochs=1, batch_size=16, val_size=20, select_size=8, probe_size=8, log_every=2,
                        probe_pgd_steps=1), eval_limit=8, attacks="clean,fgsm,ifgsm:2,pgd:2,pgd:3", early_iter=1,
                   fig_limit=8, fig_eps=(0.0, 8 / 255), fig_pgd_steps=2, crosscheck_limit=0, apgd_targets=1,
                   masking_limit=4, pgd=dict(pgd_steps=2)),
    "paper": Scale("paper", dict(), dict(epochs=30), eval_limit=None, attacks="clean,fgsm,ifgsm:7,pgd:7,pgd:20",
                   early_iter=1000, fig_limit=1000, fig_eps=tuple(i / 255 for i in range(0, 17, 2)),
                   fig_pgd_steps=7, crosscheck_limit=1000, apgd_targets=9, masking_limit=1000),
}

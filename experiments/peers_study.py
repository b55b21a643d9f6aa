"""Issue 28: a fair single-step comparison on MNIST at eps = 0.3 -- each method at its best, chosen on validation
images, trained at one full budget over seeds, beside a reproduced published anchor (Wong et al. 2020).

    python experiments/peers_study.py --stage grid   --out results/peers-study --jobs 2
    python experiments/peers_study.py --stage select --out results/peers-study
    python experiments/peers_study.py --stage extend --out results/peers-study --jobs 2   # if select asks, then select
    python experiments/peers_study.py --stage final  --out results/peers-study --jobs 2
    python experiments/peers_study.py --stage anchor --out results/peers-study --jobs 2
    python experiments/peers_study.py --stage warmup --out results/peers-study --jobs 2   # item 1, seed 1
    python experiments/peers_study.py --table        --out results/peers-study       # writes <out>/TABLE.md
    python experiments/peers_study.py --stage grid --dry-run --out /tmp/peers-dry --methods fgsm --batches 32

Stages
  grid    every single-step method's own key setting, each with and without the eps warm-up, at batch 32 and 64,
          one seed (0), at a reduced budget (FULL.grid_epochs: 2 epochs at batch 32, 4 at batch 64, about 3,130
          iterations, half the final budget). Settings: FGSM-AT (none), proposed lambda in {2, 5, 10}, FGSM-RS
          step/eps in {1.0, 1.25}, N-FGSM k in {0.5, 1, 2}, GradAlign lambda in {0.1, 0.3, 1}: 12 settings x 2
          warm-ups x 2 batch sizes = 48 runs. Each run is scored on VALIDATION images only: the first 1000 images
          of the run's own hold-out (gl.data.train_val_split of the training set with the run's seed; never
          trained on), clean accuracy and the worst case of PGD-10 (step 0.075, random start) and APGD-CE-20; the
          training loop's PGD-10 probe history (every 250 iterations, on the first 200 of those images; a monitor,
          never used to select) is kept for the collapse verdict.
  select  per method and batch size, the setting (warm-up included) whose LAST model has the highest validation
          worst case, among the runs that learned (gmreg_lab.runners.report_tables.did_not_learn on the validation
          images); ties go to
          the earlier run in the grid's order (warm-up off before on, settings in the order listed). If no setting
          learned, the best-scoring one is kept and flagged. Writes <out>/selected.json.
  extend  when a method's best setting at a batch size lies at an end of its grid, one step beyond that end (EDGE:
          proposed lambda 1 / 20, FGSM-RS 0.75 / 1.5, N-FGSM k 0.25 / 4, GradAlign lambda 0.03 / 3), both warm-ups,
          at the grid's budget; `select` lists these runs in selected.json, `extend` runs them, `select` again
          chooses among all; `final` leaves out a group while its step is still asked for. One step only. A best
          value tied with another (the tie rule picks the earlier) asks for the step beyond every tied value that
          lies at an end of the grid.
  warmup  issue 28, item 1: the paper's lambda (5) of the proposed method without and with the eps warm-up, at both
          batch sizes, for more seeds (default 1; seed 0 is the grid's run), at the grid's budget, scored on
          validation images like the grid: 4 runs per seed. Whether the warm-up should become the default for the
          paper's recipe rests on it.
  final   the selected settings at the full budget (FULL.final_epochs: 4 epochs at batch 32, 8 at batch 64, about 6,250
          iterations, more than the ~6,000 of Wong et al.'s MNIST recipe), seeds {0, 1}: 5 methods x 2 batch sizes
          x 2 seeds = 20 runs. Each is evaluated on the first 1000 TEST images: clean, PGD-50 x 10 restarts (step
          0.01, Wong et al.'s protocol), the worst case of APGD-CE-100 + APGD-T-100 (9 targets) with the kit's
          attacks (gl.evaluate.worst_case) and with torchattacks' (APGD, APGDT), the lower of the two as the robust
          accuracy, the FGSM / R-FGSM logit distance, the collapse verdict of the probe history
          (gl.diagnostics.collapse) and the did-not-learn flag.
  anchor  Wong, Rice & Kolter 2020's MNIST FGSM-RS recipe through the kit (gmreg_lab.paper.WONG_MNIST_RECIPE: their
          small CNN models.wong_cnn, eps 0.3, alpha 0.375 = 1.25 eps, gradient at the unclipped random start, Adam,
          cyclic learning rate peaking at 5e-3 at 2/5 of the run, batch 100, 10 epochs on all 60,000 training
          images = 6,000 iterations, no early stopping), seeds {0, 1} (more with --seeds), evaluated exactly as
          the final stage, beside their published clean 98.50 / PGD-50x10 88.77 / AutoAttack 82.93
          (gmreg_lab.paper.WONG_MNIST_REPORTED).

Common settings: the paper's optimizer for every method of the grid and the final stage (SGD, lr 0.01, momentum 0.9,
weight decay 5e-4) with the learning rate cut 5x at 1/2 and 3/4 of the run; fp32 (set explicitly on every CPU, so
that runs made on different machines compute alike; GradAlign's step always runs in fp32); raw [0, 1] pixels; eps
warm-up "on" = linear from 0 over the first quarter of the run (per iteration, every eps-tied quantity of each step
scaled with it). The model evaluated is every run's LAST epoch (no early stopping for any method; select_best is
off): a collapse shows in the numbers, not only in the probe history.

Every run is a real run directory, <out>/runs/<stage>-<name> (gl.train(cfg, dir, resume=True): a killed study
resumes at each run's last finished epoch); every finished run writes <out>/<stage>/<name>.json (config, command
line, CPU, thread count, timings, probe history, verdicts, numbers) and is never recomputed. <out>/study.json
records the scale (full or dry run, and --limit): a dry run cannot be mixed into a full study's folder.

Cost -- an ESTIMATE. Measured: ONE short run, the proposed method at batch 32, fp32, one thread, 200 iterations:
0.205 s per iteration (this 2-core Xeon while two other training processes ran: load ~3.5; alone it should be
about twice as fast), plus two 50-iteration spot checks: GradAlign 0.29 s/it (b32), Wong et al.'s CNN at batch 100
0.031 s/it (MEASURED below). Assumed, not measured: FGSM-AT, FGSM-RS and N-FGSM ~0.10-0.11 s/it at batch 32 (one
gradient pass and one loss pass over 32 images where the proposed step has two over 64), and a batch-64 iteration
~1.8x a batch-32 one. Evaluation: ~1-1.6 ms per image-gradient at large batches, so on 1000 test images of a model
that keeps ~80 % robust, PGD-50x10 ~8 min and each APGD-CE+APGD-T worst case (up to 100 + 9 x 100 steps per robust
image) ~15 min.
  grid    48 runs x ~3,130 iterations: ~10 CPU-hours of training (b32 ~3.6 h, b64 ~6.6 h; GradAlign and the
          proposed method are two thirds of it), + probes and validation scoring (~1.5 min a run)   ~ 11.5 CPU-h
  final   20 runs x ~6,250 iterations: ~8 CPU-hours of training (depends on the settings chosen) + ~35 min of
          test evaluation per run that learned                                                   ~ 20 CPU-h
  anchor   2 runs x 6,000 iterations at 0.031 s: ~3 min each + ~10 min evaluation each            ~ 0.5 CPU-h
With --jobs 2 on the two cores the wall time is about half of the CPU time if nothing else runs: grid ~6 h,
final ~10 h, anchor ~20 min. These are extrapolations from the numbers above, not measurements of the stages.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gmreg_lab as gl
from gmreg_lab import paper
from gmreg_lab.runners import peers_results
from gmreg_lab.runners.course import sha256 as file_sha256
from gmreg_lab.runners import report_tables as flags
from gmreg_lab.runners import suite as suite_mod

# What the docstring's estimate rests on (training seconds per iteration, fp32, one thread, this machine's 2-core
# Xeon while two other training processes ran; measured once with gl.train on the first limit training images).
MEASURED = {"proposed, batch 32, 200 iterations": 0.205, "gradalign, batch 32, 50 iterations": 0.285,
            "wong_cnn fgsm_rs (Adam, cyclic), batch 100, 50 iterations": 0.031}

EPS = 0.3
# method -> (the TrainConfig field of its key setting, the grid's values, the tag in run names)
SETTINGS = {
    "fgsm": (None, (None,), ""),
    "proposed": ("lam", (2.0, 5.0, 10.0), "lam"),
    "fgsm_rs": ("rs_step", (1.0, 1.25), "rs"),
    "nfgsm": ("nfgsm_k", (0.5, 1.0, 2.0), "k"),
    "gradalign": ("align_lam", (0.1, 0.3, 1.0), "al"),
}
METHODS = tuple(SETTINGS)
# Item 1 of issue 28: does the eps warm-up help the paper's own method? The grid has each lambda with and without it
# for seed 0; this stage repeats the paper's lambda (5) at both batch sizes for more seeds, at the grid's budget.
WARMUP_CHECK = ("proposed", 5.0)
WARMUP_SEEDS = (1,)
# One step beyond each end of a method's grid: run (both warm-ups, that batch size) only when the grid's best setting
# for a method and batch size lies at that end, since a best value at the edge of a grid says the method's best may
# lie beyond it. One step only: a best value at an extension is reported as the end of the search. Decided on
# 2026-12-03 with 18 of the 48 grid runs finished, after seeing that the proposed method (lambda 10) and GradAlign
# (lambda 0.1) were best at an edge at batch 32 -- the same rule for every method, whichever it helps.
EDGE = {"proposed": (1.0, 20.0), "fgsm_rs": (0.75, 1.5), "nfgsm": (0.25, 4.0), "gradalign": (0.03, 3.0)}
BATCHES = (32, 64)
SEEDS = (0, 1)
GRID_SEED = 0
WARMUP_FRACTION = 0.25          # warm-up "on": eps ramps from 0 over the first quarter of the run
LR_CUTS = (0.5, 0.75)           # the learning rate is multiplied by 0.2 at these fractions of the run
LOG_EVERY = 250                 # iterations between probe rows (collapse resolution)
WHICH = "last"                  # the model evaluated: the last epoch (no early stopping)
# relative cost of a training iteration, for ordering the runs (longest first keeps --jobs workers busy)
COST = {"fgsm": 0.9, "proposed": 1.0, "fgsm_rs": 0.75, "nfgsm": 0.75, "gradalign": 2.3, "anchor": 0.5}


@dataclass(frozen=True)
class Scale:
    name: str
    grid_epochs: dict                   # batch size -> epochs of a grid run
    final_epochs: dict                  # batch size -> epochs of a final run
    anchor_epochs: int
    val_images: int                     # grid: validation images scored
    test_images: int                    # final / anchor: first test images evaluated
    val_attacks: str                    # grid: the validation worst case
    pgd: str                            # final / anchor: PGD with restarts
    apgd_steps: int
    train: dict = field(default_factory=dict)   # TrainConfig overrides for every run


FULL = Scale("full", grid_epochs={32: 2, 64: 4}, final_epochs={32: 4, 64: 8}, anchor_epochs=10, val_images=1000,
             test_images=1000, val_attacks="pgd:10:0.075,apgd-ce:20", pgd="pgd:50:0.01:10", apgd_steps=100)
DRY = Scale("dry-run", grid_epochs={32: 1, 64: 1}, final_epochs={32: 1, 64: 1}, anchor_epochs=1, val_images=24,
            test_images=24, val_attacks="pgd:2:0.15,apgd-ce:2", pgd="pgd:2:0.01:2", apgd_steps=2,
            train=dict(limit=64, val_size=200, log_every=1, probe_size=16, probe_pgd_steps=2))


# --- the runs -------------------------------------------------------------------------------------------------------
def setting_name(method: str, value, warm: bool, batch: int) -> str:
    fld, _, tag = SETTINGS[method]
    return f"{method}{f'-{tag}{value:g}' if fld else ''}-w{int(warm)}-b{batch}"


def study_config(method: str, value, warm: bool, batch: int, seed: int, epochs: int, scale: Scale,
                 limit: Optional[int] = None) -> gl.TrainConfig:
    fld = SETTINGS[method][0]
    kw = dict(dataset="mnist", method=method, eps=EPS, batch_size=batch, epochs=epochs,
              lr_milestones=tuple(f * epochs for f in LR_CUTS), lr_gamma=0.2,
              eps_warmup_epochs=WARMUP_FRACTION * epochs if warm else 0.0, seed=seed, precision="fp32",
              select_best=False, log_every=LOG_EVERY, **({fld: value} if fld else {}))
    kw.update(scale.train, **({} if limit is None else {"limit": limit}))
    return gl.TrainConfig(**kw)


def anchor_config(seed: int, scale: Scale, limit: Optional[int] = None) -> gl.TrainConfig:
    r = paper.WONG_MNIST_RECIPE
    kw = dict(dataset="mnist", model=r["model"], method="fgsm_rs", eps=r["eps"], rs_step=r["alpha"] / r["eps"],
              rs_clip_start=False, epochs=scale.anchor_epochs, batch_size=r["batch_size"], optimizer="adam",
              lr=r["lr_max"], weight_decay=r["weight_decay"], lr_schedule="cyclic", lr_peak=0.4,
              select_best=False, precision="fp32", log_every=LOG_EVERY, seed=seed)
    kw.update({k: v for k, v in scale.train.items() if k != "val_size"}, val_size=0,   # all 60k images, as theirs
              **({} if limit is None else {"limit": limit}))
    return gl.TrainConfig(**kw)


def grid(scale: Scale, methods=METHODS, batches=BATCHES, limit=None) -> dict:
    """name -> config of every grid run, in the grid's order (the tie-break order of the selection rule)."""
    runs = {}
    for batch in batches:
        for m in methods:
            for value in SETTINGS[m][1]:
                for warm in (False, True):
                    runs[setting_name(m, value, warm, batch)] = study_config(
                        m, value, warm, batch, GRID_SEED, scale.grid_epochs[batch], scale, limit)
    return runs


def final_runs(selected: dict, scale: Scale, seeds, methods=METHODS, batches=BATCHES, limit=None) -> dict:
    runs = {}
    for choice in selected["chosen"].values():
        m, batch = choice["method"], choice["batch_size"]
        if m not in methods or batch not in batches:
            continue
        for s in seeds:
            runs[f"{choice['name']}-s{s}"] = study_config(m, choice["value"], choice["warmup"], batch, s,
                                                          scale.final_epochs[batch], scale, limit)
    return runs


def warmup_runs(scale: Scale, seeds, batches=BATCHES, limit=None) -> dict:
    """The warm-up check: WARMUP_CHECK's setting without and with the eps warm-up, per batch size and seed, at the
    grid's budget, scored on validation images like the grid (seed 0 is the grid's own run)."""
    m, value = WARMUP_CHECK
    return {f"{setting_name(m, value, w, b)}-s{s}": study_config(m, value, w, b, s, scale.grid_epochs[b], scale, limit)
            for b in batches for w in (False, True) for s in seeds}


def anchor_runs(scale: Scale, seeds, limit=None) -> dict:
    return {f"wong-s{s}": anchor_config(s, scale, limit) for s in seeds}


# --- one run: train (resumable), evaluate, write its JSON -----------------------------------------------------------
def _shares_and_flag(model, x, y, clean: float) -> dict:
    shares = suite_mod.class_shares(model, x, y)
    return {**shares, "did_not_learn": flags.did_not_learn(clean, shares["majority_pct"], shares["top_pred_pct"])}


@functools.lru_cache(maxsize=4)
def _images(split: str, n: int, val_size: int = 0, seed: int = 0):
    """The first ``n`` test images, or (``split="val"``) the first ``n`` of the training set's seeded hold-out."""
    if split == "test":
        return gl.data.load("mnist", "test").tensors(n)
    _, val = gl.data.train_val_split(gl.data.load("mnist", "train"), val_size, seed)
    return val.tensors(n)


def _validation(model, cfg: gl.TrainConfig, scale: Scale) -> dict:
    x, y = _images("val", scale.val_images, cfg.val_size, cfg.seed)
    clean = gl.evaluate.evaluate(model, x, y, "clean", EPS)["clean"]["acc"]
    worst = gl.evaluate.worst_case(model, x, y, scale.val_attacks, EPS)
    return {"images": len(y), "split": f"train_val_split(train, {cfg.val_size}, seed={cfg.seed}), first "
                                       f"{len(y)}", "clean": clean, "attacks": scale.val_attacks,
            "worst": worst["robust"], "broke": worst["broke"], **_shares_and_flag(model, x, y, clean)}


def _torchattacks_apgd(model, x, y, steps: int) -> dict:
    import torchattacks as ta

    apgdt = ta.APGDT(model, norm="Linf", eps=EPS, steps=steps, n_restarts=1, n_classes=10, seed=0)
    apgdt.n_target_classes = 9
    attacks = {"apgd-ce (torchattacks)": ta.APGD(model, norm="Linf", eps=EPS, steps=steps, n_restarts=1,
                                                 loss="ce", seed=0),
               "apgd-t (torchattacks)": apgdt}
    return gl.evaluate.ensemble(model, x, y, attacks)


TEST_PARTS = "test-parts.json"   # in a run directory: the test evaluation's finished parts


def _part(run_dir: Optional[Path], key: str, name: str, compute):
    """One part of a run's test evaluation, computed once and kept in <run_dir>/test-parts.json under the hash of the
    checkpoint it scored, so that a process stopped in the middle of a long evaluation resumes after the last finished
    part. Each part seeds its own attacks, so a part kept from an earlier process gives the numbers a single pass
    gives. Returns (value, seconds it took when computed)."""
    path = run_dir / TEST_PARTS if run_dir is not None else None
    parts = json.loads(path.read_text()) if path is not None and path.exists() else {}
    if parts.get("checkpoint_sha256") != key:
        parts = {"checkpoint_sha256": key}
    if name not in parts:
        t0 = time.time()
        value = json.loads(json.dumps(compute(), default=str))     # as the result JSON will hold it
        parts[name] = {"value": value, "seconds": time.time() - t0}
        if path is not None:
            gl.runs.write_json(path, parts)
    return parts[name]["value"], parts[name]["seconds"]


def _test(model, cfg: gl.TrainConfig, scale: Scale, run_dir: Optional[Path] = None) -> dict:
    x, y = _images("test", scale.test_images)
    ckpt = run_dir / gl.runs.CHECKPOINT if run_dir is not None else None
    key = file_sha256(ckpt) if ckpt is not None and ckpt.exists() else ""
    n = scale.apgd_steps
    parts = {
        "clean+pgd": lambda: gl.evaluate.evaluate(model, x, y, f"clean,{scale.pgd}", EPS),
        "apgd ours": lambda: gl.evaluate.worst_case(model, x, y, f"apgd-ce:{n},apgd-t:{n}", EPS),
        "apgd torchattacks": lambda: _torchattacks_apgd(model, x, y, n),
        "logit distance": lambda: gl.diagnostics.logit_distance(model, x, y, EPS, cfg.alpha,
                                                                generator=torch.Generator().manual_seed(0))}
    done = {k: _part(run_dir, key, k, f) for k, f in parts.items()}
    table, ours, theirs, dist = (done[k][0] for k in parts)
    clean = table["clean"]["acc"]
    pgd_label = next(k for k in table if k.startswith("pgd"))
    return {"images": len(y), "clean": clean, "pgd_label": pgd_label, "pgd": table[pgd_label]["acc"],
            "apgd_worst_ours": ours["robust"], "apgd_worst_torchattacks": theirs["robust"],
            "robust": min(ours["robust"], theirs["robust"]), "broke_ours": ours["broke"],
            "broke_torchattacks": theirs["broke"], "logit_dist": dist,
            "eval_seconds": sum(d[1] for d in done.values()),     # each part's own time, summed over processes
            **_shares_and_flag(model, x, y, clean)}


def run(stage: str, name: str, cfg_dict: dict, out: str, scale_name: str, command: str, threads: int = 1) -> dict:
    """Train (or resume) one run and evaluate it; the result JSON is written once and read back afterwards."""
    out = Path(out)
    path = out / stage / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        scale = DRY if scale_name == DRY.name else FULL
        cfg = gl.TrainConfig.from_dict(cfg_dict)
        run_dir = out / "runs" / f"{stage}-{name}"
        result = {"name": name, "stage": stage, "scale": scale.name, "config": cfg.to_dict(), "command": command,
                  "cpu": gl.runtime.cpu_description(), "threads": torch.get_num_threads(), "evaluated_model": WHICH,
                  "code": {**gl.runs.git_state(), "source_sha256": gl.runs.source_sha256()}}
        t0 = time.time()
        try:
            res = gl.train(cfg, run_dir, device="cpu", resume=True, progress=False)
        except gl.errors.TrainingDiverged as e:     # a setting whose loss became NaN/Inf: an outcome, recorded
            ckpt = run_dir / gl.runs.CHECKPOINT
            rows = gl.runs.log_rows(gl.runs.load_checkpoint(ckpt)["history"]) if ckpt.exists() else []
            result.update(diverged=str(e), train_seconds=None, iterations=None, collapse=gl.diagnostics.collapse(rows))
            key = "val" if stage in ("grid", "warmup") else "test"
            result[key] = {"did_not_learn": True, "worst": 0.0, "clean": None, "robust": None, "images": 0}
            gl.runs.write_json(path, result)
            return result
        rows = gl.runs.log_rows(res.history)
        model = gl.load_model(run_dir, which=WHICH, device="cpu")
        result.update({"train_seconds": res.metrics.get("train_seconds"), "wall_seconds_this_call": time.time() - t0,
                       "iterations": res.metrics.get("iterations"),
                       "probe (iteration, pgd10 %, clean %, eps_train)": [
                           (r["iteration"], round(r["acc_pgd"], 1), round(r["acc_clean"], 1),
                            r.get("eps_train", EPS)) for r in rows],
                       "collapse": gl.diagnostics.collapse(rows)})
        if stage in ("grid", "warmup"):
            result["val"] = _validation(model, cfg, scale)
        else:
            result["test"] = _test(model, cfg, scale, run_dir)
        gl.runs.write_json(path, result)
        return result
    finally:
        torch.set_num_threads(before)


def run_all(stage: str, runs: dict, out: Path, scale: Scale, jobs: int, command: str) -> dict:
    order = sorted(runs, key=lambda n: -COST.get(runs[n].method if stage != "anchor" else "anchor", 1.0)
                   * runs[n].epochs * 50_000 / runs[n].batch_size)
    args = [(stage, n, runs[n].to_dict(), str(out), scale.name, command, 1) for n in order]
    if jobs > 1 and len(args) > 1:
        with multiprocessing.get_context("spawn").Pool(min(jobs, len(args))) as pool:
            results = pool.starmap(run, args, chunksize=1)
    else:
        results = [run(*a) for a in args]
    return dict(zip(order, results))


# --- selection ------------------------------------------------------------------------------------------------------
def _values(m: str, out: Path, batch: int) -> list:
    """The grid's values of a method, then those of its edge extensions that have been run (at this batch size)."""
    base = list(SETTINGS[m][1])
    extra = [v for v in EDGE.get(m, ()) if any((out / "grid" / f"{setting_name(m, v, w, batch)}.json").exists()
                                                for w in (False, True))]
    return base + extra


def extension_runs(m: str, value, batch: int, out: Path) -> list:
    """The edge-extension runs (not yet run) that a best ``value`` at an end of the method's base grid asks for."""
    if m not in EDGE or SETTINGS[m][0] is None:
        return []
    base = SETTINGS[m][1]
    step = EDGE[m][0] if value == min(base) else EDGE[m][1] if value == max(base) else None
    if step is None:
        return []
    names = [setting_name(m, step, w, batch) for w in (False, True)]
    return [n for n in names if not (out / "grid" / f"{n}.json").exists()]


def select(out: Path, scale: Scale, methods=METHODS, batches=BATCHES) -> dict:
    """The rule of the module docstring, over the finished grid runs; a group with unfinished runs is left out
    (listed under "incomplete"); a group whose best value lies at an end of its base grid lists the edge-extension
    runs still to make under "extend" (the final stage waits for them)."""
    chosen, incomplete, extend = {}, {}, {}
    for batch in batches:
        for m in methods:
            values = _values(m, out, batch)
            names = [setting_name(m, v, w, batch) for v in values for w in (False, True)]
            found = {n: out / "grid" / f"{n}.json" for n in names}
            missing = [n for n, p in found.items() if not p.exists()]
            if missing:
                incomplete[f"{m}-b{batch}"] = missing
                continue
            res = {n: json.loads(p.read_text()) for n, p in found.items()}
            learned = [n for n in names if not res[n]["val"]["did_not_learn"]]
            pool = learned or names
            best = max(pool, key=lambda n: (res[n]["val"]["worst"], -names.index(n)))
            cfg = res[best]["config"]
            fld = SETTINGS[m][0]
            value = cfg[fld] if fld else None
            # a best value tied with another value (the tie rule picks the earlier): each tied value at an end of
            # the grid gets its step beyond, so that a tie never hides an edge (added 2026-12-03, FGSM-RS b32)
            tied = {res[n]["config"][fld] for n in pool if res[n]["val"]["worst"] == res[best]["val"]["worst"]} \
                if fld else {None}
            todo = [r for v in sorted(tied, key=lambda v: (v is not None, v or 0))
                    for r in extension_runs(m, v, batch, out)]
            if todo:
                extend[f"{m}-b{batch}"] = todo
            chosen[f"{m}-b{batch}"] = {
                "method": m, "batch_size": batch, "name": best, "value": value,
                "warmup": cfg["eps_warmup_epochs"] > 0, "val_worst": res[best]["val"]["worst"],
                "val_clean": res[best]["val"]["clean"], "none_learned": not learned,
                "at_edge_of_search": fld is not None and value in (min(values), max(values)),
                "candidates": {n: {"val_worst": res[n]["val"]["worst"], "val_clean": res[n]["val"]["clean"],
                                   "did_not_learn": res[n]["val"]["did_not_learn"],
                                   "collapsed": res[n]["collapse"]["collapsed"]} for n in names}}
    rule = ("per method and batch size: the highest validation worst case (" + scale.val_attacks + ", first "
            f"{scale.val_images} validation images, last model) among the settings that learned; ties to the "
            "earlier setting in the grid's order; if none learned, the best-scoring one, flagged none_learned; "
            "a best value at an end of the base grid first runs one step beyond it (EDGE), both warm-ups")
    sel = {"rule": rule, "chosen": chosen, "incomplete": incomplete, "extend": extend}
    gl.runs.write_json(out / "selected.json", sel)
    return sel


def extend_runs(selected: dict, scale: Scale, limit=None) -> dict:
    """name -> config of the edge-extension runs that selected.json asks for (grid runs: seed 0, grid budget): those
    under "extend", and an extension whose partner (the other warm-up) finished first, which puts its group back
    under "incomplete" until it has run too."""
    asked = {n for key in ("extend", "incomplete") for names in selected.get(key, {}).values() for n in names}
    return {setting_name(m, v, w, b): study_config(m, v, w, b, GRID_SEED, scale.grid_epochs[b], scale, limit)
            for m, steps in EDGE.items() for v in steps for w in (False, True) for b in BATCHES
            if setting_name(m, v, w, b) in asked}


# --- the Markdown summary -------------------------------------------------------------------------------------------
def _f(v, nd=1):
    return "—" if v is None else f"{v:.{nd}f}"


def _agg(values, nd=1):
    """'mean [min, max]' of the values, or the value alone when there is one."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return _f(values[0], nd)
    return f"{statistics.mean(values):.{nd}f} [{min(values):.{nd}f}, {max(values):.{nd}f}]"


FELL_POINTS = peers_results.FELL_POINTS


def _collapse_text(results: list) -> str:
    """Per seed: where the PGD probe collapsed (gl.diagnostics.collapse), or that it did not; a run without the
    verdict whose probe still ended far under its peak is said to have fallen (peak -> final), never hidden as 'no'."""
    parts = []
    for r in results:
        c = r["collapse"]
        seed = r["config"]["seed"]
        if c["collapsed"]:
            parts.append(f"s{seed}: at {c['iteration']} ({_f(c['peak'], 0)} → {_f(c['final'], 0)})")
        elif peers_results.fell(c):
            parts.append(f"s{seed}: **fell** {_f(c['peak'], 0)} → {_f(c['final'], 0)} (not under 10 %)")
        else:
            parts.append(f"s{seed}: no (peak {_f(c['peak'], 0)}, final {_f(c['final'], 0)})")
    return "; ".join(parts)


def _final_rows(results: list) -> list:
    """The cells of one setting over its seeds; runs that did not learn never give a robust number."""
    learned = [r for r in results if not r["test"]["did_not_learn"]]
    dead = [f"s{r['config']['seed']}" for r in results if r["test"]["did_not_learn"]]
    t = lambda k: [r["test"][k] for r in learned]    # noqa: E731
    if not learned:
        robust = ["did not learn"] * 4 + ["—"]
    else:
        robust = [_agg(t("pgd")), _agg(t("apgd_worst_ours")), _agg(t("apgd_worst_torchattacks")),
                  f"**{_agg(t('robust'))}**", _agg(t("logit_dist"), 2)]
    clean = _agg([r["test"]["clean"] for r in results])
    return [clean, *robust, ", ".join(dead) or "—", _collapse_text(results)]


def _warmup_section(out: Path) -> list:
    """Markdown: the warm-up check (WARMUP_CHECK's setting, off vs on, per batch size), seed 0 from the grid and the
    other seeds from the warmup stage, validation worst case per seed and its mean; [] before the stage ran."""
    files = sorted((out / "warmup").glob("*.json")) if (out / "warmup").exists() else []
    if not files:
        return []
    m, value = WARMUP_CHECK
    lines = [f"## ε warm-up check: {m} at {SETTINGS[m][0]} = {value:g}, seeds, grid budget, validation images", "",
             "| batch | warm-up | worst case per seed | mean | collapse (PGD-10 probe) |", "|---|---|---|---|---|"]
    for b in BATCHES:
        for w in (False, True):
            name = setting_name(m, value, w, b)
            rs = [json.loads(p.read_text()) for p in [out / "grid" / f"{name}.json"] if p.exists()]
            rs += [json.loads(p.read_text()) for p in files if p.stem.rsplit("-s", 1)[0] == name]
            if not rs:
                continue
            per = ", ".join(f"s{r['config']['seed']}: {_f(r['val']['worst'])}" for r in rs)
            lines.append(f"| {b} | {'on' if w else 'off'} | {per} | {_agg([r['val']['worst'] for r in rs])} | "
                         f"{_collapse_text(rs)} |")
    return lines + [""]


def table(out: Path) -> str:
    lines = [f"# Issue 28 study: single-step methods at their best, MNIST, eps {EPS}", "",
             "Produced by `experiments/peers_study.py` (its docstring states every setting). Models evaluated: the "
             "last epoch of each run (no early stopping). Numbers are accuracy (%); over seeds: mean [min, max]. "
             "*Did not learn* (gmreg_lab.runners.report_tables.did_not_learn): clean accuracy within "
             f"{flags.DEAD_MARGIN:g} points of the majority-class rate or {flags.DEAD_SHARE:g} % of the "
             "predictions in one class: such a run's accuracies under attack are not robustness and are left out "
             "of the robust columns.", ""]
    sel_path = out / "selected.json"
    grid_files = sorted((out / "grid").glob("*.json")) if (out / "grid").exists() else []
    if grid_files:
        sel = json.loads(sel_path.read_text()) if sel_path.exists() else {"chosen": {}}
        picked = {n: "**yes**" if ok else "best so far (one step beyond to run)"
                  for n, ok in peers_results.settled(sel).items()}
        lines += ["## Grid (reduced budget, seed 0), scored on validation images", "",
                  f"Rule: {sel.get('rule', 'not selected yet')}.", "",
                  "| run | val clean | val worst case | did not learn | collapse (PGD-10 probe) | chosen |",
                  "|---|---|---|---|---|---|"]
        for p in grid_files:
            r = json.loads(p.read_text())
            v = r["val"]
            worst = "—" if v["did_not_learn"] else _f(v["worst"])
            lines.append(f"| {r['name']} | {_f(v['clean'])} | {worst} | {'yes' if v['did_not_learn'] else 'no'} | "
                         f"{_collapse_text([r])} | {picked.get(r['name'], '')} |")
        if sel.get("incomplete"):
            lines += ["", "Incomplete groups (not selected): " + ", ".join(sorted(sel["incomplete"])) + "."]
        if sel.get("extend"):
            lines += ["", "Best at an end of its grid, one step beyond still to run (`--stage extend`): " + "; ".join(
                f"{g}: {', '.join(n)}" for g, n in sorted(sel["extend"].items())) + "."]
        lines.append("")
    lines += _warmup_section(out)
    header = ["| setting | seeds | clean | PGD-50x10 | APGD-CE+T ours | APGD-CE+T torchattacks | **robust (lower)** | "
              "logit distance | did not learn | collapse (PGD-10 probe) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for stage, title in (("final", "Final: the chosen settings at the full budget, first test images"),
                         ("anchor", "Anchor: Wong et al.'s MNIST FGSM-RS recipe through the kit")):
        files = sorted((out / stage).glob("*.json")) if (out / stage).exists() else []
        if not files:
            continue
        groups: dict = {}
        for p in files:
            r = json.loads(p.read_text())
            groups.setdefault(r["name"].rsplit("-s", 1)[0], []).append(r)
        n_img = next(iter(groups.values()))[0]["test"]["images"]
        lines += [f"## {title} ({n_img} images)", ""] + header
        for setting, rs in groups.items():
            seeds = ",".join(str(r["config"]["seed"]) for r in rs)
            lines.append(f"| {setting} | {seeds} | " + " | ".join(_final_rows(rs)) + " |")
        if stage == "anchor":
            w = paper.WONG_MNIST_REPORTED
            lines += ["", f"Published (their model, full test set): clean {w['clean']:.2f}, PGD-50x10 "
                          f"{w['reported (PGD-50 x 10)']:.2f}, AutoAttack {w['autoattack']:.2f}; source: "
                          f"{w['source']}."]
        secs = [r["train_seconds"] / max(1, r["iterations"]) * 1000 for g in groups.values() for r in g
                if r.get("train_seconds") and r.get("iterations")]
        if secs:
            cpus = sorted({r["cpu"] for g in groups.values() for r in g if r.get("cpu")})
            lines += ["", f"Training time: {statistics.mean(secs):.0f} s per 1000 iterations on average "
                          f"(fp32, one thread per run, on {' and '.join(cpus)}; other work shared the machine, so "
                          "this is not a speed measurement)."]
        lines.append("")
    lines += _budget_section(out)
    lines += _ranking_section(out)
    lines += _time_section(out)
    return "\n".join(lines) + "\n"


def _budget_section(out: Path) -> list:
    """Markdown: whether the final budget cut a run short, from each final run's PGD-10 probe: its gain over the
    last quarter of the run (gmreg_lab.runners.peers_results.last_quarter_gain), its peak, its lowest point after
    the peak and its end; final.html draws the curves."""
    curves = peers_results.learning_curves(out, "final") if (out / "final").exists() else []
    if not any(c["gain"] is not None for c in curves):
        return []
    k, flag = peers_results._TAIL, peers_results.CUT_SHORT_POINTS
    lines = ["## Was the budget long enough? (final runs, PGD-10 probe)", "",
             f"Per final run, its PGD-10 probe (200 held-out images): the gain over the last quarter of the run (mean "
             f"of its last {k} probes minus the mean of the {k} up to three quarters of the run, after which the "
             f"learning rate is 1/25 of its start), its peak, its lowest point after the peak, and its end. A gain "
             f"of {flag:g} points or more is flagged: a flag, not a verdict (each probe has a few points of noise "
             "either way, and a probe can overstate what the test attacks leave: compare the final table). A flagged "
             f"run whose probe had fallen {peers_results.FELL_POINTS:g} points or more after its peak is rising "
             "again after a fall, which is no evidence that more budget would help. The curves are in "
             "`final.html`.", "",
             "| run | gain over the last quarter | peak → lowest after it → end | flag |", "|---|---|---|---|"]
    for c in curves:
        if c["gain"] is None:
            continue
        mark = ("rising again after a fall" if c["recovering"] else "still rising: possibly cut short"
                if c["cut_short"] else "—")
        lines.append(f"| {c['name']} | {c['gain']:+.1f} | {_f(c['peak'])} → {_f(c['low_after_peak'])} → "
                     f"{_f(c['end'])} | {mark} |")
    return lines + [""]


def _ranking_section(out: Path) -> list:
    """Markdown: the final table's order per batch size (gmreg_lab.runners.peers_results.ranking), only once every
    final run has finished; before that, a line saying that no order is drawn yet."""
    if not (out / "final").exists():
        return []
    p = peers_results.progress(out)
    head = ["## Order by mean robust accuracy (final runs)", ""]
    if not p["complete"]:
        return head + [f"Not drawn yet: {p['final']} of {p['final_expected']} final runs have finished.", ""]
    s = peers_results.summary(peers_results.test_rows(out))
    return head + [f"- {peers_results.ranking_line(peers_results.ranking(s, b))}." for b in BATCHES] + [
        "", "Two seeds per setting: a seed range that reaches the top method's lowest seed is not separated from it.",
        ""]


def _time_section(out: Path) -> list:
    """Markdown: per stage, the finished runs' training time and (final, anchor) test-evaluation time, summed (each
    run's own wall-clock time), with the CPUs they ran on."""
    rows = []
    for stage in ("grid", "warmup", "final", "anchor"):
        rs = [json.loads(p.read_text()) for p in sorted((out / stage).glob("*.json"))] if (out / stage).exists() else []
        if not rs:
            continue
        train = sum(r.get("train_seconds") or 0 for r in rs) / 3600
        ev = sum((r.get("test") or {}).get("eval_seconds") or 0 for r in rs) / 3600
        cpus = sorted({r["cpu"] for r in rs if r.get("cpu")})
        rows.append(f"| {stage} | {len(rs)} | {train:.1f} | {_f(ev) if ev else '—'} | {'; '.join(cpus)} |")
    if not rows:
        return []
    return ["## Time taken (finished runs, one thread each)", "",
            "| stage | runs | training (hours) | test evaluation (hours) | CPUs |", "|---|---|---|---|---|",
            *rows, "", "Each run's own wall-clock time, summed over runs. Two to six runs shared the two cores at the "
            "lowest priority beside other work, so a run's time overstates what it costs alone, and the sum is not "
            "the study's wall time. Grid and warm-up runs also spend 1-2 minutes each scoring validation images "
            "(not counted).", ""]


def write_search_figure(out: Path) -> Optional[Path]:
    """<out>/grid.html: the grid as a picture (offline, plotly inline), or nothing before the first grid run."""
    from gmreg_lab.views import plots
    from gmreg_lab.views.report_figures import write_html

    rows = peers_results.grid_rows(out)
    if not rows:
        return None
    fig = plots.setting_search(rows, names=peers_results.METHOD_NAMES, axis_names=peers_results.SETTING_SYMBOL,
                               notes=peers_results.panel_notes(out),
                               title=f"validation worst case of every grid run, MNIST, eps {EPS}")
    return write_html({"grid": fig}, "Issue 28 study: the grid",
                       "Made by <code>python experiments/peers_study.py --table</code> from the grid's JSON files; "
                       "the numbers are in TABLE.md. One seed, the grid's reduced budget, validation images only.",
                       out / "grid.html")


def write_final_figure(out: Path) -> Optional[Path]:
    """<out>/final.html: every final and anchor run's robust accuracy per seed (gl.plots.seeds_comparison), or
    nothing before the first of them finished."""
    from gmreg_lab.views import plots
    from gmreg_lab.views.report_figures import write_html

    rows, published = peers_results.comparison_rows(out)
    if not rows:
        return None
    n = sorted({r["images"] for r in rows})
    fig = plots.seeds_comparison(rows, published=published, published_label="published (AutoAttack, full test set)",
                                 title=f"robust accuracy (lower of ours and torchattacks' APGD-CE + APGD-T worst case)"
                                       f", first {'/'.join(map(str, n))} MNIST test images, eps {EPS}")
    figs = {"robust accuracy per seed": fig}
    curves = peers_results.learning_curves(out, "final")
    if any(c["iterations"] for c in curves):
        figs["learning curves"] = plots.probe_curves(
            curves, names=peers_results.METHOD_NAMES,
            marks={"ε warm-up ends (runs with it)": WARMUP_FRACTION, "lr ÷5": LR_CUTS[0], "lr ÷5 again": LR_CUTS[1]},
            title="learning curves of the final runs: PGD-10 probe (200 images held out of training) per iteration")
    status = peers_results.progress_line(peers_results.progress(out))
    return write_html(figs, "Issue 28 study: the final comparison",
                      "Made by <code>python experiments/peers_study.py --table</code> from the final and anchor JSON "
                      f"files; the numbers are in TABLE.md. Study {status}.", out / "final.html")


# --- command line ---------------------------------------------------------------------------------------------------
def _manifest(out: Path, scale: Scale, limit) -> None:
    path = out / "study.json"
    want = {"scale": scale.name, "limit": limit}
    if path.exists():
        have = json.loads(path.read_text())
        if {k: have.get(k) for k in want} != want:
            raise SystemExit(f"peers_study: {out} holds a study at scale {have.get('scale')!r} (limit "
                             f"{have.get('limit')}), not {scale.name!r} (limit {limit}); use another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    gl.runs.write_json(path, {**want, "scale_settings": asdict(scale), "eps": EPS, "settings": {
        m: list(v[1]) for m, v in SETTINGS.items()}, "batches": list(BATCHES), "warmup_fraction": WARMUP_FRACTION,
        "lr_cuts": list(LR_CUTS), "evaluated_model": WHICH})


def _csv(text: str, cast=str) -> tuple:
    return tuple(cast(v.strip()) for v in text.split(",") if v.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage", choices=("grid", "select", "extend", "final", "anchor", "warmup"))
    ap.add_argument("--table", action="store_true", help="write <out>/TABLE.md from what has finished, and print it")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, each a spawned process with one thread")
    ap.add_argument("--status", action="store_true",
                    help="print how far the study has got and the runs started but not finished, then stop")
    ap.add_argument("--only", default="", help="comma-separated run names of the stage (default: all)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the methods")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated subset of 32,64")
    ap.add_argument("--seeds", default=None, help="seeds of the final and anchor stages (default "
                    f"{','.join(map(str, SEEDS))}) and of the warm-up check (default "
                    f"{','.join(map(str, WARMUP_SEEDS))})")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N training images (smoke run)")
    ap.add_argument("--dry-run", action="store_true", help="tiny everything (64 images, 1 epoch, 2-step attacks)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    scale = DRY if a.dry_run else FULL
    methods, batches = _csv(a.methods), _csv(a.batches, int)
    seeds = _csv(a.seeds, int) if a.seeds is not None else WARMUP_SEEDS if a.stage == "warmup" else SEEDS
    bad = [m for m in methods if m not in SETTINGS] + [str(b) for b in batches if b not in BATCHES]
    if bad:
        raise SystemExit(f"peers_study: unknown method or batch size: {', '.join(bad)}")
    if a.stage is None and not a.table and not a.status:
        raise SystemExit("peers_study: give --stage grid|select|extend|final|anchor|warmup and/or --table, or --status")
    command = " ".join(["python", sys.argv[0] if argv is None else "experiments/peers_study.py",
                        *(sys.argv[1:] if argv is None else argv)])
    if a.stage is not None:
        _manifest(out, scale, a.limit)
    if a.status:
        if not out.is_dir():
            raise SystemExit(f"peers_study: no study at {out}")
        print("study", peers_results.progress_line(peers_results.progress(out)))
        for r in peers_results.in_flight(out):
            print("  started, not finished:", peers_results.in_flight_line(r))
        return 0
    only = set(_csv(a.only))
    if a.stage == "select":
        sel = select(out, scale, methods, batches)
        print(json.dumps({"chosen": {k: v["name"] for k, v in sel["chosen"].items()}, "extend": sel["extend"],
                          "incomplete": sorted(sel["incomplete"])}, indent=1))
    elif a.stage is not None:
        if a.stage == "grid":
            runs = grid(scale, methods, batches, a.limit)
        elif a.stage in ("final", "extend"):
            if not (out / "selected.json").exists():
                raise SystemExit("peers_study: no selected.json yet; run --stage select after the grid")
            sel = json.loads((out / "selected.json").read_text())
            if a.stage == "extend":
                runs = extend_runs(sel, scale, a.limit)
            else:
                # a group whose choice still waits for its edge step is not final yet; the others are
                waiting = sorted(sel.get("extend", {}))
                ready = {g: c for g, c in sel["chosen"].items() if g not in waiting}
                if not ready:
                    raise SystemExit("peers_study: every selected group waits for its edge-extension runs ("
                                     + ", ".join(n for v in sel["extend"].values() for n in v)
                                     + "): run --stage extend, then --stage select")
                if waiting:
                    logging.getLogger("peers_study").warning(
                        "final: %s wait for their edge step (--stage extend, then select); training the others",
                        ", ".join(waiting))
                runs = final_runs({**sel, "chosen": ready}, scale, seeds, methods, batches, a.limit)
        elif a.stage == "warmup":
            runs = warmup_runs(scale, seeds, batches, a.limit)
        else:
            runs = anchor_runs(scale, seeds, a.limit)
        if only:
            unknown = sorted(only - set(runs))
            if unknown:
                raise SystemExit(f"peers_study: no run {', '.join(unknown)} in stage {a.stage}")
            runs = {k: v for k, v in runs.items() if k in only}
        run_all("grid" if a.stage == "extend" else a.stage, runs, out, scale, a.jobs, command)
    if a.table or a.stage is not None:
        text = table(out)
        if out.exists():
            gl.runs.atomic_write_text(out / "TABLE.md", text)
            write_search_figure(out)
            write_final_figure(out)
        if a.table:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

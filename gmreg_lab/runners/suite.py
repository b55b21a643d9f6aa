"""`gmreg-lab reproduce --suite peers`: the paper's regulariser beside the single-step methods that came after it
(FGSM-RS, N-FGSM, GradAlign), FGSM-AT below and PGD-AT above, at one training budget for all (same model, epochs,
optimizer and schedule; each method its own step rule), at several epsilons.

For every method and eps: clean, FGSM and PGD-40 accuracy, the worst case over PGD-40, APGD-CE and APGD-T (the
kit's AutoAttack-style ensemble), the final FGSM / R-FGSM logit distance, whether training collapsed (catastrophic
overfitting, as Wong, Rice & Kolter 2020 named it: the PGD probe falling to near zero after having been well above
it) and at which iteration, for every method, and the seconds per epoch of each method measured side by side
(``gmreg-lab bench``). Markdown + JSON + plotly HTML, every run and evaluation cached and resumable like
``reproduce``.

The model evaluated for each run is its best-validation epoch (``load_model(which="best")``: the epoch with the best
I-FGSM-3 accuracy on ``select_size`` validation images, the paper's rule). A run that did not learn (a constant or
near-constant predictor: :func:`gmreg_lab.runners.report_tables.did_not_learn`) is flagged as such and its attack
accuracies are not robust accuracies: the report never prints them as one, and leaves it out of "lowest logit
distance" claims.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from .. import data as data_mod
from . import jobs as jobs_mod
from .. import paper
from ..config import TrainConfig
from ..diagnostics import COLLAPSE_PEAK, collapse, logit_distance
from ..errors import GmregError
from ..evaluate import evaluate, worst_case
from .report_tables import result_did_not_learn
from .reproduce import Reproduction
from ..runs import atomic_write_text, environment_info, load_checkpoint, log_rows, write_json
from ..runtime import resolve_device

PEERS = ("fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign", "pgd")


def class_shares(model, x, y) -> dict:
    """``{"majority_pct": the most frequent label's share of y, "top_pred_pct": the most predicted class's share
    of the clean predictions}`` (%), for :func:`gmreg_lab.runners.report_tables.did_not_learn`."""
    from ..models import to_model_device

    x, y = to_model_device(model, x, y)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in x.split(1000)])
    share = lambda v: float(torch.bincount(v).max()) * 100 / len(v)     # noqa: E731
    return {"majority_pct": share(y), "top_pred_pct": share(pred)}


@dataclass(frozen=True)
class SuiteScale:
    name: str
    train: dict                 # TrainConfig overrides for every run
    pgd: dict                   # extra overrides for PGD-AT
    eps_list: tuple
    eval_limit: int             # first test images of every evaluation
    attacks: str                # individual columns
    worst: str                  # the worst-case ensemble
    bench_batches: int          # side-by-side timing: batches per method per round
    bench_rounds: int
    pgd_eps: tuple = (0.3,)     # PGD-AT, the upper reference, is trained at these eps only (its cost: 40 steps)


SUITE_SCALES = {
    "smoke": SuiteScale("smoke", dict(limit=256, epochs=1, val_size=500, select_size=64, probe_size=32, log_every=2,
                                      probe_pgd_steps=2, lr_milestones=(0.5,)), dict(pgd_steps=4, pgd_step_size=0.1),
                        eps_list=(0.1, 0.3), eval_limit=32, attacks="clean,fgsm,pgd:4",
                        worst="pgd:4,apgd-ce:5,apgd-t:5:1", bench_batches=1, bench_rounds=1, pgd_eps=(0.1, 0.3)),
    "quick": SuiteScale("quick", dict(epochs=2, lr_milestones=(1.0, 1.5), log_every=50),
                        dict(epochs=1, lr_milestones=(0.5, 0.75)), eps_list=(0.1, 0.2, 0.3, 0.4), eval_limit=300,
                        attacks="clean,fgsm,pgd:40", worst="pgd:40,apgd-ce:100,apgd-t:100:1", bench_batches=10,
                        bench_rounds=3),
    "paper": SuiteScale("paper", dict(), dict(), eps_list=(0.1, 0.2, 0.3, 0.4), eval_limit=1000,
                        attacks="clean,fgsm,pgd:40", worst="pgd:40,apgd-ce:100,apgd-t:100", bench_batches=20,
                        bench_rounds=3),
}


def run_name(method: str, eps: float) -> str:
    return f"{method}_eps{eps:g}"


def suite_runs(dataset: str, sc: SuiteScale, methods=PEERS) -> dict[str, TrainConfig]:
    """Every (method, eps) run of the suite. R-FGSM's noise alpha (the proposed method's logit distance) never
    exceeds eps."""
    if dataset != "mnist":
        raise GmregError("the peers suite runs on MNIST (CIFAR-10: time it with gmreg-lab bench, see README)")
    base = TrainConfig(dataset=dataset)
    runs = {}
    for eps in sc.eps_list:
        for m in methods:
            if m == "pgd" and eps not in sc.pgd_eps:
                continue
            over = {**sc.train, **(sc.pgd if m == "pgd" else {})}
            runs[run_name(m, eps)] = base.replace(method=m, eps=eps, alpha=min(base.alpha, eps), **over)
    return runs


def _evaluate_run(r: Reproduction, sc: SuiteScale, name: str, x, y) -> dict:
    cfg = r.runs[name]
    model = r.model(name)
    table = evaluate(model, x, y, sc.attacks, cfg.eps)
    worst = worst_case(model, x, y, sc.worst, cfg.eps)
    dist = logit_distance(model, x, y, cfg.eps, cfg.alpha, generator=torch.Generator().manual_seed(0))
    return {"method": cfg.method, "eps": cfg.eps, "acc": {k: v["acc"] for k, v in table.items()},
            "worst": worst, "logit_dist": dist}     # collapse and did-not-learn: peers() derives them every time


def _bench(sc: SuiteScale, methods, dev) -> dict:
    from .bench import bench
    return bench("mnist", batch_size=TrainConfig().batch_size, batches=sc.bench_batches, rounds=sc.bench_rounds,
                 methods=tuple(methods), device=dev, progress=False, reference=False)


def peers(scale: str = "quick", out=None, *, dataset: str = "mnist", methods=None, device="auto", data_dir=None,
          progress: bool = True, figures=None, jobs: Optional[int] = None, shard=None) -> dict:
    """Run (or resume) the suite and write ``SUITE.md`` and ``suite.json`` in ``out``; ``figures``: a writer
    ``figures(summary, histories, out)`` called last (``gl.report_figures.write_suite_figures`` writes ``suite.html``;
    the CLI passes it)."""
    if scale not in SUITE_SCALES:
        raise GmregError(f"unknown scale {scale!r}; valid: {', '.join(SUITE_SCALES)}")
    sc = SUITE_SCALES[scale]
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods or PEERS)
    bad = [m for m in methods if m not in PEERS]
    if bad:
        raise GmregError(f"unknown suite method(s) {', '.join(bad)}; valid: {', '.join(PEERS)}")
    out = Path(out) if out is not None else Path("results") / f"{dataset}-peers-{scale}"
    dev = resolve_device(device)
    runs = suite_runs(dataset, sc, methods)
    shard = jobs_mod.parse_shard(shard) if isinstance(shard, str) else shard
    r = Reproduction(dataset, None, out, runs, data_mod.load(dataset, "test", data_dir, device=dev), dev, data_dir,
                     progress, jobs or jobs_mod.default_jobs(dev, len(runs)), shard)
    t0 = time.time()
    metrics = jobs_mod.train_runs(runs, out / "runs", jobs=r.jobs, device=dev, data_dir=data_dir,
                                  progress=progress, shard=shard)
    summary = {"suite": "peers", "dataset": dataset, "scale": scale, "scale_settings": asdict(sc),
               "environment": environment_info(dev), "methods": methods,
               "evaluated_model": "best-validation epoch (I-FGSM-3 on select_size validation images)",
               "runs": {k: {"config": m.get("config"), "seconds_per_epoch": m.get("seconds_per_epoch"),
                            "train_device": m.get("device"), "best_epoch": m.get("best_epoch")}
                        for k, m in metrics.items()}}
    if shard is not None:
        return summary
    x, y = r.test.tensors(sc.eval_limit)
    summary["results"] = {name: r.cached(f"{name}.json", _evaluate_run, r, sc, name, x, y) for name in runs}
    for name, res in summary["results"].items():     # cheap: never stale in a cached evaluation
        res["collapse"] = collapse(log_rows(load_checkpoint(r.out / "runs" / name)["history"]))
        res.update(class_shares(r.model(name), x, y))
        res["did_not_learn"] = result_did_not_learn(res)
    summary["bench"] = r.cached("bench.json", _bench, sc, methods, dev)
    summary["anchors"] = paper.PEER_ANCHORS
    summary["collapse_peak"] = COLLAPSE_PEAK
    summary["wall_seconds_this_invocation"] = time.time() - t0
    write_json(out / "suite.json", summary)
    from .report_tables import render_suite
    atomic_write_text(out / "SUITE.md", render_suite(summary, out))
    if figures:
        figures(summary, {n: log_rows(load_checkpoint(out / "runs" / n)["history"]) for n in runs}, out)
    return summary


def rerender(out, histories: Optional[dict] = None, figures=None, note: str = "") -> dict:
    """Re-write a finished suite's report from its ``suite.json`` with the current renderer, without its run
    directories: ``SUITE.md``, ``suite.json`` (the published anchors refreshed from :data:`gmreg_lab.paper
    .PEER_ANCHORS`, each result's did-not-learn flag recorded, and a ``rerendered`` entry with the date, the code
    version and ``note``) and, with ``figures`` (``write_suite_figures``), ``suite.html`` from ``histories`` (run
    name -> log rows; without them the training-history figures are left out). No number measured by the suite
    changes."""
    from ..runs import git_state, read_json, source_sha256
    from .report_tables import render_suite

    out = Path(out)
    summary = read_json(out / "suite.json")
    if summary.get("suite") != "peers" or "results" not in summary:
        raise GmregError(f"{out / 'suite.json'}: not a finished peers suite")
    summary["anchors"] = paper.PEER_ANCHORS
    for res in summary["results"].values():
        res["did_not_learn"] = result_did_not_learn(res)
    summary.setdefault("evaluated_model", "best-validation epoch (I-FGSM-3 on select_size validation images)")
    summary.setdefault("rerendered", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": {**git_state(),
                                                                          "source_sha256": source_sha256()},
         "note": note})
    write_json(out / "suite.json", summary)
    atomic_write_text(out / "SUITE.md", render_suite(summary, out))
    if figures:
        figures(summary, histories or {}, out)
    return summary

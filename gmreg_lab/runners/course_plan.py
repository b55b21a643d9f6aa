"""The course build's training plan: which cached runs each notebook uses, and training them all up front.

Executed one after another, the notebooks train their runs when they reach them, one or two at a time, and the
second core idles whenever one long run trains alone (07's GradAlign, 03's PGD-AT). ``./kit.sh course`` therefore
first trains every run the notebooks will ask for, in one worker process per core, longest first (EAT as soon as
its static sources are done), and then executes the notebooks, which find their runs cached.

What the notebooks use is **recorded, not declared**: while a build executes a notebook, every run folder the
notebook asks the cache for (``run_dir``) is logged to ``$GMREG_COURSE_USED``, and the notebook's manifest entry
keeps its runs (config, the snapshots they kept, the seconds they trained). The next build trains those first, also
for a notebook that changed since (most edits are text; a run no notebook asks for any more costs its minutes once,
and every build records the runs again); a build reports any run a notebook still had to train (``trained_runs``).

Only complete MNIST runs are planned: 06's CIFAR-10 runs need the data folder the notebook sets up, and the panel's
runs stop at their verdict (the notebook trains them).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

from ..config import TrainConfig
from .cache import ENV_USED, run_name  # noqa: F401 -- ENV_USED: the variable a build sets for its kernels

log = logging.getLogger(__name__)

RUNS_PREFIX = "{runs}/"      # an EAT source inside the runs folder, written relative to it in the manifest


def used_runs(log_file: Path) -> list[dict]:
    """The runs logged to ``log_file`` (``$GMREG_COURSE_USED``), each once, in first-use order: ``{"dir": Path,
    "config": the config the notebook asked for}``."""
    try:
        lines = Path(log_file).read_text().splitlines()
    except OSError:
        return []
    out = {}
    for rec in (json.loads(line) for line in lines if line.strip()):
        out.setdefault(rec["dir"], {"dir": Path(rec["dir"]), "config": rec["config"]})
    return list(out.values())


def plan_entries(used: list[dict], root: Path) -> list[dict]:
    """The manifest's record of the ``used`` runs (:func:`used_runs`) that can be trained up front: complete MNIST
    runs under ``root`` whose folder the asked-for config names, with that config (not the checkpoint's, which
    stores ``precision="auto"`` resolved; EAT sources relative to ``root``), the snapshots they kept and their
    seconds."""
    from ..runs import CHECKPOINT, load_checkpoint, read_json

    root = Path(root).resolve()
    out = []
    for u in used:
        folder, cfg = Path(u["dir"]), TrainConfig.from_dict(u["config"])
        if folder.resolve().parent != root or run_name(cfg) != folder.name or not (folder / CHECKPOINT).is_file():
            continue
        try:
            ckpt, metrics = load_checkpoint(folder), read_json(folder / "metrics.json")
        except Exception:          # a broken run is the notebook's to report, not the plan's
            continue
        if cfg.dataset != "mnist" or not metrics.get("complete"):
            continue
        d = cfg.to_dict()
        d["eat_sources"] = [RUNS_PREFIX + Path(s).name if Path(s).resolve().parent == root else s
                            for s in cfg.eat_sources]
        out.append({"name": folder.name, "config": d,
                    "snapshot_at": sorted(int(k) for k in ckpt.get("snapshots") or {}),
                    "seconds": round(_wall_seconds(folder, metrics), 1)})
    return out


def _wall_seconds(folder: Path, metrics: dict) -> float:
    """How long the run took, probes included: from its config.json to its last metrics.json (the training
    seconds in ``metrics`` leave the probes out, and the schedule needs the whole time); those seconds if the files'
    times say nothing."""
    try:
        wall = (folder / "metrics.json").stat().st_mtime - (folder / "config.json").stat().st_mtime
    except OSError:
        wall = 0.0
    return wall if wall > 0 else float(metrics.get("train_seconds") or 0.0)


def rebase(entry: dict, root: Path) -> TrainConfig:
    """A plan entry's config with its EAT sources inside ``root`` (the folder the runs are cached in now)."""
    d = dict(entry["config"])
    d["eat_sources"] = [str(Path(root) / s[len(RUNS_PREFIX):]) if s.startswith(RUNS_PREFIX) else s
                        for s in d.get("eat_sources") or ()]
    return TrainConfig.from_dict(d)


def plan_from_manifest(manifest: dict, notebooks) -> list[dict]:
    """The planned runs of ``notebooks`` (manifest keys), each once, in notebook order."""
    seen, out = set(), []
    for nb in notebooks:
        for r in (manifest.get(nb) or {}).get("runs") or ():
            if r["name"] not in seen:
                seen.add(r["name"])
                out.append(r)
    return out


def schedule(seconds: dict, deps: dict, lanes: int) -> tuple[list, float]:
    """List scheduling on ``lanes`` workers: whenever one is free it takes the ready run (its ``deps`` done) with the
    longest chain of work still behind it. Returns the order runs start in and the predicted makespan (seconds)."""
    after = {k: [j for j in deps if k in deps[j]] for k in seconds}

    def chain(k):
        return seconds[k] + max((chain(j) for j in after[k]), default=0.0)

    prio = {k: chain(k) for k in seconds}
    free, done_at, order, pending = [0.0] * lanes, {}, [], set(seconds)
    while pending:
        t = min(free)
        ready = [k for k in pending if all(d in done_at and done_at[d] <= t for d in deps.get(k, ()))]
        if not ready:       # wait for the next dependency to finish
            t = min(done_at[d] for k in pending for d in deps.get(k, ()) if d in done_at and done_at[d] > t)
            free[free.index(min(free))] = t
            continue
        k = max(ready, key=lambda r: (prio[r], r))
        lane = free.index(min(free))
        done_at[k] = free[lane] = t + seconds[k]
        order.append(k)
        pending.discard(k)
    return order, max(done_at.values(), default=0.0)


def _todo(plan: list[dict], root: Path) -> dict:
    """``{run name in root: (config, snapshots, recorded seconds)}`` for the planned runs ``root`` lacks."""
    from ..runs import CHECKPOINT, load_checkpoint
    from .jobs import _complete

    out = {}
    for entry in plan:
        cfg = rebase(entry, root)
        name = run_name(cfg)
        if not _complete(root / name, CHECKPOINT, load_checkpoint):
            out[name] = (cfg, tuple(entry.get("snapshot_at") or ()), float(entry.get("seconds") or 1.0))
    return out


def _run_pool(cfgs: dict, deps: dict, order: list, root: Path, dev, n: int, threads: int, bar) -> tuple:
    """Train ``cfgs`` in ``n`` spawned workers, each run once its ``deps`` are done, in ``order``; returns
    (names done, {name: error})."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from .jobs import _worker

    done, failed, running, pending = set(), {}, {}, list(order)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as ex:
        while pending or running:
            for k in [k for k in pending if all(d in done for d in deps[k])][:n - len(running)]:
                cfg, snaps, _ = cfgs[k]
                running[ex.submit(_worker, k, cfg.to_dict(), root / k, str(dev), None, snaps, threads)] = k
                pending.remove(k)
            if not running:         # what is left depends on a run that failed
                failed.update(dict.fromkeys(pending, "its EAT source failed"))
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                k = running.pop(fut)
                try:
                    fut.result()
                    done.add(k)
                except Exception as e:      # the notebook trains it again and reports the error
                    failed[k] = f"{type(e).__name__}: {e}"
                    log.warning("course: training %s up front failed (%s); its notebook will train it", k, e)
                if bar is not None:
                    bar.update(1)
    return done, failed


def pretrain(plan: list[dict], root: Path, *, jobs: Optional[int] = None, device="auto",
             progress: bool = True) -> dict:
    """Train every run of ``plan`` that ``root`` does not hold complete yet: ``jobs`` worker processes (default one
    per core, one thread each), longest chain of work first, an EAT run once its sources are done. Returns
    ``{"trained": [names], "failed": {name: error}, "seconds": wall seconds, "predicted_seconds": the schedule's
    makespan from the recorded seconds, "processes": n}``; a run that fails is left for its notebook (which
    reports it) and logged."""
    import os

    import torch

    from ..runtime import resolve_device
    from .jobs import default_jobs

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfgs, t0 = _todo(plan, root), time.time()
    if not cfgs:
        return {"trained": [], "failed": {}, "seconds": 0.0, "predicted_seconds": 0.0}
    dev = resolve_device(device)
    n = max(1, min(jobs or default_jobs(dev, len(cfgs)), len(cfgs)))
    deps = {k: [Path(s).name for s in c[0].eat_sources if Path(s).name in cfgs] for k, c in cfgs.items()}
    order, predicted = schedule({k: c[2] for k, c in cfgs.items()}, deps, n)
    threads = max(1, (os.cpu_count() or 1) // n) if dev.type == "cpu" else torch.get_num_threads()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfgs), unit="run", desc=f"course: trains {len(cfgs)} runs up front in {n} processes "
                   f"(about {predicted / 60:.0f} min, from the recorded times)")
    try:
        done, failed = _run_pool(cfgs, deps, order, root, dev, n, threads, bar)
    finally:
        if bar is not None:
            bar.close()
    return {"trained": sorted(done), "failed": failed, "seconds": round(time.time() - t0, 1),
            "predicted_seconds": round(predicted, 1), "processes": n}

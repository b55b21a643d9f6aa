"""Many independent training runs on one machine: in parallel worker processes, or as one share of a scheduler
array (``--shard I/N``).

Independent runs go faster side by side than one after another on a CPU: a training step at batch 32 barely uses
a second thread, so two one-thread processes do about 1.65x the work of one two-thread process (BENCHMARKS.md).
Each worker trains a whole run (cached and resumable in its run directory, exactly as a sequential call would);
runs that need others (EAT needs its static sources) wait for the wave before theirs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path
from typing import Optional

import torch

from ..config import TrainConfig
from ..errors import GmregError
from ..runtime import resolve_device

log = logging.getLogger(__name__)


def default_jobs(device, n_runs: int) -> int:
    """One worker per core on a CPU (each with one thread: what measured fastest here), one process on a GPU."""
    if resolve_device(device).type == "cuda":
        return 1
    return max(1, min(n_runs, os.cpu_count() or 1))


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ``"$VAR/N"``-style values are expanded by the shell beforehand."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise GmregError(f"--shard must look like I/N (e.g. 0/8), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise GmregError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def shard_of(names, shard: Optional[tuple[int, int]]) -> set:
    """The runs of shard (I, N): every N-th of the sorted names, starting at I (deterministic, disjoint, and
    together all of them)."""
    names = sorted(names)
    if shard is None:
        return set(names)
    i, n = shard
    return set(names[i::n])


def waves(runs: dict, ready=lambda source: False) -> list[dict]:
    """The runs in waves: first those that need no other run (or whose sources are all ``ready``: trained), then
    those that train on others still to train (EAT sources)."""
    first = {k: v for k, v in runs.items() if all(ready(s) for s in v.eat_sources)}
    rest = {k: v for k, v in runs.items() if k not in first}
    return [w for w in (first, rest) if w]


def _worker(name, cfg_dict, out, device, data_dir, snapshot_at, threads, queue=None):
    from ..training import compile_pays, train   # imported in the worker (spawned: a fresh interpreter)

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(cfg_dict)
    cfg = cfg.replace(compile_model=compile_pays(cfg, resolve_device(device)))
    callback = None
    if queue is not None:   # the parent's progress bar: (run, iterations done) at every history row
        def callback(row):
            queue.put((name, int(row.get("iteration", 0))))
    res = train(cfg, out, device=device, data_dir=data_dir, resume=True, progress=False, snapshot_at=snapshot_at,
                callback=callback)
    return name, res.metrics


def _pool_with_progress(pool, args, todo: dict, label: str, manager) -> list:
    """``pool.starmap(_worker, args)`` with one tqdm bar in this process over every run's iterations, fed by the
    workers' history rows through a queue (a worker's own bar would print from another process)."""
    import queue as queue_mod

    from tqdm.auto import tqdm

    q = manager.Queue()
    pending = pool.starmap_async(_worker, [(*a, q) for a in args])
    done = dict.fromkeys(todo, 0)
    with tqdm(total=sum(cfg.iterations for cfg in todo.values()), desc=label, unit="it") as bar:
        while True:
            try:
                name, it = q.get(timeout=0.5)
                done[name] = max(done[name], it)
                bar.n = sum(done.values())
                bar.refresh()
            except queue_mod.Empty:
                if pending.ready():
                    break
        results = pending.get()
        bar.n = sum(cfg.iterations for cfg in todo.values())
        bar.refresh()
    return results


def train_runs(runs: dict, root: Path, *, jobs: int = 1, device="auto", data_dir=None, progress=True,
               snapshot_at: Optional[dict] = None, shard: Optional[tuple[int, int]] = None) -> dict:
    """Train (or resume, or reuse) ``runs`` (name -> TrainConfig) into ``root/<name>``; returns name -> metrics of
    the runs trained or found complete. ``jobs`` > 1: that many worker processes, the CPU threads split between
    them. ``shard``: only this shard's runs (:func:`shard_of`); a shard's EAT run whose sources are not trained yet
    is left for a later call (logged). ``progress``: a bar per run (``True``, one process), or with workers one bar
    over all the runs' iterations (a string labels it); ``False``: none."""
    from ..runs import CHECKPOINT, load_checkpoint
    from ..training import compile_pays, train

    snapshot_at = snapshot_at or {}
    mine = shard_of(runs, shard)
    dev = resolve_device(device)
    out: dict = {}
    ready = lambda s: _complete(Path(s), CHECKPOINT, load_checkpoint)   # noqa: E731
    for wave in waves({k: v for k, v in runs.items() if k in mine}, ready):
        todo = {}
        for name, cfg in wave.items():
            missing = [s for s in cfg.eat_sources if not ready(s)]
            if missing and shard is not None:
                log.warning("%s: its sources %s are not trained yet; left for a later call", name, missing)
                continue
            todo[name] = cfg
        n = min(jobs, len(todo))
        if n <= 1:
            for name, cfg in todo.items():
                cfg = cfg.replace(compile_model=compile_pays(cfg, dev))
                log.info("training %s", name)
                res = train(cfg, root / name, device=dev, data_dir=data_dir, resume=True, progress=progress,
                            snapshot_at=snapshot_at.get(name, ()))
                out[name] = res.metrics
            continue
        threads = max(1, torch.get_num_threads() // n)
        ctx = multiprocessing.get_context("spawn")
        args = [(name, cfg.to_dict(), root / name, str(dev), data_dir, snapshot_at.get(name, ()), threads)
                for name, cfg in todo.items()]
        if progress:
            label = progress if isinstance(progress, str) else f"trains {len(todo)} runs in {n} processes"
            with ctx.Manager() as manager, ctx.Pool(n) as pool:
                results = _pool_with_progress(pool, args, todo, label, manager)
        else:
            with ctx.Pool(n) as pool:
                results = pool.starmap(_worker, args)
        for name, metrics in results:
            out[name] = metrics
    return out


def _complete(run_dir: Path, checkpoint: str, load) -> bool:
    if not (run_dir / checkpoint).is_file():
        return False
    try:
        return bool(load(run_dir).get("complete"))
    except GmregError:
        return False

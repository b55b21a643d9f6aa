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

from .config import TrainConfig
from .errors import GmregError
from .runtime import resolve_device

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


def waves(runs: dict) -> list[dict]:
    """The runs in waves: first those that need no other run, then those that train on others (EAT sources)."""
    first = {k: v for k, v in runs.items() if not v.eat_sources}
    rest = {k: v for k, v in runs.items() if v.eat_sources}
    return [w for w in (first, rest) if w]


def _worker(name, cfg_dict, out, device, data_dir, snapshot_at, threads):
    from .training import compile_pays, train   # imported in the worker (spawned: a fresh interpreter)

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(cfg_dict)
    cfg = cfg.replace(compile_model=compile_pays(cfg, resolve_device(device)))
    res = train(cfg, out, device=device, data_dir=data_dir, resume=True, progress=False, snapshot_at=snapshot_at)
    return name, res.metrics


def train_runs(runs: dict, root: Path, *, jobs: int = 1, device="auto", data_dir=None, progress: bool = True,
               snapshot_at: Optional[dict] = None, shard: Optional[tuple[int, int]] = None) -> dict:
    """Train (or resume, or reuse) ``runs`` (name -> TrainConfig) into ``root/<name>``; returns name -> metrics of
    the runs trained or found complete. ``jobs`` > 1: that many worker processes, the CPU threads split between
    them. ``shard``: only this shard's runs (:func:`shard_of`); a shard's EAT run whose sources are not trained yet
    is left for a later call (logged)."""
    from .runs import CHECKPOINT, load_checkpoint
    from .training import compile_pays, train

    snapshot_at = snapshot_at or {}
    mine = shard_of(runs, shard)
    dev = resolve_device(device)
    out: dict = {}
    for wave in waves({k: v for k, v in runs.items() if k in mine}):
        todo = {}
        for name, cfg in wave.items():
            missing = [s for s in cfg.eat_sources if not _complete(Path(s), CHECKPOINT, load_checkpoint)]
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
        with ctx.Pool(n) as pool:
            args = [(name, cfg.to_dict(), root / name, str(dev), data_dir, snapshot_at.get(name, ()), threads)
                    for name, cfg in todo.items()]
            for name, metrics in pool.starmap(_worker, args):
                out[name] = metrics
    return out


def _complete(run_dir: Path, checkpoint: str, load) -> bool:
    if not (run_dir / checkpoint).is_file():
        return False
    try:
        return bool(load(run_dir).get("complete"))
    except GmregError:
        return False

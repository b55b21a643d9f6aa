"""Where cached training runs live (the notebooks', the course build's, the widgets'): one folder per config.

``runs_dir()`` is ``$GMREG_RUNS_DIR``, else the repository's ``runs/``; ``run_dir(cfg)`` the folder of one config
(``run_name(cfg)``: readable, and the same config always maps to the same folder). Smoke mode (tests) uses a fresh
temporary folder per process instead.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..config import TrainConfig

ENV_RUNS_DIR = "GMREG_RUNS_DIR"
ENV_USED = "GMREG_COURSE_USED"   # set by the course build: a file that logs every run folder a notebook asks for

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
    repo = Path(__file__).resolve().parents[2]
    return repo / "runs" if (repo / "pyproject.toml").is_file() else Path.cwd() / "runs"


def run_name(cfg: TrainConfig, prefix: str = "nb") -> str:
    """A readable, config-specific folder name: the same config always maps to the same cached run."""
    digest = hashlib.sha1(cfg.to_json().encode()).hexdigest()[:8]
    lam = f"-lam{cfg.lam:g}" if cfg.method == "proposed" else ""
    return f"{prefix}-{cfg.dataset}-{cfg.model}-{cfg.method}{lam}-eps{cfg.eps:.3g}-{digest}"


def run_dir(cfg: TrainConfig, *, smoke: bool = False, root=None) -> Path:
    """The cache folder of ``cfg``: ``root`` (default ``runs_dir(smoke)``) / ``run_name(cfg)``. During a course
    build (``$GMREG_COURSE_USED``) the folder is also logged: the build's plan of runs to train up front
    (``runners/course_plan.py``) is what the notebooks asked for."""
    out = (Path(root) if root is not None else runs_dir(smoke)) / run_name(cfg)
    used = os.environ.get(ENV_USED)
    if used and not smoke:      # the config as asked for: a checkpoint stores some fields resolved ("auto" -> bf16)
        with open(used, "a") as f:
            f.write(json.dumps({"dir": str(out.resolve()), "config": cfg.to_dict()}) + "\n")
    return out

"""gmreg-lab: see, measure and cure gradient masking in single-step adversarial training.

Compute modules (data, models, attacks, losses, training, evaluate, diagnostics, landscape, autoattack, audit,
runtime) need only torch; ``plots``, ``widgets`` and ``report_figures`` (plotly, ipywidgets) are imported on first use,
so the package imports on a bare GPU machine. So are the notebook helpers ``lab``, the test ``fixtures`` and the
runners ``reproduce``, ``suite`` and ``jobs`` (``gl.lab.recipe(...)``, ``gl.fixtures.make_cifar10_fixture``).
"""

from __future__ import annotations

import importlib

from . import (attacks, audit, autoattack, config, data, diagnostics, errors, evaluate, landscape, losses, models,
               runs, runtime, training)
from .config import TrainConfig
from .errors import GmregError
from .evaluate import parse_attacks, sweep, transfer
from .runs import load_model
from .training import TrainResult, train

__version__ = "0.1.0"
__all__ = ["TrainConfig", "GmregError", "TrainResult", "train", "load_model", "parse_attacks", "sweep",
           "transfer", "attacks", "config", "data", "diagnostics", "errors", "evaluate", "losses", "models",
           "runs", "runtime", "training", "landscape", "autoattack", "audit", "plots", "widgets", "lab", "fixtures",
           "reproduce", "suite", "jobs", "report_figures"]
_LAZY = ("plots", "widgets", "lab", "fixtures", "reproduce", "suite", "jobs", "report_figures")


def __getattr__(name):  # lazy: plotting / widgets pull in plotly and ipywidgets; lab / fixtures are notebook-only
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gmreg_lab' has no attribute {name!r}")

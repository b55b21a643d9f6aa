"""gmreg-lab: see, measure and cure gradient masking in single-step adversarial training.

Compute modules (data, models, attacks, losses, train, evaluate, diagnostics) need only torch; ``plots`` and
``widgets`` (plotly, ipywidgets) are imported on first use, so the package imports on a bare GPU machine. So are the
notebook helpers ``lab`` and the test ``fixtures`` (``gl.lab.recipe(...)``, ``gl.fixtures.make_cifar10_fixture``).
"""

from __future__ import annotations

import importlib

from . import attacks, config, data, diagnostics, errors, evaluate, losses, models, runs, train as training
from .config import TrainConfig
from .errors import GmregError
from .evaluate import parse_attacks, sweep, transfer
from .runs import load_model
from .train import TrainResult, train

__version__ = "0.1.0"
__all__ = ["TrainConfig", "GmregError", "TrainResult", "train", "load_model", "parse_attacks", "sweep",
           "transfer", "attacks", "config", "data", "diagnostics", "errors", "evaluate", "losses", "models",
           "runs", "training", "plots", "widgets", "lab", "fixtures"]
_LAZY = ("plots", "widgets", "lab", "fixtures")


def __getattr__(name):  # lazy: plotting / widgets pull in plotly and ipywidgets; lab / fixtures are notebook-only
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gmreg_lab' has no attribute {name!r}")

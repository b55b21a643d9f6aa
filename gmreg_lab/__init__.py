"""gmreg-lab: see, measure and cure gradient masking in single-step adversarial training.

Three layers, one folder each; imports only go down (tests/test_codebase.py checks it):

- ``gmreg_lab/`` -- the paper's science: data, models, attacks, losses, training, evaluate, diagnostics, landscape,
  autoattack, runs, runtime, config, errors, paper, fixtures. Needs torch, never plotly or ipywidgets.
- ``gmreg_lab/runners/`` -- experiments built on the science: reproduce, suite, jobs, bench, audit, course, the run
  cache, the report tables and the peers study's reader.
- ``gmreg_lab/views/`` -- what a person looks at or types into: plots, report_figures, widgets, the notebook helpers
  ``lab`` and the command line ``cli``.

Every module is reachable as ``gl.<name>`` whichever folder holds it (``gl.lab.recipe(...)``, ``gl.reproduce``,
``gl.plots``); the runners and views are imported on first use, so the package imports on a bare GPU machine without
plotly or ipywidgets.
"""

from __future__ import annotations

import importlib

from . import (attacks, autoattack, config, data, diagnostics, errors, evaluate, landscape, losses, models, runs,
               runtime, training)
from .config import TrainConfig
from .errors import GmregError
from .evaluate import parse_attacks, sweep, transfer
from .runs import load_model
from .training import TrainResult, train

__version__ = "0.1.0"
# the modules outside the science folder, by the folder that holds them (imported on first use)
HOMES = {**{m: "runners" for m in ("audit", "bench", "cache", "course", "course_plan", "jobs", "peers_results",
                                   "report_tables", "reproduce", "suite")},
         **{m: "views" for m in ("cli", "lab", "plots", "report_figures", "widgets")}}
__all__ = ["TrainConfig", "GmregError", "TrainResult", "train", "load_model", "parse_attacks", "sweep",
           "transfer", "attacks", "autoattack", "config", "data", "diagnostics", "errors", "evaluate", "fixtures",
           "landscape", "losses", "models", "paper", "runs", "runtime", "training", *HOMES]


def __getattr__(name):  # lazy: plots / widgets pull in plotly and ipywidgets; the runners are not needed to train
    if name in HOMES:
        return importlib.import_module(f".{HOMES[name]}.{name}", __name__)
    if name in ("fixtures", "paper"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gmreg_lab' has no attribute {name!r}")

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gmreg_lab as gl

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A training config that finishes in about a second on a 2-core CPU: 64 real MNIST images, two batches.
TINY = dict(epochs=1, batch_size=32, limit=64, val_size=200, probe_size=32, select_size=32, log_every=1,
            probe_pgd_steps=2, precision="fp32")


def tiny_cfg(**kw) -> "gl.TrainConfig":
    return gl.TrainConfig(**{**TINY, **kw})


@pytest.fixture(scope="session")
def mnist_test():
    return gl.data.load("mnist", "test")


@pytest.fixture(scope="session")
def small_batch(mnist_test):
    return mnist_test.tensors(64)


@pytest.fixture(scope="session")
def trained_lenet():
    """A LeNet+ trained normally (no adversary) for 100 iterations: accurate enough for attack tests."""
    torch.manual_seed(0)
    cfg = gl.TrainConfig(method="normal", epochs=1, batch_size=64, limit=6400, val_size=200, probe_size=32,
                         select_size=32, log_every=1000, lr=0.05, lr_milestones=(0.9,), select_best=False)
    return gl.train(cfg, progress=False).model

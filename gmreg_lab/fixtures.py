"""A tiny generated CIFAR-10 in the real python-pickle format that torchvision's ``CIFAR10`` reads.

Used by smoke runs (tests, CI, notebook 06 in smoke mode) where the real CIFAR-10 is not on disk. The images are
random noise with random labels: the pipeline runs end to end, nothing is learnt from them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .errors import GmregError

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def make_cifar10_fixture(root, n_per_batch: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with five training batches and a test batch of ``n_per_batch`` random
    32x32 colour images each (so ``5 * n_per_batch`` training images), plus ``batches.meta``. Returns ``root``,
    ready for ``gl.data.load("cifar10", split, root)`` or ``gl.train(cfg, data_dir=root)``."""
    if not (isinstance(n_per_batch, int) and n_per_batch >= 1):
        raise GmregError(f"n_per_batch must be an integer >= 1, got {n_per_batch!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for name in BATCHES:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist(), "batch_label": name}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_LABEL_NAMES}, f)
    return root

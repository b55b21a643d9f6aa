"""Datasets as whole tensors on the compute device.

MNIST is read from the idx files shipped in ``data/mnist`` (offline, ~0.5 s to decode); CIFAR-10 goes through
torchvision's real ``CIFAR10`` dataset, downloading only when asked. Images are kept as uint8 NCHW tensors on the
device and converted to float pixels in [0, 1] per batch; batches come from a seeded permutation, and CIFAR-10's
augmentation (random crop with 4-pixel padding, horizontal flip) runs on the device.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from .errors import DataNotFoundError, GmregError

ENV_DATA_DIR = "GMREG_DATA_DIR"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}


def default_data_dir() -> Path:
    """``$GMREG_DATA_DIR`` if set, else the repository's ``data/`` folder (next to the package)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env)
    repo_data = Path(__file__).resolve().parent.parent / "data"
    return repo_data if repo_data.is_dir() else Path.cwd() / "data"


@dataclass
class Split:
    """Images (uint8, NCHW) and labels (int64) of one split, on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device), self.dataset)

    def subset(self, index) -> "Split":
        return Split(self.images[index], self.labels[index], self.dataset)

    def head(self, n: Optional[int]) -> "Split":
        return self if n is None else self.subset(slice(0, n))

    def tensors(self, n: Optional[int] = None):
        """Float pixels in [0, 1] and labels of the first ``n`` examples (all by default)."""
        s = self.head(n)
        return to_float(s.images), s.labels

    def batches(self, batch_size: int, *, generator: Optional[torch.Generator] = None, shuffle: bool = True,
                augment: bool = False, drop_last: bool = False) -> Iterator[tuple]:
        """Yield ``(x, y)`` float batches; order from ``generator`` (seeded permutation), no host round-trips."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            x = to_float(self.images[idx])
            if augment:
                x = augment_crop_flip(x, generator=generator)
            yield x, self.labels[idx]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def augment_crop_flip(x: torch.Tensor, pad: int = 4, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random crop with ``pad``-pixel zero padding and random horizontal flip, per image, on ``x``'s device."""
    n = x.shape[0]
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return crop_flip(x, dx, dy, flip, pad)


def crop_flip(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Image i of ``x`` zero-padded by ``pad``, cropped back to its size at column ``dx[i]`` and row ``dy[i]`` of
    the padded image, then mirrored left-right where ``flip[i]``; all images at once, with two gathers."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])            # n, h
    cols = torch.arange(w, device=x.device)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]       # n, w
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))   # crop rows
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))                   # crop + flip columns


# --- MNIST ----------------------------------------------------------------------------------------------------------
def _read_idx(path: Path, magic: int, count: int, item_shape: tuple) -> torch.Tensor:
    if not path.is_file():
        raise DataNotFoundError(
            f"MNIST file {path} is missing; copy the four MNIST idx .gz files into {path.parent} "
            f"(the repository ships them in data/mnist) or set ${ENV_DATA_DIR}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise GmregError(f"MNIST file {path} is corrupt or truncated ({e}); restore it from data/mnist") from None
    header = 4 + 4 * (1 + len(item_shape))
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise GmregError(f"MNIST file {path} is not an idx file (bad magic number); restore it from data/mnist")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(1 + len(item_shape))]
    expected = [count, *item_shape]
    size = count
    for d in item_shape:
        size *= d
    if dims != expected or len(raw) != header + size:
        raise GmregError(f"MNIST file {path} is truncated or has the wrong size (header {dims}, "
                         f"{len(raw) - header} bytes of data, expected {expected}); restore it from data/mnist")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(count, *item_shape)


def load_mnist(split: str = "train", data_dir=None, device="cpu") -> Split:
    if split not in MNIST_FILES:
        raise GmregError(f"unknown split {split!r}; valid: train, test")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / "mnist" if (root / "mnist").is_dir() else root
    img_name, lab_name, count = MNIST_FILES[split]
    files = (folder / img_name, folder / lab_name)
    key = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else str(f) for f in files)
    cached = _MNIST_CACHE.get(split)
    if cached is None or cached[0] != key:  # one decoded copy per split, re-read when the files change
        images = _read_idx(files[0], 2051, count, (28, 28)).unsqueeze(1)
        labels = _read_idx(files[1], 2049, count, ()).long()
        if int(labels.max()) > 9:
            raise GmregError(f"MNIST labels in {files[1]} are out of range; restore the file from data/mnist")
        cached = _MNIST_CACHE[split] = (key, images, labels)
    _, images, labels = cached
    return Split(images.to(device), labels.to(device), "mnist")


_MNIST_CACHE: dict = {}


# --- CIFAR-10 -------------------------------------------------------------------------------------------------------
def load_cifar10(split: str = "train", data_dir=None, device="cpu", download: bool = False) -> Split:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` (python pickle batches in ``cifar-10-batches-py``).

    torchvision checks the md5 of every file; we keep that check when downloading and otherwise only require the
    files to exist and unpickle, so a small test fixture in the same format loads through the same code.
    """
    if split not in ("train", "test"):
        raise GmregError(f"unknown split {split!r}; valid: train, test")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    from torchvision.datasets import CIFAR10  # imported here: torchvision is slow to import and MNIST needs none

    class _CIFAR10(CIFAR10):  # md5 checks (None = "file exists") only when not downloading
        if not download:
            train_list = [[name, None] for name, _ in CIFAR10.train_list]
            test_list = [[name, None] for name, _ in CIFAR10.test_list]
            meta = {**CIFAR10.meta, "md5": None}

    try:
        ds = _CIFAR10(str(root), train=(split == "train"), download=download)
    except RuntimeError as e:
        raise DataNotFoundError(
            f"CIFAR-10 not found in {root / 'cifar-10-batches-py'} ({e}); run the command again with --download "
            f"(needs internet) or set ${ENV_DATA_DIR} to a folder holding cifar-10-batches-py") from None
    except Exception as e:  # a truncated pickle raises EOFError, UnpicklingError, ValueError, ...
        raise GmregError(f"CIFAR-10 files in {root / 'cifar-10-batches-py'} are corrupt ({type(e).__name__}: {e}); "
                         f"delete them and download again") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(ds.targets, dtype=torch.long)
    return Split(images.to(device), labels.to(device), "cifar10")


def load(dataset: str, split: str = "train", data_dir=None, device="cpu", download: bool = False) -> Split:
    """Load a whole split of ``dataset`` ("mnist" or "cifar10") onto ``device``."""
    if dataset == "mnist":
        return load_mnist(split, data_dir, device)
    if dataset == "cifar10":
        return load_cifar10(split, data_dir, device, download)
    raise GmregError(f"unknown dataset {dataset!r}; valid: mnist, cifar10")


def train_val_split(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Seeded split of the training set into (train, validation); the test set is never touched."""
    if val_size >= len(train):
        raise GmregError(f"val_size ({val_size}) must be smaller than the training set ({len(train)} images)")
    g = torch.Generator().manual_seed(10_007 + seed)
    perm = torch.randperm(len(train), generator=g).to(train.device)
    return train.subset(perm[val_size:]), train.subset(perm[:val_size])

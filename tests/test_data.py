import gzip
import pickle
import shutil

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab import data
from gmreg_lab.fixtures import make_cifar10_fixture


def test_real_mnist_ships_with_the_repo():
    tr, te = data.load("mnist", "train"), data.load("mnist", "test")
    assert (len(tr), len(te)) == (60_000, 10_000)
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (1, 28, 28)
    assert tr.images.float().mean().item() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert torch.bincount(tr.labels).tolist()[:3] == [5923, 6742, 5958]


def test_batches_are_seeded_and_cover_the_split():
    s = data.load("mnist", "test").head(100)
    a = [y for _, y in s.batches(32, generator=torch.Generator().manual_seed(0))]
    b = [y for _, y in s.batches(32, generator=torch.Generator().manual_seed(0))]
    assert all(torch.equal(i, j) for i, j in zip(a, b))
    assert sorted(torch.cat(a).tolist()) == sorted(s.labels.tolist())
    x, _ = next(s.batches(32, generator=torch.Generator().manual_seed(0)))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_train_val_split_is_disjoint_and_seeded():
    s = data.load("mnist", "test")
    tr, va = data.train_val_split(s, 1000, seed=0)
    tr2, va2 = data.train_val_split(s, 1000, seed=0)
    assert len(tr) == 9000 and len(va) == 1000 and torch.equal(va.images, va2.images)
    with pytest.raises(ValueError, match="val_size"):
        data.train_val_split(s, 10_000, seed=0)


def _copy_mnist(tmp_path):
    d = tmp_path / "mnist"
    shutil.copytree(data.default_data_dir() / "mnist", d)
    return d


def test_missing_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST file .* is missing"):
        data.load("mnist", "test", tmp_path)


def test_truncated_mnist_is_a_clear_error(tmp_path):
    d = _copy_mnist(tmp_path)
    f = d / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match="truncated or has the wrong size"):
        data.load("mnist", "test", tmp_path)
    f.write_bytes(f.read_bytes()[:1000])  # a cut gzip stream
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.load("mnist", "test", tmp_path)


def write_cifar_fixture(root, n_per_batch=20, seed=0):
    """A tiny CIFAR-10 in the real python-pickle format that torchvision reads (gmreg_lab.fixtures)."""
    return make_cifar10_fixture(root, n_per_batch, seed)


def test_cifar_fixture_loads_through_torchvision(tmp_path):
    pytest.importorskip("torchvision")
    write_cifar_fixture(tmp_path)
    tr, te = data.load("cifar10", "train", tmp_path), data.load("cifar10", "test", tmp_path)
    assert (len(tr), len(te)) == (100, 20)
    assert tr.images.shape[1:] == (3, 32, 32) and tr.images.dtype == torch.uint8
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"))["data"][0]
    assert torch.equal(te.images[0], torch.from_numpy(raw.reshape(3, 32, 32)))


def test_cifar_missing_offline_says_download(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError, match="--download"):
        data.load("cifar10", "train", tmp_path)


def _crop_flip_by_hand(img, dx, dy, flip, pad=4):
    """The oracle: pad with zeros, slice the window at (row dy, column dx), mirror it if asked."""
    padded = torch.zeros(img.shape[0], img.shape[1] + 2 * pad, img.shape[2] + 2 * pad)
    padded[:, pad:pad + img.shape[1], pad:pad + img.shape[2]] = img
    window = padded[:, dy:dy + img.shape[1], dx:dx + img.shape[2]]
    return window.flip(2) if flip else window


def test_crop_flip_is_the_padded_shifted_flipped_slice():
    x = torch.rand(6, 3, 32, 32)
    dx, dy = torch.tensor([0, 8, 3, 4, 8, 0]), torch.tensor([0, 8, 5, 4, 0, 8])
    flip = torch.tensor([False, True, True, False, False, True])
    out = data.crop_flip(x, dx, dy, flip)
    for i in range(len(x)):
        assert torch.equal(out[i], _crop_flip_by_hand(x[i], int(dx[i]), int(dy[i]), bool(flip[i]))), i
    assert torch.equal(data.crop_flip(x, torch.full((6,), 4), torch.full((6,), 4), torch.zeros(6, dtype=torch.bool)),
                       x), "the centred, unflipped window is the image itself"


def test_augmentation_draws_offsets_and_flips_from_its_generator():
    x = torch.rand(64, 3, 32, 32)
    a = data.augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)   # the same draws, in the documented order: dx, dy, flip
    dx, dy = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    for i in range(len(x)):
        assert torch.equal(a[i], _crop_flip_by_hand(x[i], int(dx[i]), int(dy[i]), bool(flip[i]))), i
    assert 10 < int(flip.sum()) < 54 and len(set(dx.tolist())) == 9, "offsets and flips vary"


def test_cifar_model_trains_on_the_fixture(tmp_path):
    pytest.importorskip("torchvision")
    write_cifar_fixture(tmp_path)
    cfg = gl.TrainConfig(dataset="cifar10", model="resnet18", method="proposed", epochs=1, batch_size=16,
                         limit=32, val_size=20, probe_size=8, select_size=8, log_every=2, probe_pgd_steps=1,
                         precision="fp32")
    res = gl.train(cfg, data_dir=tmp_path, progress=False)
    assert res.metrics["epochs_done"] == 1

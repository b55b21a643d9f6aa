import pytest
import torch

from gmreg_lab import models


@pytest.mark.parametrize("dataset, name", [(d, n) for d, reg in models.REGISTRY.items() for n in reg])
def test_models_take_pixels_and_give_ten_logits(dataset, name):
    m = models.build(name, dataset).eval()
    shape = (2, 1, 28, 28) if dataset == "mnist" else (2, 3, 32, 32)
    out = m(torch.rand(shape))
    assert out.shape == (2, 10)
    assert isinstance(m.normalize, torch.nn.Identity)             # raw [0, 1] pixels by default, as the paper
    assert isinstance(models.build(name, dataset, normalize=True).normalize, models.Normalize)


def test_lenet_plus_matches_table_1():
    net = models.build("lenet_plus").net
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert [f.out_features for f in fcs] == [1024, 10]


def test_resnet34_depth():
    m = models.build("resnet34", "cifar10")
    assert sum(isinstance(b, models.BasicBlock) for b in m.modules()) == 16


def test_normalisation_when_asked_is_inside_the_model():
    m = models.build("lenet_plus", normalize=True)
    x = torch.full((1, 1, 28, 28), 0.1307)
    assert torch.allclose(m.normalize(x), torch.zeros_like(x), atol=1e-6)
    raw = models.build("lenet_plus")
    raw.net.load_state_dict(m.net.state_dict())
    assert torch.allclose(raw(m.normalize(x)), m(x), atol=1e-5)   # the same network, fed the normalised pixels


def test_unknown_model_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: lenet_plus, a, b, c, d"):
        models.build("lenet", "mnist")


def test_wong_cnn_is_their_small_mnist_network():
    """Wong, Rice & Kolter 2020's MNIST CNN: 4x4 stride-2 convolutions of 16 and 32 channels (28 -> 14 -> 7), a
    100-unit layer and 10 outputs, ReLUs in between; no batch norm or dropout."""
    net = models.build("wong_cnn").net
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == \
        [(1, 16, (4, 4), (2, 2), (1, 1)), (16, 32, (4, 4), (2, 2), (1, 1))]
    assert [(f.in_features, f.out_features) for f in net if isinstance(f, torch.nn.Linear)] == [(1568, 100), (100, 10)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net) == 3
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout, torch.nn.MaxPool2d)) for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == 272 + 8224 + 156_900 + 1010
    from gmreg_lab.config import TrainConfig
    assert TrainConfig(model="wong_cnn").model == "wong_cnn"       # selectable for MNIST through the config

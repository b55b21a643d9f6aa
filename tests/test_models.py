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

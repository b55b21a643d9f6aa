"""The loss landscape over a slice of the eps-ball, its figure and its widget; the snapshot scrubber."""

import math

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.landscape import loss_landscape


def _linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()


def test_on_a_linear_model_fgsm_finds_the_top_of_the_slice(small_batch):
    """For a linear model the loss rises along sign(grad) and FGSM's point is the highest of the ball's slice."""
    model = _linear()
    x, y = small_batch
    d = loss_landscape(model, x[:1], y[0], 0.1, 0.01, grid=11)
    loss = torch.tensor(d["loss"])
    assert loss.shape == (11, 11) and d["a"][0] == pytest.approx(-0.1) and d["a"][-1] == pytest.approx(0.1)
    assert (loss[5].diff() >= -1e-6).all(), "monotone along the gradient axis (b = 0)"
    assert d["fgsm_fraction"] == pytest.approx(1.0, abs=1e-4) and d["fgsm_shortfall"] == pytest.approx(0, abs=1e-4)
    assert d["points"]["x"] == (0.0, 0.0)
    a, b = d["points"]["fgsm"]
    assert 0 < a <= 0.1 + 1e-6 and abs(b) < 0.05, "FGSM lies on the gradient axis, at most eps out"
    diff = torch.tensor(d["logits"]["fgsm"]) - torch.tensor(d["logits"]["rfgsm"])
    assert d["logit_distance"] == pytest.approx(float(diff.norm()), rel=1e-5)
    assert set(d["points"]) == {"x", "fgsm", "noise", "rfgsm", "pgd"}


def test_every_grid_point_is_the_loss_at_that_point_across_chunks(small_batch):
    """The grid is evaluated in chunks of GRID_CHUNK images: each cell still holds the loss of x + a u + b v (projected
    into the ball and [0, 1]), recomputed here one point at a time (the oracle), in every chunk."""
    from gmreg_lab import landscape

    model = _linear()
    x, y = small_batch
    grid, eps = 13, 0.1
    assert grid * grid > landscape.GRID_CHUNK, "the test must span more than one chunk"
    d = loss_landscape(model, x[:1], y[0], eps, 0.01, grid=grid)
    xi = x[:1].clone().requires_grad_(True)
    u = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xi), y[:1]), xi)[0].sign()
    u = torch.where(u == 0, torch.ones_like(u), u)
    v = 2 * torch.randint(0, 2, x[:1].shape, generator=torch.Generator().manual_seed(0)) - 1
    for i, j in ((0, 0), (5, 7), (9, 12), (12, 3), (12, 12)):     # cells in the first and the second chunk
        a, b = d["a"][j], d["b"][i]
        p = torch.min(torch.max(x[:1] + a * u + b * v, x[:1] - eps), x[:1] + eps).clamp(0, 1)
        with torch.no_grad():
            want = float(torch.nn.functional.cross_entropy(model(p), y[:1]))
        assert d["loss"][i][j] == pytest.approx(want, rel=1e-5, abs=1e-6), (i, j)


def test_bad_arguments():
    model = _linear()
    with pytest.raises(ValueError, match="one image"):
        loss_landscape(model, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), 0.1, 0.01)
    with pytest.raises(ValueError, match="grid"):
        loss_landscape(model, torch.rand(1, 1, 28, 28), 0, 0.1, 0.01, grid=2)


def test_landscape_figure_and_explorer_redraw(small_batch, trained_lenet):
    pytest.importorskip("anywidget")
    from gmreg_lab import widgets

    x, y = small_batch
    ex = widgets.landscape_explorer({"trained": trained_lenet, "linear": _linear()}, x[:4], y[:4], eps=0.3,
                                    alpha=0.01, grid=9)
    fig = ex.fig
    assert len(fig.data) == 1 + len(gl.plots.LANDSCAPE_MARKS) + 2
    before = [list(r) for r in fig.data[0].z]
    ex.model.value = "linear"
    assert [list(r) for r in fig.data[0].z] != before and ex.seconds > 0
    assert fig.layout.title.text.startswith("linear:")
    ex.index.value = 2
    assert math.isclose(fig.data[-1].y[0], ex.data["logits"]["rfgsm"][0], rel_tol=1e-6)


def test_snapshot_scrubber_redraws_each_kept_iteration(tmp_path, small_batch):
    pytest.importorskip("anywidget")
    from gmreg_lab import widgets
    from conftest import tiny_cfg

    gl.train(tiny_cfg(method="fgsm", limit=96), tmp_path / "r", progress=False, snapshot_at=(1, 3))
    x, y = small_batch
    s = widgets.snapshot_scrubber(tmp_path / "r", x[:16], y[:16], attacks="fgsm,pgd:3", eps_list=(0.0, 0.3))
    assert list(s.iteration.options) == [1, 3]
    before = list(s.fig.data[0].y)
    s.iteration.value = 3
    assert list(s.fig.data[0].y) != before and "iteration 3" in s.fig.layout.title.text
    with pytest.raises(ValueError, match="no snapshots"):
        gl.train(tiny_cfg(), tmp_path / "plain", progress=False)
        widgets.snapshot_scrubber(tmp_path / "plain", x[:4], y[:4])

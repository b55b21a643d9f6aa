"""The loss landscape over a slice of the eps-ball, its figure and its widget; the snapshot scrubber."""

import math

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.landscape import loss_landscape


def _linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()


def _axes(model, x, y, eps, seed=0, pgd_steps=40):
    """The two axes as the docstring defines them, recomputed here (the oracle): FGSM's step u = (x_fgsm - x) / eps
    and v = the PGD perturbation minus its u-component, scaled to L-inf norm 1; and the PGD adversary."""
    x_f = gl.attacks.fgsm(model, x, y, eps)
    u = (x_f - x) / eps
    x_p = gl.attacks.pgd(model, x, y, eps, step=2.5 * eps / pgd_steps, steps=pgd_steps,
                         generator=torch.Generator().manual_seed(seed + 2))
    d = x_p - x
    v = d - (d * u).sum() / (u * u).sum() * u
    return u, v / v.abs().max(), x_f, x_p


def _ce(model, p, y):
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(p), y))


def test_on_a_linear_model_fgsm_finds_the_top_of_the_slice(small_batch):
    """For a linear model the loss rises along FGSM's axis, FGSM's point (a grid point) is the highest of the slice
    and reaches at least what the adversarial axis reaches at the same distance; PGD lies on the slice."""
    model = _linear()
    x, y = small_batch
    d = loss_landscape(model, x[:1], y[0], 0.1, 0.01, grid=11)
    loss = torch.tensor(d["loss"])
    assert loss.shape == (11, 11) and d["a"][5] == 0.0 and d["b"][5] == 0.0
    assert d["a"][0] == pytest.approx(-0.1) and d["a"][-1] == pytest.approx(0.1) and d["b"][-1] >= d["a"][-1]
    assert (loss[5].diff() >= -1e-6).all(), "monotone along the gradient axis (b = 0)"
    assert d["points"]["x"] == (0.0, 0.0) and d["points"]["fgsm"] == (d["a"][-1], 0.0)
    assert loss[5, -1].item() == pytest.approx(d["loss_at"]["fgsm"], rel=1e-5), "FGSM is the grid point (eps, 0)"
    assert d["loss_at"]["fgsm"] >= d["slice_max"] - 1e-3 and d["loss_at"]["fgsm"] >= d["loss_at"]["adversarial"]
    assert d["off_slice"]["pgd"] < 1e-5 and d["off_slice"]["x"] == d["off_slice"]["fgsm"] == 0
    diff = torch.tensor(d["logits"]["fgsm"]) - torch.tensor(d["logits"]["rfgsm"])
    assert d["logit_distance"] == pytest.approx(float(diff.norm()), rel=1e-5)
    assert set(d["points"]) == {"x", "fgsm", "noise", "rfgsm", "pgd"} and d["axes"]["gradient"] == "sign(grad)"


def test_the_pgd_adversary_lies_on_the_slice_and_fgsm_on_the_grid_even_when_clipped(small_batch):
    """MNIST pixels sit at 0: FGSM's step is clipped there, yet its point is exactly the grid point (eps, 0) (the
    old picture put it at a = 0.16 of 0.3), and PGD's adversary is exactly x + a_p u + b_p v."""
    model = _linear()
    x, y = small_batch
    xi, yi, eps = x[1:2], y[1:2], 0.3
    d = loss_landscape(model, xi, yi[0], eps, 0.01, grid=9)
    u, v, x_f, x_p = _axes(model, xi, yi, eps)
    assert torch.allclose(xi + eps * u, x_f, atol=1e-6) and (u.abs() < 1).any(), "a clipped FGSM step"
    assert torch.tensor(d["loss"])[4, -1].item() == pytest.approx(_ce(model, x_f, yi), rel=1e-5)
    a, b = d["points"]["pgd"]
    assert (xi + a * u + b * v - x_p).abs().max() < 1e-5
    assert d["loss_at"]["pgd"] == pytest.approx(_ce(model, x_p, yi), rel=1e-5)
    adv = torch.min(torch.max(xi + eps * v, xi - eps), xi + eps).clamp(0, 1)
    assert d["loss_at"]["adversarial"] == pytest.approx(_ce(model, adv, yi), rel=1e-5)


def test_every_grid_point_is_the_loss_at_that_point_across_chunks(small_batch):
    """The grid is evaluated in chunks of GRID_CHUNK images: each cell still holds the loss of x + a u + b v (projected
    into the ball and [0, 1]), recomputed here one point at a time (the oracle), in every chunk; the margin's sign
    says whether the model is right there (the decision boundary is its 0 contour)."""
    from gmreg_lab import landscape

    model = _linear()
    x, y = small_batch
    grid, eps = 13, 0.1
    assert grid * grid > landscape.GRID_CHUNK, "the test must span more than one chunk"
    d = loss_landscape(model, x[:1], y[0], eps, 0.01, grid=grid)
    u, v, _, _ = _axes(model, x[:1], y[:1], eps)
    for i, j in ((0, 0), (5, 7), (9, 12), (12, 3), (12, 12)):     # cells in the first and the second chunk
        a, b = d["a"][j], d["b"][i]
        p = torch.min(torch.max(x[:1] + a * u + b * v, x[:1] - eps), x[:1] + eps).clamp(0, 1)
        assert d["loss"][i][j] == pytest.approx(_ce(model, p, y[:1]), rel=1e-5, abs=1e-6), (i, j)
        with torch.no_grad():
            right = bool(model(p).argmax(1) == y[:1])
        assert (d["margin"][i][j] > 0) == right, (i, j)


class _Flat(torch.nn.Module):
    """Flat within r of the clean image, the linear model beyond: the gradient at x is zero, PGD's random start
    escapes the plateau. The fold of gradient masking in its barest form (logits x 10: a confident model)."""

    def __init__(self, net, x0, r):
        super().__init__()
        self.net, self.x0, self.r = net, x0, r

    def forward(self, x):
        d = x - self.x0
        return 10 * self.net(self.x0 + d.sign() * torch.relu(d.abs() - self.r))


def test_a_fold_shows_on_the_adversarial_axis(small_batch):
    """Zero gradient at x: FGSM stays at x (a random direction is drawn for the first axis, and said so); along
    PGD's direction, at the same distance eps, the loss is far higher: the headline numbers show the fold."""
    x, _ = small_batch
    lin = _linear()
    model = _Flat(lin, x[:1], 0.05).eval()
    with torch.no_grad():
        label = model(x[:1]).argmax(1)[0]            # a correctly classified image
    d = loss_landscape(model, x[:1], label, 0.3, 0.01, grid=9)
    assert d["axes"]["gradient"].startswith("random") and d["points"]["fgsm"] == (0.0, 0.0)
    assert d["loss_at"]["fgsm"] == pytest.approx(d["loss_at"]["x"])
    assert d["loss_at"]["adversarial"] > 5 * d["loss_at"]["fgsm"] and d["loss_at"]["pgd"] > 5 * d["loss_at"]["fgsm"]
    assert d["logit_distance"] < 1e-4, "the logit distance sees nothing: x and x' are both on the plateau"


def test_when_pgd_only_repeats_fgsm_a_random_orthogonal_axis_is_drawn():
    """A 2-class linear model in the middle of [0, 1]: PGD lands exactly on FGSM's corner, so PGD offers no second
    direction; a random one orthogonal to the gradient axis is drawn instead (and said so), PGD sits at (eps, 0)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    x = torch.full((1, 1, 4, 4), 0.5)
    d = loss_landscape(model, x, 0, 0.1, 0.01, grid=5)
    assert d["axes"] == {"gradient": "sign(grad)", "adversarial": "random"}
    assert d["points"]["pgd"] == pytest.approx((0.1, 0.0), abs=1e-6) and d["off_slice"]["pgd"] < 1e-6
    assert d["loss_at"]["pgd"] == pytest.approx(d["loss_at"]["fgsm"], rel=1e-6)


def test_bad_arguments():
    model = _linear()
    with pytest.raises(ValueError, match="one image"):
        loss_landscape(model, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), 0.1, 0.01)
    for bad in (2, 10):
        with pytest.raises(ValueError, match="odd integer"):
            loss_landscape(model, torch.rand(1, 1, 28, 28), 0, 0.1, 0.01, grid=bad)


def test_comparison_panels_share_one_log_colour_scale(small_batch):
    """Both panels of a comparison (and every single figure) on the same fixed log colour scale: a contrast between
    two models is never an artefact of rescaling each panel to its own range."""
    x, y = small_batch
    lin = _linear()
    flat = _Flat(lin, x[:1], 0.05).eval()
    quiet, loud = (loss_landscape(m, x[:1], y[0], 0.3, 0.01, grid=5) for m in (lin, flat))
    lo, hi = gl.plots.LANDSCAPE_LOSS_RANGE
    fig = gl.plots.landscape_comparison({"linear": quiet, "flat": loud})
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2 and all(t.coloraxis == "coloraxis" for t in heat)
    assert fig.layout.coloraxis.cmin == pytest.approx(math.log10(lo)) and fig.layout.coloraxis.cmax == pytest.approx(
        math.log10(hi))
    assert len([t for t in fig.data if t.type == "contour"]) == 2, "a decision boundary per panel"
    single = [gl.plots.landscape_figure(d).data[0] for d in (quiet, loud)]
    assert {(t.zmin, t.zmax) for t in single} == {(math.log10(lo), math.log10(hi))}
    assert single[0].z[0][0] == pytest.approx(math.log10(min(max(quiet["loss"][0][0], lo), hi)))
    f = gl.plots.landscape_figure(loud)
    stars = [t for t in f.data if t.type == "scatter" and t.name == gl.plots.LANDSCAPE_MARKS["pgd"][0]]
    assert (stars[0].x[0], stars[0].y[0]) == tuple(loud["points"]["pgd"]), "markers at their slice coordinates"
    assert f"{loud['loss_at']['adversarial']:.3g}" in f.layout.title.text and "FGSM" in f.layout.title.text


def test_landscape_figure_and_explorer_redraw(small_batch, trained_lenet):
    pytest.importorskip("anywidget")
    from gmreg_lab.views import widgets

    x, y = small_batch
    ex = widgets.landscape_explorer({"trained": trained_lenet, "linear": _linear()}, x[:4], y[:4], eps=0.3,
                                    alpha=0.01, grid=9)
    fig = ex.fig
    assert len(fig.data) == 2 + len(gl.plots.LANDSCAPE_MARKS) + 2     # heat map, boundary, marks, logit bars
    before = [list(r) for r in fig.data[0].z]
    ex.model.value = "linear"
    assert [list(r) for r in fig.data[0].z] != before and ex.seconds > 0
    assert fig.layout.title.text.startswith("linear:")
    ex.index.value = 2
    assert math.isclose(fig.data[-1].y[0], ex.data["logits"]["rfgsm"][0], rel_tol=1e-6)


def test_snapshot_scrubber_redraws_each_kept_iteration(tmp_path, small_batch):
    pytest.importorskip("anywidget")
    from gmreg_lab.views import widgets
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

"""The single-step methods after the paper (FGSM-RS, N-FGSM, GradAlign), each against an oracle computed by hand on
a linear model: for logits z = W x + b the summed cross-entropy has input gradient (softmax(z) - onehot(y)) W."""

import math

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab import attacks
from gmreg_lab.losses import gradient_misalignment
from conftest import tiny_cfg

D, C, N = 12, 4, 16      # pixels, classes, examples


def _linear(dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, C)).to(dtype)
    x = torch.rand(N, 1, 3, 4, dtype=dtype)
    x[:, 0, 0, :2] = torch.tensor([0.0, 1.0], dtype=dtype)   # pixels at the edges of [0, 1]: clipping matters
    return model, x, torch.arange(N) % C


def _grad_by_hand(model, x, y):
    W, b = model[1].weight, model[1].bias
    p = torch.softmax(x.flatten(1) @ W.T + b, 1)
    return ((p - torch.nn.functional.one_hot(y, C).to(x.dtype)) @ W).view_as(x)


def _uniform_by_hand(shape, scale, seed):
    return scale * (2 * torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 1)


def test_fgsm_rs_by_hand():
    model, x, y = _linear()
    eps, step = 0.2, 0.25
    got = attacks.fgsm_rs(model, x, y, eps, step, generator=torch.Generator().manual_seed(3))
    x1 = (x + _uniform_by_hand(x.shape, eps, 3)).clamp(0, 1)
    want = (x1 + step * _grad_by_hand(model, x1, y).sign())
    want = torch.min(torch.max(want, x - eps), x + eps).clamp(0, 1)      # projection: the ball, then [0, 1]
    assert torch.allclose(got, want, atol=1e-6)
    d = (got - x).abs()
    assert d.max() <= eps + 1e-6 and (d > eps - 1e-6).any(), "1.25-eps steps end on the ball's faces"
    assert got.min() >= 0 and got.max() <= 1
    assert torch.allclose(attacks.fgsm_rs(model, x, y, eps, generator=torch.Generator().manual_seed(3)),
                          torch.min(torch.max(x1 + 1.25 * eps * _grad_by_hand(model, x1, y).sign(), x - eps),
                                    x + eps).clamp(0, 1), atol=1e-6), "default step: 1.25 eps"


def test_nfgsm_by_hand_has_no_projection():
    model, x, y = _linear()
    eps = 0.1
    got = attacks.nfgsm(model, x, y, eps, k=2.0, generator=torch.Generator().manual_seed(5))
    x1 = (x + _uniform_by_hand(x.shape, 2 * eps, 5)).clamp(0, 1)
    want = (x1 + eps * _grad_by_hand(model, x1, y).sign()).clamp(0, 1)
    assert torch.allclose(got, want, atol=1e-6)
    d = (got - x).abs()
    assert d.max() > eps + 1e-3 and d.max() <= 3 * eps + 1e-6, "noise 2 eps + step eps, not projected on the ball"
    assert got.min() >= 0 and got.max() <= 1


def test_gradient_misalignment_by_hand():
    g1 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    g2 = torch.tensor([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [-3.0, -4.0]])
    # cosines 0, 1, (undefined: zero gradient, left out), -1 -> mean of (1 - cos) over 3 examples = (1 + 0 + 2) / 3
    assert gradient_misalignment(g1, g2).item() == pytest.approx(1.0)
    assert gradient_misalignment(torch.zeros(2, 3), torch.ones(2, 3)).item() == 0.0


def test_gradalign_step_by_hand_and_its_double_backward():
    """The step's loss is CE(FGSM adversary) + lambda (1 - mean cos(grad at x, grad at x + eta)), the first
    gradient held constant; the regulariser's gradient with respect to the weights (double back-propagation
    through the second input gradient) matches central finite differences (float32, as the steps compute: steps
    of 1e-3, tolerance to match)."""
    model, x, y = _linear()
    model[1].weight.data *= 10           # sharper logits: the gradient direction moves within the ball
    cfg = tiny_cfg(method="gradalign", eps=0.3, align_lam=0.7, precision="fp32")
    ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(11))
    loss, parts = gl.training.STEPS["gradalign"](ctx, x, y)
    g1 = _grad_by_hand(model, x, y).detach()
    x_adv = (x + cfg.eps * g1.sign()).clamp(0, 1)
    ce = torch.nn.functional.cross_entropy(model(x_adv), y)
    x_eta = x + _uniform_by_hand(x.shape, cfg.eps, 11)
    g2 = _grad_by_hand(model, x_eta, y)
    cos = [torch.dot(a.flatten(), b.flatten()) / (a.norm() * b.norm()) for a, b in zip(g1, g2)]
    reg = 1 - sum(cos) / len(cos)
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert parts["reg"].item() == pytest.approx(reg.item(), rel=1e-4) and reg.item() > 0.01
    assert loss.item() == pytest.approx(ce.item() + 0.7 * reg.item(), rel=1e-5)
    weight = model[1].weight
    (auto,) = torch.autograd.grad(parts["reg"], weight)
    (by_hand,) = torch.autograd.grad(reg, weight)      # the same function, through the closed-form gradient
    assert torch.allclose(auto, by_hand, rtol=1e-3, atol=1e-6)
    w0 = weight.detach().clone()

    def reg_at(w):
        weight.data.copy_(w)
        return gradient_misalignment(g1, attacks.input_grad(model, x_eta, y, create_graph=True)).item()
    h, fd = 1e-3, torch.zeros_like(w0)
    for i in range(C):
        for j in range(D):
            e = torch.zeros_like(w0)
            e[i, j] = h
            fd[i, j] = (reg_at(w0 + e) - reg_at(w0 - e)) / (2 * h)
    assert auto.abs().max() > 1e-3, "the regulariser's gradient reaches the weights"
    assert torch.allclose(auto, fd, rtol=2e-2, atol=2e-4), (auto, fd)


def test_gradalign_step_runs_in_fp32_under_bf16_autocast():
    """The training loop wraps every step in bf16 autocast by default; GradAlign's cosine of input gradients and its
    double backward are too coarse in bf16 to train on (README), so its step opts out: the same loss and weight
    gradient with and without the loop's autocast, while a bf16 forward of the same model differs."""
    model, x, y = _linear()
    model[1].weight.data *= 10
    cfg = tiny_cfg(method="gradalign", eps=0.3, align_lam=0.7, precision="bf16")
    runs = []
    for precision in ("fp32", "bf16"):
        ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(11))
        with gl.runtime.autocast(torch.device("cpu"), precision):
            loss, _ = gl.training.STEPS["gradalign"](ctx, x, y)
        runs.append((loss.detach(), torch.autograd.grad(loss, model[1].weight)[0]))
    (l32, g32), (l16, g16) = runs
    assert l16.dtype == torch.float32 and torch.allclose(l16, l32, rtol=1e-6) and torch.allclose(g16, g32, rtol=1e-5)
    with gl.runtime.autocast(torch.device("cpu"), "bf16"):
        assert model(x).dtype == torch.bfloat16          # the autocast was on: the opt-out is the step's


@pytest.mark.parametrize("method", ["fgsm_rs", "nfgsm", "gradalign"])
def test_new_methods_through_the_cli(method, tmp_path):
    from gmreg_lab.cli import main

    out = tmp_path / method
    assert main(["train", "--method", method, "--out", str(out), "--limit", "64", "--val-size", "200",
                 "--epochs", "1", "--log-every", "1", "--precision", "fp32", "--no-progress"]) == 0
    cfg = gl.TrainConfig.from_dict(gl.runs.read_json(out / "config.json"))
    assert cfg.method == method and math.isfinite(gl.runs.read_json(out / "metrics.json")["seconds_per_epoch"])


def test_new_methods_have_recipes_and_validated_settings():
    for name in ("fgsm_rs", "nfgsm", "gradalign"):
        assert gl.lab.recipe(name, smoke=True).method == name
    assert gl.TrainConfig(method="gradalign").align_lam == 1.0
    assert gl.TrainConfig(dataset="cifar10", method="gradalign").align_lam == 0.2
    for bad in (dict(rs_step=0), dict(nfgsm_k=-1), dict(align_lam=float("nan"))):
        with pytest.raises(ValueError):
            gl.TrainConfig(**bad)

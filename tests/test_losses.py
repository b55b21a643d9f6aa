import math

import torch

import gmreg_lab as gl
from gmreg_lab.losses import logit_dist, proposed_loss
from conftest import tiny_cfg


def test_eq8_by_hand():
    lf = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    lr = torch.tensor([[1.0, 0.0, -1.0], [0.5, -0.5, 1.0]])
    y = torch.tensor([0, 2])
    # CE by hand: -log softmax at the true class, averaged over the batch
    ce0 = -(2.0 - math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)))
    ce1 = -(0.0 - math.log(math.exp(0.5) + math.exp(1.5) + math.exp(0.0)))
    ce = (ce0 + ce1) / 2
    # squared L2 distances: row 0: 1^2 = 1; row 1: 0 + 2^2 + 1^2 = 5; mean 3
    reg = (1.0 + 5.0) / 2
    loss, ce_t, reg_t = proposed_loss(lf, lr, y, lam=5.0)
    assert math.isclose(ce_t.item(), ce, rel_tol=1e-6)
    assert math.isclose(reg_t.item(), reg, rel_tol=1e-6)
    assert math.isclose(loss.item(), ce + 5.0 * reg, rel_tol=1e-6)
    assert math.isclose(logit_dist(lf, lr).item(), (1.0 + math.sqrt(5.0)) / 2, rel_tol=1e-6)


def test_lambda_zero_is_plain_ce():
    lf, lr = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([1, 2, 3, 4])
    loss, ce, _ = proposed_loss(lf, lr, y, lam=0.0)
    assert torch.equal(loss, ce)


def test_proposed_step_halves_come_from_the_same_clean_samples(small_batch):
    """The training forward pass sees [x_fgsm, x_rfgsm] and row i of each half is an adversary of clean row i."""
    x, y = small_batch
    x, y = x[:16], y[:16]
    cfg = tiny_cfg(method="proposed")
    model = gl.models.build("lenet_plus")
    seen = []
    model.register_forward_pre_hook(lambda mod, inp: seen.append((mod.training, inp[0].detach().clone())))
    ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(0))
    loss, parts = gl.training.STEPS["proposed"](ctx, x, y)
    train_inputs = [inp for training, inp in seen if training]
    assert len(train_inputs) == 1, "one training forward pass over B* = [B1, B2]"
    batch = train_inputs[0]
    assert batch.shape[0] == 2 * len(y)
    x_f, x_r = batch[:16], batch[16:]
    per_row = lambda a: (a - x).flatten(1).abs().max(1).values  # noqa: E731
    assert (per_row(x_f) <= cfg.eps + 1e-6).all() and (per_row(x_r) <= cfg.eps + 1e-6).all()
    # MNIST digits differ by far more than 2*eps somewhere, so a shuffled half would fail the check above;
    # make sure the check has teeth:
    assert (per_row(x_f.roll(1, 0)) > cfg.eps + 1e-6).any()
    assert not torch.equal(x_f, x_r)
    assert torch.isclose(loss, parts["ce"] + cfg.lam * parts["reg"])

"""APGD-CE / APGD-T: checked against the exact robust accuracy of a linear model (a closed form) and against
torchattacks' implementation."""

import pytest
import torch

from gmreg_lab import attacks
from gmreg_lab.evaluate import attack_stats, parse_attack

EPS = 0.3


def test_checkpoints_follow_the_papers_schedule():
    w = attacks.apgd_checkpoints(100)
    assert w == sorted(set(w)) and w[0] == 22 and w[-1] <= 100
    gaps = [b - a for a, b in zip([0] + w, w)]
    assert gaps[:3] == [22, 19, 16] and min(gaps) == 6   # shrinking by 0.03 per checkpoint, at least 0.06
    assert attacks.apgd_checkpoints(10)[-1] <= 10


def test_dlr_loss_by_hand_and_its_invariance():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    y = torch.tensor([0])
    assert attacks.dlr_loss(z, y).item() == pytest.approx(-(3 - 2) / (3 - 1))
    assert attacks.dlr_loss(z, y, torch.tensor([3])).item() == pytest.approx(-(3 - 0) / (3 - 0.5 * (1 + 0)))
    zz = torch.randn(8, 10)
    yy = torch.randint(0, 10, (8,))
    assert torch.allclose(attacks.dlr_loss(zz, yy), attacks.dlr_loss(50 * zz + 7, yy), atol=1e-5)


class Linear(torch.nn.Module):
    """z = scale * (W x + b): the robust accuracy in an L-inf ball has a closed form (box constraint not binding)."""

    def __init__(self, scale=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(10, 1, 6, 6, generator=g).flatten(1) / 6)
        self.b = torch.nn.Parameter(torch.zeros(10))
        self.scale = scale

    def forward(self, x):
        return self.scale * (x.flatten(1) @ self.W.T + self.b)


def _linear_case(n=200, eps=0.065):
    g = torch.Generator().manual_seed(1)
    x = 0.4 + 0.2 * torch.rand(n, 1, 6, 6, generator=g)   # [0.4, 0.6]: the eps-ball stays inside [0, 1]
    lin = Linear()
    with torch.no_grad():
        y = lin(x).argmax(1)          # every example starts correct; the margin decides robustness
        z = lin(x)
        w = lin.W
        worst = torch.stack([z[:, t] - z.gather(1, y[:, None])[:, 0] + eps * (w[t] - w[y]).abs().sum(1)
                             for t in range(10)], 1)
        worst.scatter_(1, y[:, None], float("-inf"))
        exact = (worst.amax(1) < 0).float().mean().item() * 100   # no class can overtake y anywhere in the ball
    return x, y, eps, exact


def _acc(model, xa, y):
    with torch.no_grad():
        return (model(xa).argmax(1) == y).float().mean().item() * 100


def test_apgd_t_reaches_the_exact_robust_accuracy_of_a_linear_model():
    x, y, eps, exact = _linear_case()
    assert 10 < exact < 90   # a case where both robust and non-robust examples exist
    model = Linear()
    xa = attacks.apgd_t(model, x, y, eps, steps=50, targets=9, generator=torch.Generator().manual_seed(0))
    assert (xa - x).abs().max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert _acc(model, xa, y) == pytest.approx(exact, abs=0.01)   # attacks cannot go below it; APGD-T reaches it
    assert _acc(model, attacks.apgd(model, x, y, eps, steps=50), y) >= exact - 0.01


def test_dlr_sees_through_a_saturated_softmax_where_ce_gradients_vanish():
    """Logits x 1e6: the softmax is exactly one-hot in fp32, so every CE gradient is zero and PGD stands still
    (gradient masking); the scale-invariant DLR loss of APGD-T still finds every adversarial example."""
    x, y, eps, exact = _linear_case()
    masked = Linear(scale=1e6)
    assert attacks.input_grad(masked, x, y).abs().max() == 0
    pgd_acc = _acc(masked, attacks.pgd(masked, x, y, eps, step=eps / 4, steps=20), y)
    assert pgd_acc > exact + 20
    assert attack_stats(masked, parse_attack("apgd:50"), x, y, eps)["acc"] == pytest.approx(exact, abs=0.01)


def test_evaluation_specs():
    assert parse_attack("apgd-ce:100").label == "apgd-ce-100"
    assert parse_attack("apgd-t:100:3").label == "apgd-t-100x3"
    assert parse_attack("apgd:50").label == "apgd-50"
    for bad in ("apgd", "apgd-ce:100:3", "apgd-t:ten"):
        with pytest.raises(ValueError, match="cannot parse"):
            parse_attack(bad)
    for bad in ("apgd-t:10:0", "apgd:10:11", "apgd-ce:0"):
        with pytest.raises(ValueError, match=r"out of range .*targets in \[1, 9\]"):
            parse_attack(bad)


@pytest.mark.parametrize("call", [
    lambda m, x, y: attacks.apgd(m, x, y, 0.3, steps=0),
    lambda m, x, y: attacks.apgd(m, x, y, 0.3, steps=10, loss="hinge"),
    lambda m, x, y: attacks.apgd(m, x, y, 0.3, steps=10, loss="dlr-t"),
    lambda m, x, y: attacks.apgd_t(m, x, y, 0.3, steps=10, targets=10),
    lambda m, x, y: attacks.apgd(m, x, y, 1.5),
])
def test_bad_arguments(call, small_batch):
    with pytest.raises(ValueError):
        call(Linear(), *[t[:, :, :6, :6] if t.dim() == 4 else t for t in small_batch])


def test_against_torchattacks(trained_lenet, mnist_test):
    """Same algorithm, independent implementation: accuracies agree within a few points on a trained LeNet+ (25
    steps: both implementations place APGD's step-size checkpoints by the same fractions of the budget)."""
    STEPS = 25
    torchattacks = pytest.importorskip("torchattacks")
    x, y = mnist_test.tensors(200)
    gen = torch.Generator().manual_seed(0)
    ours_ce = _acc(trained_lenet, attacks.apgd(trained_lenet, x, y, 0.15, steps=STEPS, generator=gen), y)
    ours_t = _acc(trained_lenet, attacks.apgd_t(trained_lenet, x, y, 0.15, steps=STEPS, targets=3, generator=gen), y)
    theirs_ce = _acc(trained_lenet, torchattacks.APGD(trained_lenet, eps=0.15, steps=STEPS, seed=0)(x, y), y)
    ta_t = torchattacks.APGDT(trained_lenet, eps=0.15, steps=STEPS, n_classes=10, seed=0)
    ta_t.n_target_classes = 3
    theirs_t = _acc(trained_lenet, ta_t(x, y), y)
    clean = _acc(trained_lenet, x, y)
    assert theirs_ce < clean - 20   # the attack bites at this eps: a meaningful comparison
    assert abs(ours_ce - theirs_ce) <= 4 and abs(ours_t - theirs_t) <= 4


# --- models with 2 or 3 classes: what AutoAttack does there -------------------------------------------------------
def _few_classes(k, n=120, eps=0.1):
    """A k-class linear model and its exact robust accuracy at ``eps`` (the closed form of ``_linear_case``)."""
    g = torch.Generator().manual_seed(k)
    model = torch.nn.Linear(36, k).eval()
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, 36, generator=g) / 6)
        model.bias.zero_()
    net = torch.nn.Sequential(torch.nn.Flatten(), model).eval()
    x = 0.2 + 0.6 * torch.rand(n, 1, 6, 6, generator=g)      # the ball of eps <= 0.2 stays inside [0, 1]
    with torch.no_grad():
        z = net(x)
        y = z.argmax(1)
        w = model.weight
        worst = torch.stack([z[:, t] - z.gather(1, y[:, None])[:, 0] + eps * (w[t] - w[y]).abs().sum(1)
                             for t in range(k)], 1)
        worst.scatter_(1, y[:, None], float("-inf"))
        exact = (worst.amax(1) < 0).float().mean().item() * 100
    return net, x, y, eps, exact


def test_dlr_needs_3_classes_and_targeted_dlr_4_with_one_line_errors():
    z2, z3 = torch.randn(4, 2), torch.randn(4, 3)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="DLR loss needs at least 3 classes .*the model has 2"):
        attacks.dlr_loss(z2, y)
    with pytest.raises(ValueError, match="targeted DLR loss needs at least 4 classes .*the model has 3"):
        attacks.dlr_loss(z3, y, torch.ones(4, dtype=torch.long))
    assert attacks.dlr_loss(z3, y).shape == (4,)
    assert attacks.apgd_t_loss(10) == "dlr-t" and attacks.apgd_t_loss(4) == "dlr-t"
    assert attacks.apgd_t_loss(3) == "ce-t" and attacks.apgd_t_loss(2) == "ce-t"


@pytest.mark.parametrize("k", [2, 3])
def test_apgd_t_on_2_or_3_classes_uses_the_targeted_cross_entropy_and_still_reaches_the_exact_accuracy(k, caplog):
    """AutoAttack flags targeted DLR as impossible below 4 classes (check_n_classes) and has a 'ce-targeted' loss:
    APGD-T takes it there, and on a linear model still reaches the exact robust accuracy (within one example)."""
    net, x, y, eps, exact = _few_classes(k)
    assert 10 < exact < 90
    with caplog.at_level("INFO", logger="gmreg_lab.attacks"):
        xa = attacks.apgd_t(net, x, y, eps, steps=50, targets=k - 1, generator=torch.Generator().manual_seed(0))
    assert "targeted cross-entropy instead of targeted DLR" in caplog.text
    assert (xa - x).abs().max() <= eps + 1e-6
    one = 100 / len(y)   # the target's cross-entropy is not the margin itself: it may miss a borderline example
    assert exact - 0.01 <= _acc(net, xa, y) <= exact + one + 0.01
    assert exact - 0.01 <= attack_stats(net, parse_attack(f"apgd:50:{k - 1}"), x, y, eps)["acc"] <= exact + one + 0.01
    with pytest.raises(ValueError, match=rf"targets must be an integer in \[1, {k - 1}\] \(the model has {k}"):
        attacks.apgd_t(net, x, y, eps, steps=5, targets=9)
    if k == 2:
        with pytest.raises(ValueError, match="DLR loss needs at least 3 classes"):
            attacks.apgd(net, x, y, eps, steps=5, loss="dlr")


def test_targeted_losses_take_targets_and_only_they():
    net, x, y, eps, _ = _few_classes(3, n=8)
    with pytest.raises(ValueError, match="need target classes"):
        attacks.apgd(net, x, y, eps, steps=5, loss="ce-t")
    with pytest.raises(ValueError, match="need target classes"):
        attacks.apgd(net, x, y, eps, steps=5, loss="ce", target=(y + 1) % 3)
    xa = attacks.apgd(net, x, y, eps, steps=5, loss="ce-t", target=(y + 1) % 3)
    assert (xa - x).abs().max() <= eps + 1e-6

"""The gradient-free Square attack, the AutoAttack-style ensemble, and the standard AutoAttack headline."""

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab import attacks
from gmreg_lab.evaluate import ensemble, worst_case


class _Quantised(torch.nn.Module):
    """A model whose input gradient is zero everywhere (rounding the input to quarters): a textbook masked model."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


def test_square_matches_torchattacks(trained_lenet, mnist_test):
    ta = pytest.importorskip("torchattacks")
    x, y = mnist_test.tensors(200)
    ours = attacks.square(trained_lenet, x, y, 0.1, queries=200, generator=torch.Generator().manual_seed(0))
    theirs = ta.Square(trained_lenet, norm="Linf", eps=0.1, n_queries=200, n_restarts=1, seed=0)(x, y)
    acc = lambda xa: (trained_lenet(xa).argmax(1) == y).float().mean().item() * 100  # noqa: E731
    assert (ours - x).abs().max() <= 0.1 + 1e-6 and ours.min() >= 0 and ours.max() <= 1
    assert acc(ours) < acc(x) - 5, "the attack works"
    assert abs(acc(ours) - acc(theirs)) <= 4, (acc(ours), acc(theirs))


def test_square_sees_through_a_zero_gradient_that_stops_pgd(trained_lenet, mnist_test):
    x, y = mnist_test.tensors(100)
    masked = _Quantised(trained_lenet).eval()
    acc = lambda xa: (masked(xa).argmax(1) == y).float().mean().item() * 100  # noqa: E731
    assert attacks.input_grad(masked, x, y).abs().max() == 0, "the gradient really is hidden"
    pgd = acc(attacks.pgd(masked, x, y, 0.3, step=0.01, steps=40, random_start=False))
    sq = acc(attacks.square(masked, x, y, 0.3, queries=300, generator=torch.Generator().manual_seed(0)))
    assert pgd >= acc(x) - 1, "a gradient attack cannot move"
    assert sq < pgd - 30, (sq, pgd)


def test_ensemble_runs_each_attack_on_what_the_earlier_ones_left():
    """A toy classifier reads the class from pixel 0 and the example's id from pixel 1; attack A breaks ids 0-1,
    attack B ids 1-3: A is credited with 2, B with 2 (id 1 was gone), 6 of 10 stay robust."""
    class Reader(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot((x[:, 0] * 9).round().long(), 10).float()
    seen = []

    def breaker(ids):
        def attack(xb, yb):
            seen.append(xb[:, 1].tolist())
            out = xb.clone()
            hit = torch.isin((xb[:, 1] * 9).round().long(), torch.tensor(ids))
            out[hit, 0] = ((yb[hit] + 1) % 10) / 9
            return out
        return attack
    y = torch.arange(10) % 10
    x = torch.stack([y / 9, torch.arange(10) / 9], 1)
    r = ensemble(Reader(), x, y, {"A": breaker([0, 1]), "B": breaker([1, 2, 3])})
    assert r["clean"] == 100 and r["broke"] == {"A": 2, "B": 2} and r["robust"] == pytest.approx(60)
    assert r["robust_after"] == {"A": pytest.approx(80), "B": pytest.approx(60)}
    assert len(seen[1]) == 8, "B only saw the 8 survivors of A"
    seen.clear()
    e = ensemble(Reader(), x, y, {"A": breaker([0, 1]), "B": breaker([1, 2, 3])}, every=True)
    assert [len(s) for s in seen] == [10, 10], "every=True: each attack on every example"
    assert e["acc"] == {"A": pytest.approx(80), "B": pytest.approx(70)} and e["broke"] == {"A": 2, "B": 2}
    assert e["robust"] == pytest.approx(60)


def test_worst_case_is_never_above_any_single_attack(trained_lenet, mnist_test):
    x, y = mnist_test.tensors(64)
    w = worst_case(trained_lenet, x, y, "fgsm,pgd:10,apgd-ce:10", 0.1)
    single = gl.evaluate.evaluate(trained_lenet, x, y, "fgsm,pgd:10,apgd-ce:10", 0.1)
    assert w["robust"] <= min(v["acc"] for v in single.values()) + 1e-9
    assert sum(w["broke"].values()) == round((w["clean"] - w["robust"]) * 64 / 100)


def test_autoattack_headline_runs_both_implementations(trained_lenet, mnist_test):
    pytest.importorskip("torchattacks")
    from gmreg_lab import autoattack

    x, y = mnist_test.tensors(48)
    h = autoattack.headline(trained_lenet, x, y, 0.1, steps=10, queries=100)
    for side in ("ours", "torchattacks"):
        r = h[side]
        assert list(r["broke"])[:2] == ["apgd-ce", "apgd-t"] and "square" in list(r["broke"])[-1]
        assert 0 <= r["robust"] <= r["clean"] <= 100
    assert h["robust"] == min(h["ours"]["robust"], h["torchattacks"]["robust"])
    assert abs(h["gap_points"]) <= 10

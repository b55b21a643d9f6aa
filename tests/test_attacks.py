import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gmreg_lab import attacks

EPS = 0.3
ALL = {
    "fgsm": lambda m, x, y, g: attacks.fgsm(m, x, y, EPS),
    "rfgsm": lambda m, x, y, g: attacks.rfgsm(m, x, y, EPS, alpha=0.05, generator=g),
    "ifgsm": lambda m, x, y, g: attacks.ifgsm(m, x, y, EPS, steps=5),
    "pgd": lambda m, x, y, g: attacks.pgd(m, x, y, EPS, step=0.05, steps=5, generator=g),
    "pgd-restarts": lambda m, x, y, g: attacks.pgd(m, x, y, EPS, step=0.05, steps=3, restarts=2, generator=g),
}


@pytest.mark.parametrize("name", ALL)
def test_attack_stays_in_ball_and_range(name, trained_lenet, small_batch):
    x, y = small_batch
    x_adv = ALL[name](trained_lenet, x, y, torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


@pytest.mark.parametrize("name", ALL)
def test_attack_leaves_params_and_mode_alone(name, small_batch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout(0.5))
    model.train()
    x, y = small_batch
    ALL[name](model, x, y, torch.Generator().manual_seed(0))
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_matches_closed_form_on_linear_model(small_batch):
    torch.manual_seed(0)
    lin = nn.Linear(784, 10)
    model = nn.Sequential(nn.Flatten(), lin)
    x, y = small_batch
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        # d CE / d x = W^T (softmax - onehot): the textbook closed form
        g = (p - F.one_hot(y, 10).float()) @ lin.weight
        expected = (x + EPS * g.sign().view_as(x)).clamp(0, 1)
    assert torch.equal(attacks.fgsm(model, x, y, EPS), expected)


def test_rfgsm_follows_eq_2_and_3_on_linear_model(small_batch):
    torch.manual_seed(1)
    lin = nn.Linear(784, 10)
    model = nn.Sequential(nn.Flatten(), lin)
    x, y = small_batch
    alpha = 0.05
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).sign()
    x1 = (x + alpha * noise).clamp(0, 1)
    with torch.no_grad():
        g = (torch.softmax(model(x1), 1) - F.one_hot(y, 10).float()) @ lin.weight
        expected = (x1 + (EPS - alpha) * g.sign().view_as(x)).clamp(0, 1)
    got = attacks.rfgsm(model, x, y, EPS, alpha=alpha, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, expected)


def test_fused_pair_equals_separate_attacks(trained_lenet, small_batch):
    x, y = small_batch
    x_f, x_r = attacks.fgsm_rfgsm(trained_lenet, x, y, EPS, alpha=0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x_f, attacks.fgsm(trained_lenet, x, y, EPS))
    assert torch.equal(x_r, attacks.rfgsm(trained_lenet, x, y, EPS, alpha=0.01,
                                          generator=torch.Generator().manual_seed(5)))


def test_fused_pair_returns_the_noise_it_drew(small_batch):
    """``return_steps``: the same adversaries, and what they were made of, so that nobody draws the noise again
    (the loss landscape marks x' from it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x, y = small_batch
    x, y = x[:8], y[:8]
    x_f, x_r = attacks.fgsm_rfgsm(model, x, y, EPS, alpha=0.05, generator=torch.Generator().manual_seed(5))
    x_f2, x_r2, made = attacks.fgsm_rfgsm(model, x, y, EPS, alpha=0.05, generator=torch.Generator().manual_seed(5),
                                          return_steps=True)
    assert torch.equal(x_f, x_f2) and torch.equal(x_r, x_r2)
    assert set(made) == {"grad_sign", "noise", "x_noise", "grad_sign_noise"}
    assert set(made["noise"].unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(made["x_noise"], (x + 0.05 * made["noise"]).clamp(0, 1))
    assert torch.equal(x_f, (x + EPS * made["grad_sign"]).clamp(0, 1))
    assert torch.equal(x_r, (made["x_noise"] + (EPS - 0.05) * made["grad_sign_noise"]).clamp(0, 1))
    assert torch.equal(made["grad_sign"], attacks.input_grad(model, x, y).sign())


def _loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_iterative_attacks_raise_loss_at_least_as_much_as_fgsm(trained_lenet, small_batch):
    x, y = small_batch
    g = torch.Generator().manual_seed(0)
    l_clean = _loss(trained_lenet, x, y)
    l_fgsm = _loss(trained_lenet, attacks.fgsm(trained_lenet, x, y, EPS), y)
    l_pgd = _loss(trained_lenet, attacks.pgd(trained_lenet, x, y, EPS, step=0.01, steps=40, generator=g), y)
    l_ifgsm = _loss(trained_lenet, attacks.ifgsm(trained_lenet, x, y, EPS, steps=40), y)
    assert l_clean < l_fgsm <= l_pgd
    assert l_fgsm <= l_ifgsm


def test_restarts_never_weaken_pgd(trained_lenet, small_batch):
    x, y = small_batch
    x, y = x[:32], y[:32]

    def acc(xa):
        with torch.no_grad():
            return (trained_lenet(xa).argmax(1) == y).float().mean().item()

    one = acc(attacks.pgd(trained_lenet, x, y, 0.15, step=0.02, steps=5, generator=torch.Generator().manual_seed(0)))
    four = acc(attacks.pgd(trained_lenet, x, y, 0.15, step=0.02, steps=5, restarts=4,
                           generator=torch.Generator().manual_seed(0)))
    assert four <= one


@pytest.mark.parametrize("name", ["rfgsm", "pgd"])
def test_same_seed_same_tensors(name, trained_lenet, small_batch):
    x, y = small_batch
    a = ALL[name](trained_lenet, x, y, torch.Generator().manual_seed(7))
    b = ALL[name](trained_lenet, x, y, torch.Generator().manual_seed(7))
    c = ALL[name](trained_lenet, x, y, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_eps_is_identity(trained_lenet, small_batch):
    x, y = small_batch
    assert torch.equal(attacks.fgsm(trained_lenet, x, y, 0.0), x)
    assert torch.equal(attacks.pgd(trained_lenet, x, y, 0.0, step=0.01, steps=3), x)


@pytest.mark.parametrize("call", [
    lambda m, x, y: attacks.fgsm(m, x, y, 1.5),
    lambda m, x, y: attacks.fgsm(m, x, y, float("nan")),
    lambda m, x, y: attacks.rfgsm(m, x, y, 0.1, alpha=0.2),
    lambda m, x, y: attacks.ifgsm(m, x, y, 0.1, steps=0),
    lambda m, x, y: attacks.pgd(m, x, y, 0.1, step=0.01, steps=10, restarts=0),
])
def test_bad_arguments_raise_value_error(call, trained_lenet, small_batch):
    with pytest.raises(ValueError):
        call(trained_lenet, *small_batch)


def test_against_torchattacks(trained_lenet, small_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = small_batch
    ours = attacks.fgsm(trained_lenet, x, y, EPS)
    theirs = torchattacks.FGSM(trained_lenet, eps=EPS)(x, y)
    assert (ours != theirs).float().mean() < 1e-3  # identical up to sign ties
    # PGD: different random starts, so compare strength, not tensors; only meaningful where the accuracy is neither
    # 0 nor clean accuracy (two attacks that both break every image, or neither, agree whatever they do): eps 0.15
    # for the normally trained LeNet+, which PGD breaks completely at 0.3
    eps = 0.15
    with torch.no_grad():
        acc = lambda xa: (trained_lenet(xa).argmax(1) == y).float().mean().item()  # noqa: E731
    ours_pgd = acc(attacks.pgd(trained_lenet, x, y, eps, step=0.01, steps=40,
                               generator=torch.Generator().manual_seed(0)))
    theirs_pgd = acc(torchattacks.PGD(trained_lenet, eps=eps, alpha=0.01, steps=40, random_start=True)(x, y))
    assert 0.1 < theirs_pgd < acc(x) - 0.1, f"pick an eps where PGD is neither hopeless nor trivial: {theirs_pgd}"
    assert abs(ours_pgd - theirs_pgd) <= 0.05, (ours_pgd, theirs_pgd)


@pytest.mark.parametrize("attack", ["ifgsm", "pgd"])
def test_early_stop_is_never_weaker(attack, trained_lenet, small_batch):
    x, y = small_batch

    def run(early):
        g = torch.Generator().manual_seed(0)
        if attack == "ifgsm":
            return attacks.ifgsm(trained_lenet, x, y, 0.15, steps=10, early_stop=early)
        return attacks.pgd(trained_lenet, x, y, 0.15, step=0.02, steps=10, generator=g, early_stop=early)

    with torch.no_grad():
        wrong = lambda xa: trained_lenet(xa).argmax(1) != y  # noqa: E731
        last, early = wrong(run(False)), wrong(run(True))
    # every example the last-iterate attack breaks is broken by the early-stopping one too, give or take one
    assert (last & ~early).sum() <= 1
    xa = run(True)
    assert (xa - x).abs().max() <= 0.15 + 1e-6 and xa.min() >= 0 and xa.max() <= 1


def test_old_call_forms_are_refused_and_masking_reports_old_keyword_warns(trained_lenet, small_batch):
    """The attacks' old positional settings and pgd's old ``alpha=`` are gone at once (a TypeError, not a silent
    other meaning); masking_report(step_size=) still works, with a DeprecationWarning, and gives what step= gives."""
    from gmreg_lab import diagnostics

    x, y = small_batch[0][:8], small_batch[1][:8]
    with pytest.raises(TypeError):
        attacks.pgd(trained_lenet, x, y, 0.3, 0.05, 3)
    with pytest.raises(TypeError):
        attacks.pgd(trained_lenet, x, y, 0.3, alpha=0.05, steps=3)
    with pytest.raises(TypeError):
        attacks.rfgsm(trained_lenet, x, y, 0.3, 0.01)
    kw = dict(steps=2, large_eps_steps=2, square_queries=0, search_queries=0)
    with pytest.warns(DeprecationWarning, match="step="):
        old = diagnostics.masking_report(trained_lenet, x, y, 0.3, step_size=0.05, **kw).to_dict()
    assert old == diagnostics.masking_report(trained_lenet, x, y, 0.3, step=0.05, **kw).to_dict()


def test_every_attack_has_the_one_calling_convention():
    """f(model, x, y, eps, *, generator=None, **settings): four positional parameters, every setting keyword-only,
    and a ``generator`` keyword, for every entry of the name -> function table."""
    for name, fn in attacks.ATTACKS.items():
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:4]] == ["model", "x", "y", "eps"], name
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:4]), name
        assert all(p.kind is p.KEYWORD_ONLY for p in params[4:]), name
        assert inspect.signature(fn).parameters["generator"].default is None, name


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_every_attack_in_the_table_stays_in_the_ball_and_repeats_with_its_generator(name, trained_lenet, small_batch):
    """Each attack with small settings: a valid adversary (evaluate.check_adversary; N-FGSM's training input lies
    up to (k + 1) eps from x by design) and the same one again from a generator seeded the same way."""
    from gmreg_lab.evaluate import check_adversary

    x, y = small_batch[0][:8], small_batch[1][:8]
    small = {"steps": 3, "queries": 20, "targets": 2}
    need = {"alpha": 0.02, "step": 0.03}
    kw = {k: small.get(k, need.get(k, d)) for k, d in attacks.settings(name).items()
          if k in small or d is inspect.Parameter.empty}
    run = lambda: attacks.ATTACKS[name](trained_lenet, x, y, 0.1, generator=torch.Generator().manual_seed(1), **kw)  # noqa: E731
    a = run()
    check_adversary(a, x, 0.1 * (1 + attacks.settings("nfgsm")["k"] if name == "nfgsm" else 1), name)
    assert torch.equal(a, run())

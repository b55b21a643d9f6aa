"""Every check of the gradient-masking checklist (`gl.diagnostics.masking_report`) demonstrated both ways: for each
one, a tiny constructed model (or a situation) that FAILS it and one that PASSES it, both verdicts asserted.

The models read 4 x 4 one-channel "images" with 2 classes and are built here, no training:

* ``Linear``: an honest linear model. FGSM is the optimal attack on it, PGD converges, nothing is hidden: it passes
  everything.
* ``Plateau``: flat within r < eps of every clean image, the linear model beyond. FGSM and R-FGSM see a zero
  gradient; PGD's random start leaves the plateau and breaks the model.
* ``Bent``: the displacement from the clean image squared in size (zero gradient at x, a full one a step away):
  FGSM stays put, R-FGSM's noise step finds the gradient and goes far (a large logit distance).
* ``Blocked``: the linear model behind a rounding to 1e-4 (the same predictions, an exactly zero input gradient).
* ``Overshoot``: the loss along the gradient direction turns back up within eps: FGSM overshoots and raises accuracy.
* ``Constant`` and ``Saturated`` (logits pinned by a tanh): what the logit distance cannot see.
"""

import pytest
import torch

from gmreg_lab import diagnostics
from gmreg_lab.diagnostics import KINDS, NOISE_POINTS, convergence_check, logit_distance, masking_report

EPS = 0.1
SHAPE = (1, 4, 4)
FAST = dict(square_queries=200)


def images(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(n, *SHAPE, generator=g)      # the eps-ball stays inside [0, 1]


class Linear(torch.nn.Module):
    def __init__(self, seed=0, scale=4.0, noise_of=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = scale * torch.randn(16, generator=g)
        self.w = torch.nn.Parameter(w if noise_of is None else noise_of.w.detach() + 0.5 * w)

    def forward(self, x):
        m = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([-m / 2, m / 2], 1)


class _Nearest(torch.nn.Module):
    """Knows the clean images: ``x0(x)`` is the nearest one (a constant for autograd)."""

    def __init__(self, net, clean):
        super().__init__()
        self.net, self.clean = net, clean.flatten(1)

    def x0(self, x):
        with torch.no_grad():
            return self.clean[torch.cdist(x.flatten(1), self.clean).argmin(1)].view_as(x)


class Plateau(_Nearest):
    def __init__(self, net, clean, r=EPS / 4):
        super().__init__(net, clean)
        self.r = r

    def forward(self, x):
        x0 = self.x0(x)
        d = x - x0
        return self.net(x0 + d.sign() * torch.relu(d.abs() - self.r))


class Bent(_Nearest):
    def __init__(self, net, clean, radius=2 * EPS):
        super().__init__(net, clean)
        self.radius = radius

    def forward(self, x):
        x0 = self.x0(x)
        d = x - x0
        return self.net(x0 + d * d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) / self.radius)


class Blocked(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 1e4) / 1e4)


class Saturated(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return 10 * torch.tanh(1e3 * self.net(x))


class Constant(torch.nn.Module):
    def forward(self, x):
        return 0 * x.flatten(1)[:, :2] + torch.tensor([2.0, 1.0])     # always class 0


class Overshoot(torch.nn.Module):
    """z_0 = 4 (S - S0)^2 - 1, z_1 = 0 with S the sum of the pixels. The images have S = S0 + 0.05: class 1 wins,
    but the label is 0. The loss rises towards S0 (where z_0 is lowest), so FGSM steps towards S0, overshoots it by
    eps * 16 - 0.05 and lands where z_0 is large: the true label, leaked through the gradient, wins."""
    S0 = 8.0

    def forward(self, x):
        z0 = 4 * (x.flatten(1).sum(1) - self.S0) ** 2 - 1
        return torch.stack([z0, torch.zeros_like(z0)], 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors of 16 pixels: a second thread only adds synchronisation (and on a busy CPU, waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def case():
    x = images()
    lin = Linear().eval()
    with torch.no_grad():
        y = lin(x).argmax(1)
    assert 0 < int(y.sum()) < len(y), "both classes present"
    return x, y, lin


_REPORTS = {}


def checks(name, model, x, y, **kw) -> dict:
    """``masking_report`` of ``model`` (computed once per name), as {check name: Check}."""
    if name not in _REPORTS:
        _REPORTS[name] = masking_report(model.eval(), x, y, EPS, **{**FAST, **kw})
    return {c.name: c for c in _REPORTS[name].checks}


def honest(case):
    x, y, lin = case
    return checks("linear", lin, x, y, source=Linear(seed=1))


def verdicts(name, failing, passing):
    assert failing[name].passed is False, failing[name]
    assert passing[name].passed is True, passing[name]


def test_honest_linear_model_passes_every_check(case):
    c = honest(case)
    assert all(ch.passed for ch in c.values()), [str(ch) for ch in c.values()]
    assert c["iterative_beats_single_step"].numbers["fgsm"] < 50, "the attacks bite: the checks compare something"


def test_iterative_beats_single_step(case):
    """Fails when PGD is weaker than one FGSM step: here a PGD that cannot get anywhere (4 steps of eps/40)."""
    x, y, lin = case
    weak = checks("weak pgd", lin, x, y, steps=4, step=EPS / 40)
    verdicts("iterative_beats_single_step", weak, honest(case))


def test_single_step_close_to_iterative(case):
    x, y, lin = case
    plateau = checks("plateau", Plateau(lin, x), x, y)
    verdicts("single_step_close_to_iterative", plateau, honest(case))
    assert plateau["single_step_close_to_iterative"].numbers["gap"] > 15


def test_no_label_leaking_and_it_is_not_called_masking(case):
    g = torch.Generator().manual_seed(3)
    xo = 0.3 + 0.4 * torch.rand(20, *SHAPE, generator=g)
    xo = xo + (Overshoot.S0 + 0.05 - xo.flatten(1).sum(1)).view(-1, 1, 1, 1) / 16     # S = S0 + 0.05
    yo = torch.zeros(20, dtype=torch.long)
    leak = checks("overshoot", Overshoot(), xo, yo)
    verdicts("no_label_leaking", leak, honest(case))
    assert leak["no_label_leaking"].numbers["fgsm"] > leak["no_label_leaking"].numbers["clean"] + 50
    assert leak["no_label_leaking"].kind == "leaking" and "not a sign of masking" in leak["no_label_leaking"].detail
    report = _REPORTS["overshoot"]
    assert "no_label_leaking" in report.failed and "no_label_leaking" not in report.failed_of("masking")
    assert {c["name"]: c["kind"] for c in report.to_dict()["checks"]}["no_label_leaking"] == "leaking"


def test_more_steps_and_restarts_is_a_convergence_check(case):
    """PGD-4 with steps of eps/40 has not converged: PGD-10 x 3 restarts lowers its accuracy by far more than noise.
    The old rule (``pgd_more <= pgd + NOISE_POINTS``) could never fail, since a longer attack is never weaker."""
    x, y, lin = case
    weak = checks("weak pgd", lin, x, y, steps=4, step=EPS / 40)
    verdicts("more_steps_and_restarts_dont_help", weak, honest(case))
    c = weak["more_steps_and_restarts_dont_help"]
    assert c.kind == "convergence" and c.numbers["drop"] > NOISE_POINTS
    assert f"do not trust its {c.numbers['pgd']:.1f}%" in c.detail and "PGD-4 had not converged" in c.detail


def test_convergence_check_on_the_course_numbers():
    """course/05 (before this check was fixed) showed a tick beside both of these."""
    for more, short in ((65.0, 75.0), (38.0, 55.0)):
        c = convergence_check(short, more, 40, 100, 3)
        assert c.passed is False and f"do not trust its {short:.1f}%" in c.detail, c.detail
    assert convergence_check(75.0, 74.5, 40, 100, 3).passed        # within noise
    assert convergence_check(75.0, 75.0, 40, 100, 3).passed


def test_large_eps_reaches_chance(case):
    x, y, lin = case
    blocked = checks("blocked", Blocked(lin), x, y, source=Linear(noise_of=lin, seed=2))
    verdicts("large_eps_reaches_chance", blocked, honest(case))


def test_black_box_not_stronger(case):
    """A surrogate's gradients (a linear model near the target's) beat the target's own, which are blocked."""
    blocked = checks("blocked", Blocked(case[2]), case[0], case[1], source=Linear(noise_of=case[2], seed=2))
    verdicts("black_box_not_stronger", blocked, honest(case))


def test_gradient_free_not_stronger(case):
    x, y, lin = case
    blocked = checks("blocked", Blocked(lin), x, y, source=Linear(noise_of=lin, seed=2))
    verdicts("gradient_free_not_stronger", blocked, honest(case))


def test_gradient_beats_random_search(case):
    x, y, lin = case
    verdicts("gradient_beats_random_search", checks("plateau", Plateau(lin, x), x, y), honest(case))


def test_gradients_not_vanishing(case):
    x, y, lin = case
    blocked = checks("blocked", Blocked(lin), x, y, source=Linear(noise_of=lin, seed=2))
    verdicts("gradients_not_vanishing", blocked, honest(case))


def test_logit_distance_small(case):
    """Bent: the gradient is zero at x but not at x' = x + alpha s, so the two adversaries land far apart."""
    x, y, lin = case
    verdicts("logit_distance_small", checks("bent", Bent(lin, x), x, y), honest(case))


def test_what_the_logit_distance_cannot_see(case):
    """A constant model and a saturated one pass the logit distance while the other checks catch them; a model
    can lose most of its PGD accuracy while its distance stays 0 (Plateau). The message and the docs say so."""
    x, y, lin = case
    const = checks("constant", Constant(), x, torch.zeros_like(y))
    sat = checks("saturated", Saturated(lin), x, y)
    plateau = checks("plateau", Plateau(lin, x), x, y)
    for c in (const, sat, plateau):
        assert c["logit_distance_small"].passed and c["logit_distance_small"].numbers["logit_dist"] < 0.01
    assert not const["large_eps_reaches_chance"].passed
    assert not sat["gradients_not_vanishing"].passed and not sat["gradient_free_not_stronger"].passed
    clean = plateau["no_label_leaking"].numbers["clean"]
    assert plateau["iterative_beats_single_step"].numbers["pgd"] < clean - 25
    assert "a constant or saturated model passes" in plateau["logit_distance_small"].detail
    assert "constant" in logit_distance.__doc__ and "saturated" in logit_distance.__doc__
    assert "PGD accuracy" in logit_distance.__doc__


def test_every_check_has_a_kind_and_both_verdicts_are_covered(case):
    """The checks demonstrated above are all the checks of a report; each has a known kind."""
    names = set(honest(case))
    assert names == {"iterative_beats_single_step", "single_step_close_to_iterative", "no_label_leaking",
                     "more_steps_and_restarts_dont_help", "large_eps_reaches_chance", "black_box_not_stronger",
                     "gradient_free_not_stronger", "gradient_beats_random_search", "logit_distance_small",
                     "gradients_not_vanishing"}
    assert all(c.kind in KINDS for c in honest(case).values())
    assert diagnostics.kind_of({"name": "no_label_leaking"}) == "leaking"     # reports saved without kinds
    assert diagnostics.kind_of({"name": "more_steps_and_restarts_dont_help"}) == "convergence"


# --- the live panel's verdict, both ways ------------------------------------------------------------------------------
def _rows(*pairs):
    return [{"event": "log", "iteration": 25 * (i + 1), "acc_pgd": p, "acc_fgsm": f, "logit_dist": 0.1}
            for i, (p, f) in enumerate(pairs)]


def test_live_verdict_flags_the_masking_signature_and_only_it():
    from gmreg_lab.diagnostics import live_verdict

    fresh = _rows((3, 13), (8, 20))                              # weak against both attacks: not masking
    assert live_verdict(fresh)["verdict"] == "undecided"
    assert live_verdict(fresh, finished=True)["verdict"] == "not robust yet"
    masks = _rows((3, 13), (20, 40), (1, 69), (0, 69), (25, 60))  # PGD collapses under FGSM, then recovers
    v = live_verdict(masks)
    assert v["verdict"] == "masking" and v["iteration"] == 100 and v["pgd"] == 0
    assert "masks at iteration 100" in v["text"]
    assert live_verdict(masks[:3])["verdict"] == "undecided"      # one row is not a confirmed collapse
    assert live_verdict(masks[:3], confirm=1)["verdict"] == "masking"
    robust = _rows((3, 13), (20, 30), (35, 52), (39, 65))         # lambda = 5: the gap stays under 40 points
    assert live_verdict(robust)["verdict"] == "undecided"
    assert live_verdict(robust, finished=True)["verdict"] == "no masking"
    dead = _rows((9, 9), (9, 9), (9, 9))                          # a constant predictor: no gap, never "robust"
    assert live_verdict(dead, finished=True)["verdict"] == "not robust yet"
    assert live_verdict([{"event": "epoch", "iteration": 5}])["verdict"] == "undecided"

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
    got = attacks.fgsm_rs(model, x, y, eps, step=step, generator=torch.Generator().manual_seed(3))
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


@pytest.mark.parametrize("method", ["fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign"])
def test_fp32_steps_are_the_steps_autocast_does_not_reach(method):
    """gl.training.FP32_STEPS (what a cost table "in bf16" must label fp32) lists exactly the single-step methods
    whose loss comes out the same with and without the loop's bf16 autocast."""
    model, x, y = _linear()
    model[1].weight.data *= 10
    cfg = tiny_cfg(method=method, eps=0.3, precision="bf16")
    losses = []
    for precision in ("fp32", "bf16"):
        ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(11))
        with gl.runtime.autocast(torch.device("cpu"), precision):
            losses.append(gl.training.STEPS[method](ctx, x, y)[0].detach().float())
    same = torch.allclose(losses[0], losses[1], rtol=1e-6)
    assert same == (method in gl.training.FP32_STEPS), (method, losses)


@pytest.mark.parametrize("method", ["fgsm_rs", "nfgsm", "gradalign"])
def test_new_methods_through_the_cli(method, tmp_path):
    from gmreg_lab.views.cli import main

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


# --- eps warm-up, GradAlign's train-mode gradients, Wong et al.'s recipe ---------------------------------------------
@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny batches gain nothing from two, and on a busy 2-core machine two threads
    spin-wait on each other: 20x slower here); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_eps_warmup_is_linear_from_zero_per_iteration():
    cfg = tiny_cfg(eps=0.3, epochs=2, eps_warmup_epochs=1.5)       # 2 iterations per epoch: 3 warm-up iterations
    got = [gl.training.eps_at(cfg, i, 2) for i in range(6)]
    assert got == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3, 0.3])
    assert gl.training.eps_warmup_factor(cfg, 3, 2) == 1.0
    off = tiny_cfg(eps=0.3)
    assert all(gl.training.eps_at(off, i, 2) == 0.3 and gl.training.eps_warmup_factor(off, i, 2) == 1.0
               for i in range(4))


def _spy_attacks(monkeypatch):
    """Record the eps-tied arguments every attack of the training steps is called with."""
    calls = []
    positional = {"fgsm": ("eps",), "rfgsm": ("eps", "alpha"), "fgsm_rfgsm": ("eps", "alpha"),
                  "fgsm_rs": ("eps", "step"), "nfgsm": ("eps", "k"), "pgd": ("eps", "step")}
    for name, fields in positional.items():
        real = getattr(gl.training, name)

        def spy(model, x, y, *args, _real=real, _name=name, _fields=fields, **kw):
            calls.append((_name, dict(zip(_fields, args))))
            return _real(model, x, y, *args, **kw)
        monkeypatch.setattr(gl.training, name, spy)
    real_noise = gl.training.uniform_noise

    def noise(x, scale, generator):
        calls.append(("uniform_noise", {"scale": scale}))
        return real_noise(x, scale, generator)
    monkeypatch.setattr(gl.training, "uniform_noise", noise)
    return calls


@pytest.mark.parametrize("method", ["fgsm", "rfgsm", "fgsm_rfgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign",
                                    "pgd"])
def test_every_step_scales_its_eps_tied_quantities_with_the_warmup(method, monkeypatch):
    """At warm-up factor 0.5 every eps-tied quantity of the step is halved (eps, R-FGSM's alpha, FGSM-RS's step,
    N-FGSM's noise through eps, GradAlign's noise and FGSM step) and nothing else is (N-FGSM's k, PGD's step in
    pixels); at factor 1 the step gets the configured numbers themselves."""
    model, x, y = _linear()
    cfg = tiny_cfg(method=method, eps=0.3, alpha=0.01, rs_step=1.25, nfgsm_k=2.0, pgd_steps=2, pgd_step_size=0.02)
    expect = {"fgsm": {"eps": 0.3}, "rfgsm": {"eps": 0.3, "alpha": 0.01}, "fgsm_rfgsm": {"eps": 0.3, "alpha": 0.01},
              "fgsm_rs": {"eps": 0.3, "step": 0.375}, "nfgsm": {"eps": 0.3, "k": 2.0},
              "pgd": {"eps": 0.3, "step": 0.02}, "uniform_noise": {"scale": 0.3}}
    for factor in (1.0, 0.5):
        calls = _spy_attacks(monkeypatch)
        seen = []
        real_ce = gl.training._ce
        monkeypatch.setattr(gl.training, "_ce", lambda m, xa, ya, _seen=seen, _real=real_ce:
                            _seen.append(xa) or _real(m, xa, ya))
        ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(0), warmup=factor)
        gl.training.STEPS[method](ctx, x, y)
        assert calls, "the step called no recorded attack"
        for name, args in calls:
            for k, v in args.items():
                scaled = not (k == "k" or (name == "pgd" and k == "step"))   # k: units of eps; PGD step: pixels
                want = expect[name][k] * factor if scaled else expect[name][k]
                assert v == pytest.approx(want), (name, k, v, want)
                if factor == 1.0 and k == "eps":
                    assert v == cfg.eps, "warm-up off: the configured eps itself"
        if method == "gradalign":     # its FGSM step is inline: the adversary lies within the scaled eps
            d = (seen[0] - x).abs().max().item()
            assert d == pytest.approx(0.3 * factor, abs=1e-6)
        monkeypatch.undo()


def test_warmup_in_training_history_and_resume_bit_for_bit(tmp_path, monkeypatch, one_thread):
    """The eps used at iteration i is eps_at(cfg, i): recorded as the rows' eps_train and seen by the step itself;
    a run interrupted inside the warm-up and resumed ends with the very weights of an uninterrupted one."""
    cfg = tiny_cfg(method="fgsm_rs", epochs=2, eps=0.3, eps_warmup_epochs=1.5, log_every=1, model="wong_cnn")
    used = []
    real = gl.training.fgsm_rs
    monkeypatch.setattr(gl.training, "fgsm_rs", lambda m, x, y, eps, *a, **k: used.append(eps) or
                        real(m, x, y, eps, *a, **k))
    full = gl.train(cfg, tmp_path / "full", progress=False)
    assert used == pytest.approx([0.0, 0.1, 0.2, 0.3])
    rows = gl.runs.log_rows(full.history)
    assert [r["eps_train"] for r in rows] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    part = gl.train(cfg, tmp_path / "part", progress=False, callback=lambda row: row["event"] == "epoch")
    assert part.stopped and part.metrics["epochs_done"] == 1
    used.clear()
    resumed = gl.train(cfg, tmp_path / "part", progress=False, resume=True)
    assert used == pytest.approx([0.2, 0.3]), "the ramp goes on from the iteration count"
    sf, sr = full.last_model.state_dict(), resumed.last_model.state_dict()
    assert all(torch.equal(sf[k], sr[k]) for k in sf)
    assert [r["eps_train"] for r in gl.runs.log_rows(resumed.history)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_warmup_off_is_the_configured_eps_at_every_step(monkeypatch, one_thread):
    cfg = tiny_cfg(method="fgsm_rs", epochs=2, eps=0.3, log_every=1, model="wong_cnn")
    used = []
    real = gl.training.fgsm_rs
    monkeypatch.setattr(gl.training, "fgsm_rs", lambda m, x, y, eps, *a, **k: used.append(eps) or
                        real(m, x, y, eps, *a, **k))
    res = gl.train(cfg, progress=False)
    assert len(used) == 4 and all(e == cfg.eps for e in used)
    assert all("eps_train" not in r for r in res.history), "no new column when the warm-up is off"


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 28 * 28, 10))


def test_gradalign_takes_both_gradients_in_train_mode_on_a_batch_norm_network(monkeypatch, small_batch, one_thread):
    """With the noise set to zero both input gradients are taken at the same x: in the same (train) mode they are
    the same gradient, so the misalignment is 0 (cos 1); an eval-mode first gradient, as the step had before,
    would differ from the train-mode one by the batch-norm normalisation alone."""
    x, y = small_batch[0][:16], small_batch[1][:16]
    model = _bn_net()
    monkeypatch.setattr(gl.training, "uniform_noise", lambda x, scale, generator: torch.zeros_like(x))
    cfg = tiny_cfg(method="gradalign", eps=0.3, align_lam=1.0)
    ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(0))
    _, parts = gl.training.STEPS["gradalign"](ctx, x, y)
    assert parts["reg"].item() == pytest.approx(0.0, abs=1e-5)
    assert model.training
    model.train()
    g_train = attacks.input_grad(model, x, y)
    model.eval()
    g_eval = attacks.input_grad(model, x, y)
    assert gradient_misalignment(g_eval, g_train).item() > 0.05, "eval vs train: the test would catch the old step"


def test_fgsm_rs_unclipped_start_by_hand():
    """clip_start=False (Wong et al.'s MNIST code): the gradient at the unclipped x + delta; the result is still
    projected on the ball and [0, 1]."""
    model, x, y = _linear()
    eps, step = 0.3, 0.375
    got = attacks.fgsm_rs(model, x, y, eps, step=step, generator=torch.Generator().manual_seed(3), clip_start=False)
    x1 = x + _uniform_by_hand(x.shape, eps, 3)
    want = torch.min(torch.max(x1 + step * _grad_by_hand(model, x1, y).sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, attacks.fgsm_rs(model, x, y, eps, step=step,
                                                   generator=torch.Generator().manual_seed(3)))


def test_cyclic_schedule_is_wong_et_al_s():
    """lr of the step i of epoch e: np.interp(e + (i + 1) / batches, [0, 2/5 epochs, epochs], [0, lr, 0])."""
    import numpy as np

    cfg = tiny_cfg(method="normal", optimizer="adam", lr=5e-3, lr_schedule="cyclic", epochs=10, weight_decay=0.0)
    model, opt = gl.training.make_model(cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 0.0
    sched = gl.training.make_scheduler(cfg, opt, 3)
    got, want = [], []
    for e in range(10):
        for i in range(3):
            got.append(opt.param_groups[0]["lr"])
            want.append(np.interp([e + (i + 1) / 3], [0, 10 * 2 // 5, 10], [0, 5e-3, 0])[0])
            opt.step()
            sched.step()
    assert got == pytest.approx(want, abs=1e-12)


def test_wong_recipe_resumes_bit_for_bit(tmp_path, one_thread):
    """Adam + the cyclic schedule + Wong et al.'s CNN through the loop: stopped after an epoch and resumed, the same
    weights as an uninterrupted run (optimizer and schedule state are in the checkpoint)."""
    cfg = tiny_cfg(method="fgsm_rs", model="wong_cnn", optimizer="adam", lr=5e-3, lr_schedule="cyclic",
                   weight_decay=0.0, rs_clip_start=False, epochs=2, eps_warmup_epochs=0.5)
    full = gl.train(cfg, tmp_path / "full", progress=False)
    gl.train(cfg, tmp_path / "part", progress=False, callback=lambda row: row["event"] == "epoch")
    resumed = gl.train(cfg, tmp_path / "part", progress=False, resume=True)
    sf, sr = full.last_model.state_dict(), resumed.last_model.state_dict()
    assert all(torch.equal(sf[k], sr[k]) for k in sf)
    assert gl.load_model(tmp_path / "full").arch == "wong_cnn"


@pytest.mark.parametrize("method", gl.config.METHODS)
def test_standalone_step_is_the_methods_training_iteration(method):
    """training.standalone_step (what bench, gl.lab.estimate_seconds and benchmarks/thread_overhead.py time) runs
    the method's own step: the loss it returns is the step table's loss on the same model, weights and noise, and
    the weights move. EAT gets a static source built for it."""
    cfg = gl.TrainConfig(dataset="mnist", method=method, batch_size=8, precision="fp32",
                         eat_sources=("unused: standalone_step builds its own",) if method == "eat" else ())
    x, y = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10
    torch.manual_seed(0)
    step = gl.training.standalone_step(cfg, torch.device("cpu"), seed=3)
    before = [p.detach().clone() for p in step.model.parameters()]
    torch.manual_seed(0)
    model, opt = gl.training.make_model(cfg, torch.device("cpu"))
    sources = [gl.models.build(cfg.model, cfg.dataset, cfg.normalize).eval().requires_grad_(False)] \
        if method == "eat" else []
    ctx = gl.training.StepContext(model, cfg, torch.Generator().manual_seed(3), sources)
    step.model.train()
    model.train()
    loss, _ = step(x, y)
    want, _ = gl.training.make_step(ctx, opt, torch.device("cpu"), graphs=False, compiled=False)(x, y)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(float(want), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))

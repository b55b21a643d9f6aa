"""Every speed trick must leave results unchanged beyond noise (issue: performance)."""

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.evaluate import Attack, attack_stats
from conftest import tiny_cfg


def _losses(**kw):
    res = gl.train(tiny_cfg(method="proposed", limit=256, **kw), progress=False)
    return torch.tensor([r["loss"] for r in res.history if r["event"] == "log"])


def test_channels_last_matches_contiguous():
    a = _losses(channels_last=False)
    b = _losses(channels_last=True)
    assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), (a, b)  # sign() ties make trajectories drift slightly


def test_bf16_training_tracks_fp32():
    a = _losses(precision="fp32")
    b = _losses(precision="bf16")
    assert torch.allclose(a, b, rtol=0.05, atol=0.05), (a, b)


def test_bf16_evaluation_keeps_pgd_accuracy_within_one_point(trained_lenet, mnist_test):
    """bf16 numerics checked on any CPU, small enough for one that emulates bf16 (about ten times slower)."""
    x, y = mnist_test.tensors(400)
    atk = Attack("pgd", steps=20, step=0.01)
    fp32 = attack_stats(trained_lenet, atk, x, y, 0.1, precision="fp32")["acc"]
    bf16 = attack_stats(trained_lenet, atk, x, y, 0.1, precision="bf16")["acc"]
    assert 5 < fp32 < 95, "pick an eps where the attack is neither trivial nor hopeless"
    assert abs(fp32 - bf16) <= 1.0, (fp32, bf16)


def test_nan_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = gl.training.STEPS["normal"]

    def poisoned(ctx, x, y):
        calls["n"] += 1
        loss, parts = real(ctx, x, y)
        return (loss * float("nan") if calls["n"] >= 3 else loss), parts

    monkeypatch.setitem(gl.training.STEPS, "normal", poisoned)
    out = tmp_path / "run"
    with pytest.raises(gl.errors.TrainingDiverged, match="iteration 2 \\(epoch 2\\)"):
        gl.train(tiny_cfg(method="normal", epochs=2), out, progress=False)
    ckpt = gl.runs.load_checkpoint(out)
    assert ckpt["epoch"] == 1 and not ckpt["complete"]
    model = gl.load_model(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cuda_graphs_are_chosen_only_where_a_graph_can_replay_the_step():
    """CUDA graphs are a GPU-only trick (checked against eager steps on a GPU by benchmarks/device_check.sh). The
    decision is checked here without a GPU (building a step for a "cuda" device touches no GPU): on for plain SGD
    steps on CUDA, off on the CPU, when asked off, and where the step would change between replays (EAT picks its
    source on the host; Adam and the cyclic schedule change the learning rate every step)."""
    import dataclasses

    from gmreg_lab.training import StepContext, make_model, make_step

    cfg = tiny_cfg(method="fgsm", cuda_graphs=True)
    model, opt = make_model(cfg, torch.device("cpu"))
    ctx = StepContext(model, cfg, torch.Generator(), [])
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert make_step(ctx, opt, cuda).graphs and make_step(ctx, opt, cuda).mode == "graph"
    assert not make_step(ctx, opt, cpu).graphs and make_step(ctx, opt, cpu).mode == "eager"
    assert not make_step(ctx, opt, cuda, graphs=False).graphs
    assert not make_step(dataclasses.replace(ctx, cfg=cfg.replace(cuda_graphs=False)), opt, cuda).graphs
    for change in (dict(optimizer="adam"), dict(lr_schedule="cyclic"), dict(method="eat", eat_sources=("a",))):
        assert not make_step(dataclasses.replace(ctx, cfg=cfg.replace(**change)), opt, cuda).graphs, change


def test_cudnn_autotune_is_on_while_training_on_cuda_and_restored_after():
    from gmreg_lab.runtime import cudnn_autotune

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_autotune("cuda"):
            assert torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark is False
        with cudnn_autotune("cpu"):
            assert not torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True          # a user's own setting is kept, also after an error
        with pytest.raises(RuntimeError):
            with cudnn_autotune("cuda"):
                raise RuntimeError("boom")
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_bench_refuses_cuda_graphs_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from gmreg_lab.runners.bench import bench
    with pytest.raises(ValueError, match="CUDA"):
        bench(device="cpu", cuda_graphs=True, batches=1, rounds=1)


def test_attack_pass_freezes_the_weights_and_restores_them():
    """The training steps' attacks run in eval mode with the weights frozen (so a compiled model's backward
    computes input gradients only), and every flag comes back, also after an error."""
    from gmreg_lab.training import attacking

    model = gl.models.build("lenet_plus").train()
    model.net[0].bias.requires_grad_(False)       # a parameter frozen by the caller stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    with attacking(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        x = torch.rand(4, 1, 28, 28, requires_grad=True)
        (g,) = torch.autograd.grad(model(x).sum(), x)   # the input gradient still flows
        assert g.abs().sum() > 0
    assert [p.requires_grad for p in model.parameters()] == flags
    with pytest.raises(RuntimeError):
        with attacking(model):
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.parameters()] == flags


def test_compiled_model_trains_like_the_eager_one(monkeypatch):
    """``compile_model``: the same losses as eager steps (fp32, CPU), the short last batch of an epoch on the
    plain model instead of a recompile, and the weights the compiled steps trained are the run's model. The kit's
    plumbing is under test (one graph per mode, the last batch, the weights back), so the graphs run on torch's
    "aot_eager" backend: the same dynamo graphs and AOT autograd, without inductor generating C++ kernels (30 s of
    this test on a 2-core CPU; those kernels are torch's to test)."""
    import torch._dynamo

    monkeypatch.setattr(gl.runtime, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    cfg = tiny_cfg(method="proposed", limit=80, select_best=False)   # batches of 32, 32 and 16
    eager = gl.train(cfg, progress=False)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    comp = gl.train(cfg.replace(compile_model=True), progress=False)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    assert graphs == 2, f"expected one graph per mode (attack: eval + frozen, loss: train), got {graphs}"
    a = torch.tensor([r["loss"] for r in eager.history if r["event"] == "log"])
    b = torch.tensor([r["loss"] for r in comp.history if r["event"] == "log"])
    assert len(a) == 3 and torch.allclose(a, b, rtol=1e-3, atol=1e-4), (a, b)
    for p, q in zip(eager.last_model.parameters(), comp.last_model.parameters()):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)
    assert not any(type(m).__name__ == "OptimizedModule" for m in comp.last_model.modules())


def test_runtime_settings_do_not_make_another_run(tmp_path):
    """CUDA graphs and compilation change how a step runs, not what it computes: a run resumes under either."""
    from gmreg_lab.training import compile_pays

    cfg = tiny_cfg(epochs=2)
    assert cfg.same_run(cfg.replace(cuda_graphs=False, compile_model=True))
    assert not cfg.same_run(cfg.replace(lam=1.0))
    out = tmp_path / "run"
    gl.train(cfg.replace(epochs=1), out, progress=False)
    with pytest.raises(gl.errors.GmregError, match="config differs in: epochs"):
        gl.train(cfg, out, resume=True, progress=False)
    gl.train(cfg.replace(epochs=1, cuda_graphs=False), out, resume=True, progress=False)   # accepted as the same
    # compiling is chosen where it pays: CIFAR-10 on a GPU only
    assert compile_pays(gl.TrainConfig(dataset="cifar10"), torch.device("cuda"))
    assert not compile_pays(gl.TrainConfig(dataset="cifar10"), torch.device("cpu"))
    assert not compile_pays(gl.TrainConfig(dataset="mnist"), torch.device("cuda"))

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
    x, y = mnist_test.tensors(1000)
    atk = Attack("pgd", 20, 0.01)
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


def test_cuda_graphs_setting_is_inert_on_the_cpu():
    """CUDA graphs are a GPU-only trick (checked against eager steps on a GPU by benchmarks/device_check.sh):
    on the CPU the setting must change nothing at all."""
    assert torch.equal(_losses(cuda_graphs=True), _losses(cuda_graphs=False))


def test_cudnn_autotune_is_restored_after_training():
    before = torch.backends.cudnn.benchmark
    gl.train(tiny_cfg(), progress=False)
    assert torch.backends.cudnn.benchmark == before


def test_bench_refuses_cuda_graphs_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from gmreg_lab.bench import bench
    with pytest.raises(ValueError, match="CUDA"):
        bench(device="cpu", cuda_graphs=True, batches=1, rounds=1)

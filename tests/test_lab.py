"""lab: the notebooks' recipes, cached runs, early checkpoints, timing and the masking checklist; the CIFAR fixture."""

import time

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab import lab
from gmreg_lab.fixtures import make_cifar10_fixture


def test_recipes_are_valid_configs_and_smoke_is_tiny():
    for name in lab.RECIPES:
        full, smoke = lab.recipe(name), lab.recipe(name, smoke=True)
        assert full.method == smoke.method and smoke.limit == 64 and smoke.probe_size == 32
    assert lab.recipe("lambda0").lam == 0 and lab.recipe("proposed", lam=2.0).lam == 2.0
    with pytest.raises(ValueError, match="unknown recipe"):
        lab.recipe("nope")


def test_run_name_is_config_specific():
    a, b = lab.recipe("proposed"), lab.recipe("proposed", lam=1.0)
    assert lab.run_name(a) == lab.run_name(lab.recipe("proposed")) != lab.run_name(b)
    assert "proposed-lam5" in lab.run_name(a) and "lam" not in lab.run_name(lab.recipe("fgsm"))


def test_smoke_runs_go_to_a_temp_dir_and_full_runs_to_runs(monkeypatch, tmp_path):
    assert "gmreg-smoke-runs-" in str(lab.runs_dir(smoke=True))
    monkeypatch.delenv(lab.ENV_RUNS_DIR, raising=False)
    assert lab.runs_dir().name == "runs"
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    assert lab.runs_dir() == tmp_path


def test_cached_train_trains_once(monkeypatch, tmp_path):
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    cfg = lab.recipe("fgsm", smoke=True)
    seen = []
    first = lab.cached_train(cfg, callback=seen.append)
    assert seen and (tmp_path / lab.run_name(cfg) / "checkpoint.pt").is_file()
    seen.clear()
    t = time.perf_counter()
    again = lab.cached_train(cfg, callback=seen.append)
    assert not seen and time.perf_counter() - t < 5          # returned from the cache, no training
    assert again.history == first.history
    for a, b in zip(first.last_model.parameters(), again.last_model.parameters()):
        assert torch.equal(a, b)


def test_train_until_is_an_early_checkpoint_of_the_same_run():
    cfg = lab.recipe("fgsm", smoke=True, limit=128)           # 4 iterations
    early = lab.train_until(cfg, 2)
    full = gl.train(cfg, progress=False)
    assert early.stopped and lab.log_rows(early.history)[-1]["iteration"] == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_time"} for r in rows]
    assert strip(lab.log_rows(early.history)) == strip(lab.log_rows(full.history)[:2])  # same trajectory
    with pytest.raises(ValueError, match="iteration"):
        lab.train_until(cfg, 0)


def test_seconds_per_epoch_scales_by_images():
    cfg = lab.recipe("normal", smoke=True)
    res = gl.train(cfg, progress=False)
    s = lab.seconds_per_epoch(res, images=64)
    assert s == pytest.approx(res.metrics["train_seconds"])
    assert lab.seconds_per_epoch(res) == pytest.approx(s * 50_000 / 64)


TABLE_MASKED = {"clean": {"acc": 90.0}, "fgsm": {"acc": 97.0}, "pgd-40": {"acc": 0.0}}
TABLE_ROBUST = {"clean": {"acc": 98.0}, "fgsm": {"acc": 90.0}, "pgd-40": {"acc": 85.0}}


def test_masking_checklist_flags_a_masked_model_and_passes_a_robust_one():
    sweep_down = {"eps": [0.0, 0.5], "pgd-40": {"acc": [98.0, 2.0]}}
    sweep_flat = {"eps": [0.0, 0.5], "pgd-40": {"acc": [98.0, 80.0]}}
    masked = lab.masking_checklist(TABLE_MASKED, transfer_acc=60.0, sweep=sweep_down, logit_dist=12.0)
    robust = lab.masking_checklist(TABLE_ROBUST, transfer_acc=92.0, sweep=sweep_down, logit_dist=0.2)
    assert [c["ok"] for c in masked] == [False, False, False, True, False]
    assert all(c["ok"] for c in robust)
    flat = lab.masking_checklist(TABLE_ROBUST, sweep=sweep_flat)
    assert [c["ok"] for c in flat] == [True, True, False]
    with pytest.raises(ValueError, match="pgd"):
        lab.masking_checklist({"clean": {"acc": 1}, "fgsm": {"acc": 1}})


def test_cifar_fixture_loads_and_trains(tmp_path):
    pytest.importorskip("torchvision")
    root = make_cifar10_fixture(tmp_path, n_per_batch=8)
    tr, te = gl.data.load("cifar10", "train", root), gl.data.load("cifar10", "test", root)
    assert (len(tr), len(te)) == (40, 8) and tr.images.shape[1:] == (3, 32, 32)
    with pytest.raises(ValueError, match="n_per_batch"):
        make_cifar10_fixture(tmp_path, n_per_batch=0)


def test_lab_sweep_runs_all_steps_and_reports_the_maximised_loss(trained_lenet, small_batch):
    x, y = small_batch
    sw = lab.sweep(trained_lenet, x, y, "clean,fgsm,pgd:10:0.05", [0.0, 0.3], batch_size=40)
    assert sw["eps"] == [0.0, 0.3] and sw["clean"]["acc"][0] == sw["pgd-10"]["acc"][0]
    x_adv = gl.attacks.pgd(trained_lenet, x, y, 0.3, 0.05, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(trained_lenet(x_adv), y).item()
    assert sw["pgd-10"]["loss"][1] == pytest.approx(direct, rel=1e-4)     # last iterate, same noise
    ev = gl.evaluate.sweep(trained_lenet, x, y, "pgd:10:0.05", [0.3])
    assert sw["pgd-10"]["loss"][1] >= ev["pgd-10"]["loss"][0] - 1e-6
    assert sw["pgd-10"]["loss"][1] > sw["fgsm"]["loss"][1]

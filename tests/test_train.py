import math

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.config import METHODS
from conftest import tiny_cfg


@pytest.fixture(scope="module")
def eat_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("eat") / "a"
    gl.train(tiny_cfg(model="a", method="normal"), out, progress=False)
    return str(out)


# what each method feeds the loss pass: (clean copies, adversarial copies) of the clean batch, in this order
LOSS_INPUTS = {"normal": (1, 0), "fgsm": (0, 1), "rfgsm": (0, 1), "pgd": (0, 1), "fgsm_rfgsm": (0, 2),
               "proposed": (0, 2), "eat": (1, 1), "fgsm_rs": (0, 1), "nfgsm": (0, 1), "gradalign": (0, 1)}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_its_inputs_and_logs(method, eat_source, monkeypatch):
    """Each method's loss pass (the model in train mode) sees the clean batch and/or perturbed copies of it of the
    right number and size: inside the eps-ball, and really moved (an FGSM-type step reaches the ball's edge)."""
    cfg = tiny_cfg(method=method, **({"eat_sources": (eat_source,)} if method == "eat" else {}),
                   **({"pgd_steps": 2} if method == "pgd" else {}))
    seen = []
    real_make_model = gl.training.make_model

    def make_model(c, dev):
        model, opt = real_make_model(c, dev)
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
        return model, opt
    monkeypatch.setattr(gl.training, "make_model", make_model)
    res = gl.train(cfg, progress=False)
    train_set, _ = gl.data.train_val_split(gl.data.load("mnist", "train"), cfg.val_size, cfg.seed)
    clean = [x for x, _ in train_set.head(cfg.limit).batches(cfg.batch_size, generator=gl.training.epoch_order(cfg, 0))]
    if method == "gradalign":   # three train-mode passes (both input gradients in train mode, as the authors'):
        for x, x_g1, x_eta in zip(clean, seen[0::3], seen[2::3]):   # the gradient at x, the loss pass, x + eta
            assert torch.equal(x_g1, x)
            d = (x_eta - x).abs().amax()                              # eta ~ U(-eps, eps), unclipped
            assert 0.9 * cfg.eps <= d <= cfg.eps + 1e-6
        seen = seen[1::3]
    assert len(seen) == len(clean) == 2, "one loss pass per iteration, in train mode"
    n_clean, n_adv = LOSS_INPUTS[method]
    radius = (cfg.nfgsm_k + 1) * cfg.eps if method == "nfgsm" else cfg.eps    # N-FGSM does not project
    for x, seen_x in zip(clean, seen):
        n = len(x)
        assert seen_x.shape == (n * (n_clean + n_adv), *x.shape[1:])
        for i in range(n_clean):
            assert torch.equal(seen_x[i * n:(i + 1) * n], x)
        for i in range(n_clean, n_clean + n_adv):
            dist = (seen_x[i * n:(i + 1) * n] - x).flatten(1).abs().amax(1)
            assert dist.max() <= radius + 1e-6 and dist.max() >= 0.9 * cfg.eps, (method, i, dist)
    logs = [r for r in res.history if r["event"] == "log"]
    assert len(logs) == 2  # two batches, log_every=1
    for key in ("loss", "ce", "logit_dist", "acc_clean", "acc_fgsm", "acc_pgd", "loss_fgsm", "loss_pgd",
                "train_time"):
        assert math.isfinite(logs[-1][key]), key
    assert ("reg" in logs[-1]) == (method in ("proposed", "gradalign"))
    assert res.metrics["epochs_done"] == 1 and res.metrics["seconds_per_epoch"] > 0
    assert not res.model.training


def test_run_directory_and_checkpoint_round_trip(tmp_path, small_batch):
    out = tmp_path / "run"
    res = gl.train(tiny_cfg(method="fgsm"), out, progress=False)
    for name in ("checkpoint.pt", "config.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    loaded = gl.load_model(out)
    assert not loaded.training
    x, _ = small_batch
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
    assert gl.TrainConfig.from_dict(gl.runs.read_json(out / "config.json")) == res.config
    assert "acc_pgd" in (out / "history.csv").read_text().splitlines()[0]


def test_same_seed_same_result_and_seed_matters():
    a = gl.train(tiny_cfg(method="proposed"), progress=False)
    b = gl.train(tiny_cfg(method="proposed"), progress=False)
    c = gl.train(tiny_cfg(method="proposed", seed=1), progress=False)
    sa, sb, sc = (r.last_model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k and "seconds" not in k} for r in h]  # noqa
    assert strip(a.history) == strip(b.history)


def test_training_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gl.train(tiny_cfg(method="rfgsm"), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_cfg(method="proposed", epochs=2)
    full = gl.train(cfg, tmp_path / "full", progress=False)
    # Interrupt after the first epoch through the callback, then resume.
    stop_after_epoch = lambda row: row["event"] == "epoch"  # noqa: E731
    part = gl.train(cfg, tmp_path / "part", progress=False, callback=stop_after_epoch)
    assert part.stopped and part.metrics["epochs_done"] == 1
    resumed = gl.train(cfg, tmp_path / "part", progress=False, resume=True)
    sf, sr = full.last_model.state_dict(), resumed.last_model.state_dict()
    assert all(torch.equal(sf[k], sr[k]) for k in sf)
    assert resumed.metrics["epochs_done"] == 2


def test_probes_run_in_eval_mode(monkeypatch):
    """The periodic probe sees the model as an attacker would (eval mode: no dropout noise, no batch-norm update
    from the probe's adversaries) and training continues in train mode."""
    modes = []
    real = gl.training.probe

    def spy(model, *a, **kw):
        modes.append(model.training)
        return real(model, *a, **kw)
    monkeypatch.setattr(gl.training, "probe", spy)
    gl.train(tiny_cfg(method="normal", model="a"), progress=False)   # model A has dropout
    assert modes == [False, False]


def test_stop_event_stops_within_an_iteration():
    import threading

    ev = threading.Event()
    seen = []

    def cb(row):
        seen.append(row)
        ev.set()

    res = gl.train(tiny_cfg(method="normal", limit=320), progress=False, callback=cb, stop=ev)
    assert res.stopped
    assert [r for r in res.history if r["event"] == "log"][-1]["iteration"] == 1


def test_nan_loss_stops_with_clear_error(tmp_path):
    cfg = tiny_cfg(method="normal", lr=1e30, epochs=2, limit=128)
    with pytest.raises(gl.errors.TrainingDiverged, match=r"NaN/Inf at iteration \d+"):
        gl.train(cfg, tmp_path / "run", progress=False)


def test_lr_schedule_is_stepwise():
    res = gl.train(tiny_cfg(method="normal", limit=320, lr=0.01, lr_milestones=(0.5,), lr_gamma=0.2),
                   progress=False)
    lrs = [r["lr"] for r in res.history if r["event"] == "log"]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.002)


def test_snapshots_are_kept_in_memory_and_on_disk(tmp_path, small_batch):
    res = gl.train(tiny_cfg(method="fgsm"), tmp_path / "run", progress=False, snapshot_at=(1,))
    assert set(res.snapshots) == {1}
    early = gl.load_model(tmp_path / "run", which="iter:1")
    x, _ = small_batch
    with torch.no_grad():
        assert not torch.equal(early(x), res.last_model(x))  # one more SGD step happened after the snapshot
    with pytest.raises(ValueError, match="no snapshot 'iter:7'"):
        gl.load_model(tmp_path / "run", which="iter:7")


def test_checkpoint_of_another_model_or_dataset_is_refused(tmp_path):
    out = tmp_path / "run"
    gl.train(tiny_cfg(method="normal"), out, progress=False)
    with pytest.raises(ValueError, match="is a mnist model, not cifar10"):
        gl.load_model(out, dataset="cifar10")
    with pytest.raises(ValueError, match="holds model 'lenet_plus', not 'a'"):
        gl.load_model(out, arch="a")
    # weights of one architecture under another's name: a clear error, not a size-mismatch traceback
    ckpt = gl.runs.load_checkpoint(out)
    ckpt["arch"] = "c"
    gl.runs.save_checkpoint(out / "checkpoint.pt", {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(ValueError, match="does not fit model 'c'"):
        gl.load_model(out)

import dataclasses

import pytest

import gmreg_lab as gl
from gmreg_lab.config import TrainConfig


def test_dataset_defaults_resolve_to_numbers():
    m = TrainConfig()
    assert (m.model, m.eps, m.alpha, m.epochs, m.batch_size, m.lr, m.pgd_steps) == \
        ("lenet_plus", 0.3, 0.01, 20, 32, 0.01, 40)
    c = TrainConfig(dataset="cifar10")
    assert (c.model, c.pgd_steps, c.augment) == ("resnet34", 7, True)
    assert c.eps == pytest.approx(8 / 255)


def test_frozen_and_replace_revalidates():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.eps = 0.1
    assert dataclasses.replace(cfg, lam=0.0).lam == 0.0
    with pytest.raises(ValueError, match="lam"):
        dataclasses.replace(cfg, lam=-1.0)


def test_round_trip_through_dict():
    cfg = TrainConfig(method="eat", eat_sources=("runs/a",), lr_milestones=(0.5,))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kw, msg", [
    (dict(eps=1.5), "eps must be a number in \\[0, 1\\]"),
    (dict(eps=-0.1), "eps must be"),
    (dict(eps=float("nan")), "eps must be"),
    (dict(lam=-1.0), "lam must be"),
    (dict(lam=float("nan")), "lam must be"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(pgd_steps=0), "pgd_steps must be"),
    (dict(method="fgsm-at"), "unknown method 'fgsm-at'; valid: normal, fgsm, rfgsm"),
    (dict(model="resnet34"), "unknown model 'resnet34' for mnist \\('resnet34' is a cifar10 model\\)"),
    (dict(dataset="svhn"), "unknown dataset 'svhn'; valid: mnist, cifar10"),
    (dict(method="eat"), "eat_sources"),
    (dict(alpha=0.5), "alpha .* must not exceed eps"),
    (dict(precision="fp8"), "unknown precision"),
])
def test_bad_config_raises_value_error(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


def test_unknown_config_keys():
    with pytest.raises(gl.GmregError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_new_fields_default_to_the_old_behaviour_and_round_trip():
    """eps warm-up, optimizer and schedule fields: off / SGD / step by default, so a config saved before they
    existed loads as the run it was; a config using them round-trips through its dict."""
    old = TrainConfig().to_dict()
    for key in ("eps_warmup_epochs", "optimizer", "lr_schedule", "lr_peak", "rs_clip_start"):
        old.pop(key)
    cfg = TrainConfig.from_dict(old)
    assert (cfg.eps_warmup_epochs, cfg.optimizer, cfg.lr_schedule, cfg.rs_clip_start) == (0.0, "sgd", "step", True)
    assert cfg == TrainConfig()
    wong = TrainConfig(model="wong_cnn", method="fgsm_rs", optimizer="adam", lr_schedule="cyclic", lr_peak=0.4,
                       eps_warmup_epochs=2.5, rs_clip_start=False, epochs=10)
    assert TrainConfig.from_dict(wong.to_dict()) == wong


@pytest.mark.parametrize("kw, msg", [
    (dict(eps_warmup_epochs=-1.0), "eps_warmup_epochs must be a number of epochs in \\[0, epochs=20\\]"),
    (dict(eps_warmup_epochs=3.0, epochs=2), "eps_warmup_epochs must be"),
    (dict(eps_warmup_epochs=float("nan")), "eps_warmup_epochs must be"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'; valid: sgd, adam"),
    (dict(lr_schedule="cosine"), "unknown lr_schedule 'cosine'; valid: step, cyclic"),
    (dict(lr_peak=1.0), "lr_peak .* must be in \\(0, 1\\)"),
])
def test_bad_new_fields_raise_one_line_errors(kw, msg):
    with pytest.raises(gl.GmregError, match=msg):
        TrainConfig(**kw)

import re

import pytest
import torch

from gmreg_lab.evaluate import (Attack, attack_stats, check_adversary, ensemble, evaluate, format_table, outcomes,
                                parse_attack, sweep, worst_case)


def test_parse_attack_specs():
    assert parse_attack("pgd:40") == Attack("pgd", steps=40, step=0.01, restarts=1)
    assert parse_attack("pgd:100:0.02:5") == Attack("pgd", steps=100, step=0.02, restarts=5)
    assert parse_attack("pgd:100:0.02:5").label == "pgd-100x5" and parse_attack("pgd:40").label == "pgd-40"
    assert parse_attack("ifgsm:40").label == "ifgsm-40"
    assert parse_attack("rfgsm:0.05") == Attack("rfgsm", alpha=0.05)
    assert parse_attack("rfgsm", "cifar10").get("alpha") == pytest.approx(2 / 255)
    assert parse_attack("apgd-t:100:3").label == "apgd-t-100x3" and parse_attack("apgd:50").label == "apgd-50"
    assert parse_attack("square:300").label == "square-300" and parse_attack("fgsm").label == "fgsm"
    for bad in ("pgd", "pgd:x", "fgsm:3", "ifgsm:3:0.1", "pgd:0", "pgd:10:2", "apgd-t:10:10", "square:1.5", "bim:3"):
        with pytest.raises(ValueError):
            parse_attack(bad)


def test_an_attack_is_a_name_and_checked_settings_and_runs_through_the_table(trained_lenet, small_batch):
    """Attack(name, **settings) refuses a setting its function does not take, is immutable and hashable, and its
    run() is the table's function called with those settings."""
    import torch

    from gmreg_lab import attacks

    with pytest.raises(ValueError, match="no setting alpha"):
        Attack("pgd", steps=3, alpha=0.1)
    with pytest.raises(ValueError, match="needs the setting.* step"):
        Attack("pgd", steps=3)
    a = Attack("pgd", steps=3, step=0.05)
    with pytest.raises(AttributeError):
        a.name = "fgsm"
    assert {a: 1}[Attack("pgd", step=0.05, steps=3)] == 1
    x, y = small_batch[0][:8], small_batch[1][:8]
    got = a.run(trained_lenet, x, y, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, attacks.pgd(trained_lenet, x, y, 0.3, steps=3, step=0.05,
                                        generator=torch.Generator().manual_seed(0)))
    assert torch.equal(Attack("rfgsm", alpha=0.2).run(trained_lenet, x, y, 0.1, generator=torch.Generator()
                                                      .manual_seed(0)),
                       attacks.rfgsm(trained_lenet, x, y, 0.1, alpha=0.1, generator=torch.Generator().manual_seed(0)))


def test_tables_early_stop_and_report_no_fake_loss(trained_lenet, small_batch):
    x, y = small_batch
    early = evaluate(trained_lenet, x, y, "clean,fgsm,pgd:10", 0.3)
    full = evaluate(trained_lenet, x, y, "clean,fgsm,pgd:10", 0.3, early_stop=False)
    assert early["pgd-10"]["loss"] is None and full["pgd-10"]["loss"] is not None
    assert early["pgd-10"]["acc"] <= full["pgd-10"]["acc"] + 100 / len(y)
    assert early["fgsm"] == full["fgsm"]
    assert "—" in format_table(early)


def test_sweep_reports_maximised_losses(trained_lenet, small_batch):
    x, y = small_batch
    s = sweep(trained_lenet, x, y, "fgsm,pgd:20:0.05", [0.0, 0.1, 0.3])   # 20 steps of 0.05 can reach the corners
    assert s["eps"] == [0.0, 0.1, 0.3]
    assert s["pgd-20"]["loss"][0] == pytest.approx(s["fgsm"]["loss"][0])  # eps 0: both are the clean loss
    assert all(p >= f for p, f in zip(s["pgd-20"]["loss"][1:], s["fgsm"]["loss"][1:]))
    assert s["pgd-20"]["acc"][2] <= s["pgd-20"]["acc"][1] <= s["pgd-20"]["acc"][0]


# --- every adversary is checked against the threat model ---------------------------------------------------------
def _tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = 0.2 + 0.6 * torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


BROKEN = {   # label: (attack(xb, yb), what the error says)
    "too far": (lambda xb, yb: (xb + 0.25).clamp(0, 1), "moved a pixel by 0.25"),
    "out of range": (lambda xb, yb: xb * 3, "outside [0, 1]"),
    "nan": (lambda xb, yb: xb.masked_fill(xb > 0.7, float("nan")), "NaN or Inf"),
    "wrong shape": (lambda xb, yb: xb[:, :, :2], "returned (")}


@pytest.mark.parametrize("label", list(BROKEN))
def test_ensemble_rejects_an_adversary_outside_the_threat_model(label):
    """A broken attack is an error naming it, never a silently lower accuracy."""
    model, x, y = _tiny()
    attack, msg = BROKEN[label]
    ok = {"fine": lambda xb, yb: (xb + 0.1 * torch.randn_like(xb).sign()).clamp(0, 1)}
    with pytest.raises(ValueError, match=f"attack '{label}' .*{re.escape(msg)}"):
        ensemble(model, x, y, {**ok, label: attack}, eps=0.1, every=True)
    assert ensemble(model, x, y, ok, eps=0.1)["n"] == 12


def test_an_external_attack_is_checked_against_its_own_eps():
    """torchattacks' attacks carry ``.eps``: without an ``eps`` argument, that one is enforced."""
    model, x, y = _tiny()

    class External:
        eps = 0.05

        def __call__(self, xb, yb):
            return (xb + 0.1).clamp(0, 1)
    with pytest.raises(ValueError, match=r"attack 'External' moved a pixel by 0\.1.*eps = 0\.05"):
        outcomes(model, External(), x, y)
    with pytest.raises(ValueError, match="attack 'ext' moved"):
        ensemble(model, x, y, {"ext": External()})


def test_kit_attacks_are_checked_in_attack_stats_and_worst_case(monkeypatch):
    """The same check runs after the kit's own attacks: a deliberately broken FGSM / PGD is caught and named."""
    model, x, y = _tiny()
    assert attack_stats(model, Attack("fgsm"), x, y, 0.1)["acc"] <= 100      # the real ones pass
    import functools

    from gmreg_lab import attacks

    def broken(real, make):   # the real attack's signature (functools.wraps), a wrong answer
        return functools.wraps(real)(lambda m, xb, yb, eps, **k: make(xb, eps))
    monkeypatch.setitem(attacks.ATTACKS, "fgsm", broken(attacks.fgsm, lambda xb, eps: (xb + 2 * eps).clamp(0, 1)))
    monkeypatch.setitem(attacks.ATTACKS, "pgd", broken(attacks.pgd, lambda xb, eps: xb + float("inf")))
    with pytest.raises(ValueError, match="attack 'fgsm' moved a pixel"):
        attack_stats(model, Attack("fgsm"), x, y, 0.1)
    with pytest.raises(ValueError, match="attack 'pgd-10' returned .*NaN or Inf"):
        worst_case(model, x, y, "clean,pgd:10", 0.1)
    with pytest.raises(ValueError, match="attack 'fgsm' moved"):
        evaluate(model, x, y, "clean,fgsm", 0.1)


def test_check_adversary_tolerates_float_rounding_only():
    x = torch.full((2, 1, 2, 2), 0.3)
    check_adversary(x + 0.1 + 5e-7, x, 0.1, "rounding")
    with pytest.raises(ValueError, match="'over' moved a pixel by 0.1001"):
        check_adversary(x + 0.1001, x, 0.1, "over")
    check_adversary(x + 0.5, x, None, "no eps: range and finiteness only")

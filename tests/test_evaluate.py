import pytest

from gmreg_lab.evaluate import Attack, evaluate, format_table, parse_attack, sweep


def test_parse_attack_specs():
    assert parse_attack("pgd:40") == Attack("pgd", 40, 0.01, 1)
    assert parse_attack("pgd:100:0.02:5") == Attack("pgd", 100, 0.02, 5)
    assert parse_attack("ifgsm:40").label == "ifgsm-40"
    assert parse_attack("rfgsm:0.05") == Attack("rfgsm", alpha=0.05)
    for bad in ("pgd", "pgd:x", "fgsm:3", "ifgsm:3:0.1", "pgd:0"):
        with pytest.raises(ValueError):
            parse_attack(bad)


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

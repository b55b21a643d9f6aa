import json
from pathlib import Path

import pytest

import gmreg_lab as gl
from gmreg_lab.runners.reproduce import reproduce
from conftest import tiny_cfg

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke_repro(tmp_path_factory):
    """One smoke reproduction (FGSM-AT, the proposed method, one static source) shared by the tests below:
    ``(out, summary)``. A test that changes the folder works on a copy."""
    pytest.importorskip("torchattacks")   # the smoke scale runs the cross-check too
    out = tmp_path_factory.mktemp("smoke-repro") / "r"
    return out, reproduce("mnist", "smoke", out, methods="fgsm,proposed,static_a", progress=False)


def test_smoke_reproduction_writes_tables_and_is_cached(smoke_repro):
    out, s = smoke_repro
    assert set(s["table3"]) == {"fgsm", "proposed"}
    assert set(s["table5"]) == {"static_a->proposed"}
    cc = s["crosscheck"]["proposed"]
    assert {"ours_pgd-40", "ours_apgd-ce", "ours_apgd-t", "ours_worst_case", "torchattacks_apgd-ce",
            "torchattacks_apgd-t", "torchattacks_worst_case"} <= set(cc)
    assert cc["ours_worst_case"] <= min(cc["ours_pgd-40"], cc["ours_apgd-ce"], cc["ours_apgd-t"])
    assert cc["gap_points"] == pytest.approx(cc["ours_worst_case"] - cc["torchattacks_worst_case"])
    assert set(s["masking"]) == {"fgsm", "proposed"}
    assert "early_iter" in s["figures"] and "fgsm@last" in s["figures"]["sweeps"]
    table = (out / "TABLES.md").read_text()
    assert "Table 3" in table and "Table 7" in table and "FGSM Adv." in table
    env = json.loads((out / "summary.json").read_text())["environment"]     # which code made it, how
    assert env["source_sha256"] == gl.runs.source_sha256() and env["processes"] == 1 and env["command"]
    # cached: a second call trains nothing and evaluates nothing
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} | {p: p.stat().st_mtime_ns
                                                                    for p in (out / "eval").glob("*.json")}
    s2 = reproduce("mnist", "smoke", out, methods="fgsm,proposed,static_a", progress=False, figures=False)
    assert s2["table3"] == s["table3"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())


def test_unknown_scale_or_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown scale 'huge'; valid: smoke, quick, paper"):
        reproduce("mnist", "huge", tmp_path)
    with pytest.raises(ValueError, match="unknown run"):
        reproduce("mnist", "smoke", tmp_path, methods="fgsm,magic")


def test_masking_report_flags_fgsm_at_and_passes_an_honest_model(mnist_test):
    """FGSM-AT at lr 0.02 masks within 400 iterations (logit distance 7.4, FGSM 62 % vs PGD-10 25 % on the probe,
    measured when this test was sized); 200 iterations of normal training make the honest model."""
    x, y = mnist_test.tensors(100)
    masked = gl.train(tiny_cfg(method="fgsm", limit=12_800, lr=0.02, log_every=400, select_best=False),
                      progress=False).last_model
    kw = dict(steps=40, square_queries=100, large_eps_steps=40)    # 40 x 0.01 covers eps
    bad = gl.diagnostics.masking_report(masked, x, y, 0.3, **kw)
    honest = gl.train(tiny_cfg(method="normal", limit=6_400, log_every=400, select_best=False),
                      progress=False).last_model
    good = gl.diagnostics.masking_report(honest, x, y, 0.3, **kw)
    assert not bad.passed
    assert {"single_step_close_to_iterative", "logit_distance_small"} & set(bad.failed), str(bad)
    # (gradient_beats_random_search needs a model masked harder than 600 iterations make: tests/test_audit.py)
    assert good.passed, str(good)
    d = bad.to_dict()
    assert d["passed"] is False and all("detail" in c for c in d["checks"])


QUICK = ROOT / "results" / "mnist-quick" / "summary.json"


@pytest.mark.skipif(not QUICK.exists(), reason="results/mnist-quick not produced yet")
def test_committed_quick_results_show_masking_and_its_cure():
    """The committed reproduction: FGSM-AT masks gradients, PGD-AT and the proposed method do not."""
    s = json.loads(QUICK.read_text())
    t3, masking = s["table3"], s["masking"]
    assert t3["fgsm"]["pgd-40"]["acc"] < 5 and t3["fgsm"]["fgsm"]["acc"] > 50
    assert t3["proposed"]["pgd-40"]["acc"] > t3["fgsm"]["pgd-40"]["acc"] + 50
    assert not masking["fgsm"]["passed"]
    assert masking["pgd"]["passed"] and masking["proposed"]["passed"]
    cc = s["crosscheck"]["proposed"]
    # The same attack (PGD-40, step 0.01) from an independent implementation agrees with ours.
    assert abs(cc["torchattacks_pgd-40"] - cc["ours_pgd-40"]) <= 2
    # APGD is stronger than the paper's PGD protocol at this scale (see REPRODUCTION.md); it must stay far above
    # the masked FGSM-AT model all the same.
    assert cc["torchattacks_worst_case"] > t3["fgsm"]["pgd-40"]["acc"] + 50
    # With the kit's own APGD, our evaluation finds what the independent one finds (the 2-point rule).
    for name in ("proposed", "pgd"):
        c = s["crosscheck"][name]
        assert c["ours_worst_case"] <= c["torchattacks_worst_case"] + 2, (name, c)
    assert s["runs"]["proposed"]["seconds_per_epoch"] < s["runs"]["pgd"]["seconds_per_epoch"]


def test_cifar10_reproduction_runs_on_the_fixture(tmp_path):
    from gmreg_lab.fixtures import make_cifar10_fixture

    make_cifar10_fixture(tmp_path / "data")
    s = reproduce("cifar10", "smoke", tmp_path / "r", methods="proposed", data_dir=tmp_path / "data",
                  progress=False, figures=False)
    assert set(s["table3"]) == {"proposed"}
    assert s["runs"]["proposed"]["config"]["model"] == "resnet18"
    assert s["masking"]["proposed"]["checks"]


def test_a_run_without_its_early_snapshot_skips_that_sweep_only(smoke_repro, tmp_path):
    """A run trained before snapshots were asked for (or by plain `train`) still reproduces: the early-checkpoint
    sweep is skipped and listed, everything else is computed."""
    from gmreg_lab.runs import checkpoint_path, load_checkpoint, save_checkpoint

    import shutil

    out = tmp_path / "r"
    shutil.copytree(smoke_repro[0], out)
    ckpt = load_checkpoint(out / "runs" / "proposed")
    ckpt.pop("format")
    ckpt["snapshots"] = {}
    save_checkpoint(checkpoint_path(out / "runs" / "proposed"), ckpt)
    for f in (out / "eval").glob("sweep_*"):
        f.unlink()
    s = reproduce("mnist", "smoke", out, methods="proposed", progress=False, figures=False)
    assert s["figures"]["missing"] == ["proposed@iter:2"]
    assert "proposed@last" in s["figures"]["sweeps"] and "table3" in s


PAPER = ROOT / "results" / "mnist-paper" / "summary.json"


@pytest.mark.skipif(not PAPER.exists(), reason="results/mnist-paper not produced yet")
def test_committed_paper_scale_row_matches_the_paper():
    """The proposed method at the paper's settings, all 10k test images: clean and FGSM within 1.5 points of Table 3,
    the iterative attacks no more than 1.5 points below it, a clean checklist, and an independent APGD that finds
    nothing our evaluation missed."""
    s = json.loads(PAPER.read_text())
    assert s["scale"] == "paper" and s["scale_settings"]["eval_limit"] is None
    assert s["runs"]["proposed"]["config"]["epochs"] == 20
    ours = s["table3"]["proposed"]
    for col, paper in (("clean", 98.74), ("fgsm", 95.10)):
        assert abs(ours[col]["acc"] - paper) <= 1.5, (col, ours[col]["acc"], paper)
    for col, paper in (("ifgsm-40", 89.91), ("pgd-40", 89.48), ("pgd-100", 87.74)):   # as robust, or more
        assert ours[col]["acc"] >= paper - 1.5, (col, ours[col]["acc"], paper)
    assert s["masking"]["proposed"]["passed"]
    cc = s["crosscheck"]["proposed"]
    assert cc["n"] >= 1000 and cc["apgd_t_target_classes"] == 9
    assert cc["ours_worst_case"] <= cc["torchattacks_worst_case"] + 2
    aa = s["autoattack"]["proposed"]   # the AutoAttack-standard headline: both implementations, the same images
    assert aa["n"] >= 1000 and aa["ours"]["settings"] == {"steps": 100, "targets": 9, "queries": 5000}
    assert aa["torchattacks"]["settings"] == aa["ours"]["settings"] and aa["ours"]["n"] == aa["torchattacks"]["n"]
    assert abs(aa["gap_points"]) <= 2 and aa["robust"] == min(aa["ours"]["robust"], aa["torchattacks"]["robust"])
    assert aa["robust"] <= cc["ours_worst_case"] + 0.5, aa


def test_tables_pair_each_column_with_the_paper_value_of_the_same_attack():
    """Cached evaluations come back with their keys sorted (pgd-100 before pgd-40): the table must still put the
    paper's PGD-40 number (89.48) under PGD-40 and its PGD-100 number (87.74) under PGD-100."""
    from gmreg_lab.runners.report_tables import render_markdown

    sc = {"eval_limit": None, "attacks": "clean,fgsm,ifgsm:40,pgd:40,pgd:100"}
    cols = {"clean": 98.0, "fgsm": 94.0, "ifgsm-40": 90.0, "pgd-100": 86.0, "pgd-40": 89.0}   # sorted, as cached
    summary = {"dataset": "mnist", "scale": "paper", "scale_settings": sc, "environment": {},
               "table3": {"proposed": {k: {"acc": v, "loss": None} for k, v in sorted(cols.items())}}}
    row = next(line for line in render_markdown(summary, "out").splitlines() if line.startswith("| Proposed"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells == ["98.00 / 98.74", "94.00 / 95.10", "90.00 / 89.91", "89.00 / 89.48", "86.00 / 87.74"]

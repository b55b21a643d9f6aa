"""The peers suite (FGSM-RS, N-FGSM, GradAlign beside the paper's methods) and the collapse detector."""

import json
import re
from pathlib import Path

import pytest

from gmreg_lab.diagnostics import collapse, stays_from
from gmreg_lab.errors import GmregError


def _rows(accs, every=50):
    return [{"event": "log", "iteration": every * (i + 1), "acc_pgd": a} for i, a in enumerate(accs)]


def test_collapse_is_a_fall_that_lasts_after_real_robustness():
    c = collapse(_rows([20, 45, 60, 52, 8, 3, 1, 0]))
    assert c == {"collapsed": True, "iteration": 250, "peak": 60, "final": 0}
    assert not collapse(_rows([20, 45, 60, 8, 40, 55]))["collapsed"], "a dip it recovers from is no collapse"
    never = collapse(_rows([2, 4, 6, 3]))
    assert not never["collapsed"] and never["peak"] == 6, "never robust: nothing to lose"
    assert stays_from(_rows([1, 20, 3, 2]), lambda r: r["acc_pgd"] < 10) == 150
    assert collapse([])["collapsed"] is False
    short = collapse(_rows([5, 12, 21.5, 14, 6, 0, 0]))   # one epoch of FGSM-AT from raw pixels peaks near 20 %
    assert short["collapsed"] and short["peak"] == 21.5


@pytest.mark.slow
def test_peers_suite_smoke_writes_every_cell_and_is_cached(tmp_path):
    pytest.importorskip("plotly")
    from gmreg_lab.runners.suite import peers

    out = tmp_path / "s"
    from gmreg_lab.views.report_figures import write_suite_figures

    s = peers("smoke", out, methods="fgsm,proposed,fgsm_rs,nfgsm,gradalign", progress=False, jobs=1,
              figures=write_suite_figures)
    assert set(s["results"]) == {f"{m}_eps{e:g}" for m in ("fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign")
                                 for e in (0.1, 0.3)}
    for r in s["results"].values():
        assert set(r["acc"]) == {"clean", "fgsm", "pgd-4"} and r["worst"]["robust"] <= r["acc"]["pgd-4"] + 1e-9
        assert r["logit_dist"] >= 0 and set(r["collapse"]) == {"collapsed", "iteration", "peak", "final"}
    assert {"fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign"} <= set(s["bench"]["seconds_per_epoch"])
    text = (out / "SUITE.md").read_text()
    assert len(re.findall(r"\| N-FGSM \| 0\.[13] \|", text)) == 2 and "GradAlign" in text and "82.93" in text
    assert "**Not a ranking.**" in text and "results/peers-study" in text
    assert (out / "suite.html").stat().st_size > 100_000
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    again = peers("smoke", out, methods="fgsm,proposed,fgsm_rs,nfgsm,gradalign", progress=False, jobs=1)
    assert json.dumps(again["results"], sort_keys=True) == json.dumps(s["results"], sort_keys=True)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_unknown_suite_method_or_scale_is_a_clear_error(tmp_path):
    from gmreg_lab.runners.suite import peers

    with pytest.raises(ValueError, match="unknown suite method"):
        peers("smoke", tmp_path, methods="fgsm,magic")
    with pytest.raises(ValueError, match="unknown scale"):
        peers("huge", tmp_path)


def test_committed_quick_suite_is_complete_and_says_what_the_readme_says():
    """results/mnist-peers-quick (the committed CPU suite): every method at every eps with the worst case, the
    distance, the collapse verdict and the cost; and the README's sentences about it hold in its numbers."""
    root = Path(__file__).resolve().parent.parent / "results" / "mnist-peers-quick"
    if not (root / "suite.json").exists():
        pytest.skip("no committed peers suite")
    s = json.loads((root / "suite.json").read_text())
    from gmreg_lab.runners.suite import PEERS, SUITE_SCALES, suite_runs
    assert s["scale"] == "quick" and set(s["methods"]) == set(PEERS)
    assert set(s["results"]) == set(suite_runs("mnist", SUITE_SCALES["quick"]))
    for name, r in s["results"].items():
        pgd = r["acc"]["pgd-40"]
        assert r["worst"]["robust"] <= pgd + 1e-9 and r["worst"]["n"] == SUITE_SCALES["quick"].eval_limit, name
        assert r["collapse"]["collapsed"] == (r["collapse"]["iteration"] is not None), name
    assert set(PEERS) <= set(s["bench"]["seconds_per_epoch"])
    text = (root / "SUITE.md").read_text()
    assert all(f"| {n} |" in text for n in ("FGSM-AT", "FGSM-RS", "N-FGSM", "GradAlign", "PGD-AT"))
    assert "**Not a ranking.**" in text, "the committed table says what it cannot rank (issue 28)"
    # issue 28, "Reporting": a constant predictor's class share is never printed (or drawn) as a robust accuracy,
    # GradAlign's cost row says it ran in fp32, and the anchors are the kit's sourced ones
    assert "| N-FGSM | 0.3 | 13.7 | — | — | did not learn | — |" in text and "**13.7**" not in text
    assert "| GradAlign | fp32 (its step always; the others bf16) |" in text
    from gmreg_lab import paper
    assert s["anchors"] == json.loads(json.dumps(paper.PEER_ANCHORS))
    assert all(a["source"] in text for a in paper.PEER_ANCHORS)
    from gmreg_lab.views.report_figures import build_suite_figures
    worst = {t.name: list(t.y) for t in build_suite_figures(s, {})["worst_vs_eps"].data}
    nf = next(k for k in worst if k.startswith("N-FGSM"))
    assert "did not learn at eps 0.3, 0.4" in nf and worst[nf][2:] == [None, None], worst
    res = lambda m, e: s["results"][f"{m}_eps{e:g}"]          # noqa: E731
    # README: FGSM-AT collapses at eps 0.3, the proposed method does not, and keeps the lowest logit distance there
    # among the runs that learned (N-FGSM's 0.00 there is a constant predictor's)
    from gmreg_lab.runners.report_tables import lowest_logit_distance, result_did_not_learn
    assert res("fgsm", 0.3)["collapse"]["collapsed"] and not res("proposed", 0.3)["collapse"]["collapsed"]
    assert result_did_not_learn(res("nfgsm", 0.3))
    assert lowest_logit_distance(s["results"], 0.3)[0] == "proposed_eps0.3"
    # README: at eps 0.3 the proposed method has the best worst case of the single-step methods
    assert res("proposed", 0.3)["worst"]["robust"] == max(res(m, 0.3)["worst"]["robust"] for m in PEERS)


# --- runs that did not learn ----------------------------------------------------------------------------------------
def test_did_not_learn_flags_constant_predictors():
    from gmreg_lab.runners.report_tables import did_not_learn

    assert did_not_learn(13.7, majority_pct=13.7, top_pred_pct=100.0)       # N-FGSM at eps 0.3 (quick suite)
    assert did_not_learn(16.0, majority_pct=11.35)                           # within 5 points of the majority rate
    assert did_not_learn(40.0, majority_pct=11.35, top_pred_pct=95.0)        # nearly everything in one class
    assert not did_not_learn(97.7, majority_pct=13.7, top_pred_pct=14.0)
    assert did_not_learn(13.7) and not did_not_learn(93.0)                   # older results: no shares recorded
    assert not did_not_learn(None)


def test_class_shares_of_a_constant_model(small_batch):
    import torch

    from gmreg_lab.runners.suite import class_shares

    x, y = small_batch

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 1), 10).float()
    shares = class_shares(Constant(), x, y)
    assert shares["top_pred_pct"] == 100.0
    assert shares["majority_pct"] == pytest.approx(100 * torch.bincount(y).max().item() / len(y))


def _summary(results):
    return {"dataset": "mnist", "scale": "smoke", "environment": {"machine": "x86_64", "cpu_count": 2},
            "scale_settings": {"eval_limit": 300, "worst": "pgd:40", "eps_list": [0.3]}, "methods": list(results),
            "results": {f"{m}_eps0.3": r for m, r in results.items()}, "collapse_peak": 15.0, "anchors": []}


def _res(method, clean, worst, dist, **kw):
    return {"method": method, "eps": 0.3, "acc": {"clean": clean, "fgsm": worst + 5, "pgd-40": worst + 1},
            "worst": {"robust": worst}, "logit_dist": dist,
            "collapse": {"collapsed": False, "iteration": None, "peak": 50.0, "final": 40.0}, **kw}


def test_suite_md_never_prints_a_dead_run_as_robust_and_its_distance_claim_ignores_it():
    from gmreg_lab.runners.report_tables import render_suite

    text = render_suite(_summary({
        "proposed": _res("proposed", 97.7, 70.0, 0.13, majority_pct=13.7, top_pred_pct=12.0),
        "nfgsm": _res("nfgsm", 13.7, 13.7, 0.0, majority_pct=13.7, top_pred_pct=100.0),
        "fgsm_rs": _res("fgsm_rs", 98.3, 13.3, 1.27)}), "out")
    nrow = next(line for line in text.splitlines() if line.startswith("| N-FGSM |"))
    cells = [c.strip() for c in nrow.split("|")[1:-1]]
    assert cells[2] == "13.7" and cells[5] == "did not learn" and "**" not in nrow
    assert nrow.count("13.7") == 1, "only its clean accuracy, never as a robust number"
    assert "| **70.0** |" in text and "| **13.3** |" in text
    assert "lowest logit distance among the runs that learned: Proposed (λ = 5) (0.13); did not learn: N-FGSM" in text
    assert "best-validation epoch" in text and "catastrophic overfitting, Wong, Rice & Kolter 2020" in text


def test_the_cost_figure_names_the_precision_it_was_timed_in():
    from gmreg_lab.views.report_figures import cost_title

    assert cost_title({"device": "cpu", "precision": "bf16"}, ["fgsm", "gradalign"]) == \
        "cost per epoch, measured side by side (cpu, bf16; GradAlign's step in fp32)"
    assert cost_title({"device": "cpu", "precision": "fp32"}, ["fgsm", "gradalign"]).endswith("(cpu, fp32)")
    assert cost_title({"device": "cuda"}, ["fgsm"]).endswith("(cuda)")             # older results without it


def test_rerender_changes_the_report_not_the_numbers(tmp_path):
    """gmreg_lab.runners.suite.rerender on a copy of the committed suite; experiments/rerender_quick_suite.py reads
    the training histories back from the committed page."""
    import shutil
    import sys

    from gmreg_lab import paper
    from gmreg_lab.runners.suite import rerender

    root = Path(__file__).resolve().parent.parent
    src = root / "results" / "mnist-peers-quick"
    shutil.copy(src / "suite.json", tmp_path / "suite.json")
    before = json.loads((tmp_path / "suite.json").read_text())
    for r in before["results"].values():          # as the first committed file had it: no flag recorded
        r.pop("did_not_learn", None)
    before["anchors"] = [{**a, "source": "stale"} for a in before["anchors"]]
    (tmp_path / "suite.json").write_text(json.dumps(before))
    after = rerender(tmp_path, note="test")
    assert after["anchors"] == paper.PEER_ANCHORS and after["rerendered"][-1]["note"] == "test"
    res = after["results"]
    assert res["nfgsm_eps0.3"]["did_not_learn"] and not res["proposed_eps0.3"]["did_not_learn"]
    strip = lambda d: {k: {kk: vv for kk, vv in v.items() if kk != "did_not_learn"} for k, v in d.items()}  # noqa: E731
    assert strip(after["results"]) == strip(before["results"]), "no number changes"
    assert "did not learn" in (tmp_path / "SUITE.md").read_text()
    (tmp_path / "suite.json").write_text(json.dumps({"suite": "audit"}))
    with pytest.raises(GmregError, match="not a finished peers suite"):
        rerender(tmp_path)

    sys.path.insert(0, str(root / "experiments"))
    import rerender_quick_suite as rq
    hist = rq.histories_from_html((src / "suite.html").read_text(), before["methods"], 0.4)
    assert set(hist) == {f"{m}_eps0.4" for m in ("fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign")}
    rows = hist["fgsm_eps0.4"]
    assert len(rows) > 20 and all({"acc_pgd", "logit_dist", "iteration"} <= set(r) for r in rows)
    assert [r["iteration"] for r in rows] == sorted(r["iteration"] for r in rows)

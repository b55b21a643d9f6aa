"""The peers suite (FGSM-RS, N-FGSM, GradAlign beside the paper's methods) and the collapse detector."""

import json
import re
from pathlib import Path

import pytest

from gmreg_lab.diagnostics import collapse, stays_from


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
    from gmreg_lab.suite import peers

    out = tmp_path / "s"
    s = peers("smoke", out, methods="fgsm,proposed,fgsm_rs,nfgsm,gradalign", progress=False, jobs=1)
    assert set(s["results"]) == {f"{m}_eps{e:g}" for m in ("fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign")
                                 for e in (0.1, 0.3)}
    for r in s["results"].values():
        assert set(r["acc"]) == {"clean", "fgsm", "pgd-4"} and r["worst"]["robust"] <= r["acc"]["pgd-4"] + 1e-9
        assert r["logit_dist"] >= 0 and set(r["collapse"]) == {"collapsed", "iteration", "peak", "final"}
    assert {"fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign"} <= set(s["bench"]["seconds_per_epoch"])
    text = (out / "SUITE.md").read_text()
    assert len(re.findall(r"\| N-FGSM \| 0\.[13] \|", text)) == 2 and "GradAlign" in text and "82.93" in text
    assert (out / "suite.html").stat().st_size > 100_000
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    again = peers("smoke", out, methods="fgsm,proposed,fgsm_rs,nfgsm,gradalign", progress=False, jobs=1)
    assert json.dumps(again["results"], sort_keys=True) == json.dumps(s["results"], sort_keys=True)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_unknown_suite_method_or_scale_is_a_clear_error(tmp_path):
    from gmreg_lab.suite import peers

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
    from gmreg_lab.suite import PEERS, SUITE_SCALES, suite_runs
    assert s["scale"] == "quick" and set(s["methods"]) == set(PEERS)
    assert set(s["results"]) == set(suite_runs("mnist", SUITE_SCALES["quick"]))
    for name, r in s["results"].items():
        pgd = r["acc"]["pgd-40"]
        assert r["worst"]["robust"] <= pgd + 1e-9 and r["worst"]["n"] == SUITE_SCALES["quick"].eval_limit, name
        assert r["collapse"]["collapsed"] == (r["collapse"]["iteration"] is not None), name
    assert set(PEERS) <= set(s["bench"]["seconds_per_epoch"])
    text = (root / "SUITE.md").read_text()
    assert all(f"| {n} |" in text for n in ("FGSM-AT", "FGSM-RS", "N-FGSM", "GradAlign", "PGD-AT"))
    res = lambda m, e: s["results"][f"{m}_eps{e:g}"]          # noqa: E731
    # README: FGSM-AT collapses at eps 0.3, the proposed method does not, and keeps the lowest logit distance there
    assert res("fgsm", 0.3)["collapse"]["collapsed"] and not res("proposed", 0.3)["collapse"]["collapsed"]
    assert res("proposed", 0.3)["logit_dist"] == min(res(m, 0.3)["logit_dist"] for m in PEERS if m != "nfgsm")
    # README: at eps 0.3 the proposed method has the best worst case of the single-step methods
    assert res("proposed", 0.3)["worst"]["robust"] == max(res(m, 0.3)["worst"]["robust"] for m in PEERS)

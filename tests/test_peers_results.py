"""gmreg_lab.runners.peers_results: reading a peers-study folder (fabricated here, so the expected rows are known)
and gl.plots.seeds_comparison drawing it."""
import json
import sys
from pathlib import Path

import pytest

import gmreg_lab as gl
from gmreg_lab.errors import GmregError
from gmreg_lab.runners import peers_results as pr

ROOT = Path(__file__).resolve().parent.parent


def _run(folder, stage, name, method, batch, seed, *, value=None, warm=False, clean=97.0, robust=70.0, dead=False,
         collapse=(False, None, 80.0, 78.0)):
    cfg = {"method": method, "batch_size": batch, "seed": seed, "eps_warmup_epochs": 1.0 if warm else 0.0}
    if pr.SETTING_FIELD.get(method):
        cfg[pr.SETTING_FIELD[method]] = value
    c = dict(zip(("collapsed", "iteration", "peak", "final"), collapse))
    body = {"name": name, "config": cfg, "collapse": c, "cpu": "test CPU", "train_seconds": 10.0, "iterations": 100}
    if stage in ("grid", "warmup"):
        body["val"] = {"worst": robust, "clean": clean, "did_not_learn": dead}
    else:
        body["test"] = {"images": 1000, "clean": clean, "pgd": robust + 5, "apgd_worst_ours": robust + 1,
                        "apgd_worst_torchattacks": robust, "robust": robust, "logit_dist": 0.5,
                        "did_not_learn": dead}
    (folder / stage).mkdir(parents=True, exist_ok=True)
    (folder / stage / f"{name}.json").write_text(json.dumps(body))


@pytest.fixture
def study(tmp_path):
    """Two groups chosen (proposed and FGSM-AT at batch 32), the others missing: a study half done."""
    _run(tmp_path, "grid", "proposed-lam10-w1-b32", "proposed", 32, 0, value=10.0, warm=True, robust=78.0)
    _run(tmp_path, "grid", "proposed-lam10-w0-b32", "proposed", 32, 0, value=10.0, robust=74.0)
    _run(tmp_path, "grid", "fgsm-w0-b32", "fgsm", 32, 0, robust=0.0, collapse=(True, 500, 20.0, 0.0))
    (tmp_path / "selected.json").write_text(json.dumps({
        "chosen": {"proposed-b32": {"name": "proposed-lam10-w1-b32"}, "fgsm-b32": {"name": "fgsm-w0-b32"}},
        "incomplete": {"nfgsm-b32": ["nfgsm-k1-w0-b32"]}, "extend": {}}))
    _run(tmp_path, "final", "proposed-lam10-w1-b32-s0", "proposed", 32, 0, value=10.0, warm=True, robust=80.0)
    _run(tmp_path, "final", "proposed-lam10-w1-b32-s1", "proposed", 32, 1, value=10.0, warm=True, robust=70.0,
         collapse=(False, None, 82.0, 55.0))                                     # fell 27 points, no verdict
    _run(tmp_path, "final", "fgsm-w0-b32-s0", "fgsm", 32, 0, clean=11.0, robust=11.0, dead=True)
    _run(tmp_path, "final", "fgsm-w0-b32-s1", "fgsm", 32, 1, robust=0.5, collapse=(True, 750, 40.0, 0.0))
    _run(tmp_path, "anchor", "wong-s0", "fgsm_rs", 100, 0, value=1.25, robust=79.0)
    _run(tmp_path, "grid", "proposed-lam20-w1-b32", "proposed", 32, 0, value=20.0, warm=True, robust=77.0)   # edge
    _run(tmp_path, "grid", "proposed-lam5-w1-b64", "proposed", 64, 0, value=5.0, warm=True, robust=76.2)
    _run(tmp_path, "warmup", "proposed-lam5-w1-b64-s1", "proposed", 64, 1, value=5.0, warm=True, robust=69.2)
    (tmp_path / "study.json").write_text(json.dumps({"batches": [32, 64], "settings": {
        "fgsm": [None], "proposed": [2.0, 5.0, 10.0], "fgsm_rs": [1.0, 1.25], "nfgsm": [0.5, 1.0, 2.0],
        "gradalign": [0.1, 0.3, 1.0]}}))
    return tmp_path


def test_the_reader_agrees_with_the_study_script_on_each_methods_setting():
    sys.path.insert(0, str(ROOT / "experiments"))
    import peers_study as ps
    assert {m: v[0] for m, v in ps.SETTINGS.items()} == pr.SETTING_FIELD
    assert ps._fell is pr.fell and ps.search_rows is not None


def test_rows_summary_and_progress_of_a_half_done_study(study):
    grid = {r["name"]: r for r in pr.grid_rows(study)}
    assert grid["proposed-lam10-w1-b32"]["chosen"] and not grid["proposed-lam10-w0-b32"]["chosen"]
    assert grid["fgsm-w0-b32"]["collapsed"] and grid["proposed-lam10-w1-b32"]["value"] == 10.0

    rows = {r["name"]: r for r in pr.test_rows(study)}
    assert rows["fgsm-w0-b32-s0"]["robust"] is None and rows["fgsm-w0-b32-s0"]["pgd"] is None, \
        "a run that did not learn has no robust number"
    assert rows["proposed-lam10-w1-b32-s1"]["fell"] and not rows["proposed-lam10-w1-b32-s1"]["collapsed"]
    assert pr.test_rows(study, "anchor")[0]["method"] == "anchor"

    s = {x["method"]: x for x in pr.summary(pr.test_rows(study))}
    prop = s["proposed"]
    assert prop["robust_mean"] == 75.0 and (prop["robust_min"], prop["robust_max"]) == (70, 80)
    assert s["proposed"]["collapsed_or_fell"] == 1 and s["proposed"]["seeds"] == [0, 1]
    assert s["fgsm"]["robust_mean"] == 0.5 and s["fgsm"]["did_not_learn"] == 1, "the dead seed is left out of the mean"
    assert pr.best(pr.summary(pr.test_rows(study)))["method"] == "proposed"

    p = pr.progress(study)
    assert (p["final"], p["final_expected"], p["groups_selected"], p["groups"]) == (4, 20, 2, 10)
    assert p["groups_waiting"] == ["nfgsm-b32"] and not p["complete"] and p["final_missing_of_selected"] == []
    assert (p["grid_base"], p["grid_edge"], p["grid_planned"]) == (4, 1, 48)
    line = pr.progress_line(p)
    assert "4 of 20 final runs" in line and "N-FGSM at batch 32" in line and "4 of the grid's 48 runs" in line
    assert pr.warmup_check(study) == [{"batch": 64, "warmup": True, "seeds": {0: 76.2, 1: 69.2}}]

    sel = json.loads((study / "selected.json").read_text())       # a best at the edge of its grid: not settled yet
    sel["extend"] = {"proposed-b32": ["proposed-lam20-w0-b32", "proposed-lam20-w1-b32"]}
    (study / "selected.json").write_text(json.dumps(sel))
    p = pr.progress(study)
    assert p["groups_selected"] == 1 and p["groups_waiting"] == ["nfgsm-b32", "proposed-b32"]
    assert pr.pending(study) == [("proposed", 32)]
    assert pr.panel_notes(study) == {("nfgsm", 32): "grid runs still<br>to finish",
                                     ("proposed", 32): "choice waits for<br>its edge step"}
    rows = {r["name"]: r for r in pr.grid_rows(study)}
    assert not rows["proposed-lam10-w1-b32"]["chosen"], "not ringed while its group waits"


def test_comparison_figure_draws_each_seed_where_its_numbers_put_it(study):
    rows, published = pr.comparison_rows(study)
    assert [r["group"] for r in rows][-1] == "anchor" and list(published.values()) == [82.93]
    fig = gl.plots.seeds_comparison(rows, published=published, published_label="published (AutoAttack)")
    by_name = {}
    for t in fig.data:
        by_name.setdefault(t.name, []).append(t)
    dead = by_name["did not learn (no robust number)"]
    assert len(dead) == 1 and list(dead[0].y) == [0.0] and dead[0].marker.symbol == "square-open"
    down = by_name["robust, one seed (collapsed or fell)"]
    assert sorted(y for t in down for y in t.y) == [0.5, 70.0], "the collapsed FGSM-AT seed and the fallen proposed one"
    means = {x: y for t in by_name["mean over the seeds that learned"] for x, y in zip(t.x, t.y)}
    assert sorted(means.values()) == [0.5, 75.0, 79.0]
    assert [t.y[0] for t in by_name["published (AutoAttack)"]] == [82.93]
    assert sum(t.showlegend is not False for t in fig.data) == len(by_name), "one legend entry per kind"
    with pytest.raises(GmregError):
        gl.plots.seeds_comparison([])


def test_bad_folders_say_so_in_one_line(tmp_path):
    with pytest.raises(GmregError, match="no peers study"):
        pr.progress(tmp_path / "nowhere")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "x.json").write_text("{not json")
    with pytest.raises(GmregError, match="not a readable study result"):
        pr.test_rows(tmp_path)
    with pytest.raises(GmregError, match="final"):
        pr.test_rows(tmp_path, "grid")

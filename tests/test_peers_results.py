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
    assert ps.FELL_POINTS == pr.FELL_POINTS


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
    assert pr.ranking(pr.summary(pr.test_rows(study)), 32)["top"] == "proposed"

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


def _summary_row(method, batch, seeds_robust, dead=0, down=0):
    learned = [v for v in seeds_robust if v is not None]
    return {"method": method, "batch": batch, "value": None, "warmup": False, "seeds": list(range(len(seeds_robust))),
            "clean_mean": 98.0, "robust_mean": sum(learned) / len(learned) if learned else None,
            "robust_min": min(learned) if learned else None, "robust_max": max(learned) if learned else None,
            "did_not_learn": dead, "collapsed_or_fell": down}


def test_ranking_says_plainly_when_the_proposed_method_is_not_the_most_robust():
    rows = [_summary_row("proposed", 32, [70.0, 74.0]), _summary_row("nfgsm", 32, [78.0, 80.0]),
            _summary_row("fgsm", 32, [0.0, 1.0], down=2), _summary_row("gradalign", 32, [None, None], dead=2),
            _summary_row("proposed", 64, [60.0, 90.0]), _summary_row("anchor", 100, [79.0, 81.0])]
    r = pr.ranking(rows, 32)
    assert r["order"] == ["nfgsm", "proposed", "fgsm"] and r["top"] == "nfgsm"
    assert r["clear"] and r["overlapping_top"] == [], "74 does not reach N-FGSM's lowest seed, 78"
    assert r["proposed_rank"] == 2 and not r["proposed_is_top"]
    assert r["did_not_learn"] == ["gradalign"] and r["collapsed_or_fell"] == ["fgsm"]
    line = pr.ranking_line(r)
    assert "N-FGSM's (79.0 % [78.0, 80.0])" in line
    assert "the proposed method is not the most robust here: it ranks 2nd of 3 (72.0 % [70.0, 74.0])" in line
    assert "no seed learned: GradAlign" in line and "collapsed or fell in at least one seed: FGSM-AT" in line

    rows.append(_summary_row("fgsm_rs", 32, [72.0, 79.5], dead=1))      # its range reaches 78: not separated
    r = pr.ranking(rows, 32)
    assert r["order"][:2] == ["nfgsm", "fgsm_rs"] and r["overlapping_top"] == ["fgsm_rs"] and not r["clear"]
    assert r["proposed_rank"] == 3 and r["some_seed_did_not_learn"] == ["fgsm_rs"]
    assert "do not separate them" in pr.ranking_line(r)

    r = pr.ranking(rows, 64)
    assert r["proposed_clearly_top"] and "ranks first of 1" in pr.ranking_line(r)
    assert pr.ranking(rows, 128)["top"] is None and "no method" in pr.ranking_line(pr.ranking(rows, 128))


def test_the_table_draws_the_order_only_once_every_final_run_has_finished(study):
    sys.path.insert(0, str(ROOT / "experiments"))
    import peers_study as ps
    assert "Not drawn yet: 4 of 20 final runs" in ps.table(study)
    chosen = {}
    for i, m in enumerate(pr.SETTING_FIELD):                       # complete it: every group, two seeds each
        for b in (32, 64):
            name = f"{m}-x-b{b}"
            chosen[f"{m}-b{b}"] = {"name": name}
            for s in (0, 1):
                _run(study, "final", f"{name}-s{s}", m, b, s, value=1.0, robust=50.0 + 5 * i + s)
    for p in (study / "final").glob("*.json"):
        if "-x-" not in p.name:
            p.unlink()
    (study / "selected.json").write_text(json.dumps({"chosen": chosen, "incomplete": {}, "extend": {}}))
    assert pr.progress(study)["complete"]
    text = ps.table(study)
    assert "Not drawn yet" not in text
    section = text.split("## Order by mean robust accuracy")[1]
    assert "batch 32: the highest mean robust accuracy is GradAlign's (70.5 % [70.0, 71.0])" in section
    assert "the proposed method is not the most robust here: it ranks 4th of 5" in section


def test_seed_gap_and_anchor_verdict(study):
    gap = pr.warmup_seed_gap(pr.warmup_check(study))
    assert gap["batch"] == 64 and gap["warmup"] and abs(gap["gap"] - 7.0) < 1e-9
    assert pr.warmup_seed_gap([{"batch": 32, "warmup": False, "seeds": {0: 70.0}}]) is None
    v = pr.anchor_verdict(study)
    assert (v["seeds"], v["best_seed"], v["published"], v["reproduced"], v["fell"]) == (1, 79.0, 82.93, False, [])
    _run(study, "anchor", "wong-s1", "fgsm_rs", 100, 1, value=1.25, robust=83.0, collapse=(False, None, 90.0, 60.0))
    v = pr.anchor_verdict(study)
    assert v["reproduced"] and v["mean"] == 81.0 and [r["seed"] for r in v["fell"]] == [1]
    for p in (study / "anchor").glob("*.json"):
        p.unlink()
    assert pr.anchor_verdict(study) is None


def test_learning_curves_say_whether_a_run_was_still_rising_at_its_end(study):
    its = list(range(250, 4001, 250))                                        # 16 probes, last at 4000
    flat = [10.0 * min(i, 1000) / 1000 + 50 for i in its]                    # settled by iteration 1000
    rising = [50 + i / 100 for i in its]                                     # +10 points over the last quarter
    for name, pgd in (("proposed-lam10-w1-b32-s0", flat), ("proposed-lam10-w1-b32-s1", rising)):
        p = study / "final" / f"{name}.json"
        body = json.loads(p.read_text())
        body[pr.PROBE_KEY] = [[i, v, 98.0, 0.3] for i, v in zip(its, pgd)]
        p.write_text(json.dumps(body))
    rows = {r["name"]: r for r in pr.learning_curves(study)}
    assert rows["proposed-lam10-w1-b32-s0"]["gain"] == 0.0 and not rows["proposed-lam10-w1-b32-s0"]["cut_short"]
    # the three points after 3000 (3500, 3750, 4000) against the three up to it (2500, 2750, 3000): 10 points
    assert abs(rows["proposed-lam10-w1-b32-s1"]["gain"] - 10.0) < 1e-9 and rows["proposed-lam10-w1-b32-s1"]["cut_short"]
    assert not rows["proposed-lam10-w1-b32-s1"]["recovering"], "it never fell"
    assert rows["fgsm-w0-b32-s0"]["gain"] is None, "no probe history: nothing to tell"
    assert pr.last_quarter_gain([250, 500], [1.0, 2.0]) is None
    # an epoch-end probe two iterations after a periodic one counts once (the later)
    gain = pr.last_quarter_gain(its + [4002], rising + [90.0])
    assert gain == pytest.approx((85 + 87.5 + 90) / 3 - (75 + 77.5 + 80) / 3)
    with pytest.raises(GmregError):
        pr.learning_curves(study, "nowhere")

    p = study / "final" / "fgsm-w0-b32-s1.json"          # falls from 60 to 5, then rises again to the end
    body = json.loads(p.read_text())
    body[pr.PROBE_KEY] = [[i, v, 98.0, 0.3] for i, v in zip(its, [60.0] * 6 + [5.0] * 6 + [10, 20, 30, 40])]
    p.write_text(json.dumps(body))
    back = {r["name"]: r for r in pr.learning_curves(study)}["fgsm-w0-b32-s1"]
    assert back["cut_short"] and back["recovering"]
    sys.path.insert(0, str(ROOT / "experiments"))
    import peers_study as ps
    budget = ps.table(study).split("## Was the budget long enough?")[1].split("##")[0]
    assert "| fgsm-w0-b32-s1 | +25.0 | 60.0 → 5.0 → 40.0 | rising again after a fall |" in budget
    assert "| proposed-lam10-w1-b32-s1 | +10.0 | 90.0 → 90.0 → 90.0 | still rising: possibly cut short |" in budget
    assert "| proposed-lam10-w1-b32-s0 | +0.0 | 60.0 → 60.0 → 60.0 | — |" in budget

    fig = gl.plots.probe_curves(list(rows.values()), names=pr.METHOD_NAMES, marks={"lr cut": 0.75})
    drawn = [t for t in fig.data if t.name == "proposed"]
    assert len(drawn) == 2 and [t.line.dash for t in drawn] == ["solid", "dot"]
    assert sum(t.showlegend for t in drawn) == 1 and list(drawn[1].y) == rising
    assert fig.layout.shapes[0].x0 == 0.75 * 4000
    with pytest.raises(GmregError):
        gl.plots.probe_curves([{"method": "fgsm", "batch": 32, "seed": 0, "iterations": [], "pgd": []}])


def test_in_flight_lists_the_runs_started_and_not_finished(study, capsys):
    def run_dir(name, epochs, done, parts=()):
        d = study / "runs" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"epochs": epochs}))
        (d / "history.csv").write_text("event,iteration\n" + "log,10\n" * 3 + "epoch,20\n" * done)
        if parts:
            (d / "test-parts.json").write_text(json.dumps({"checkpoint_sha256": "x", **{p: {} for p in parts}}))
    run_dir("final-proposed-lam10-w1-b32-s0", 4, 4)                 # finished: its JSON exists, not listed
    run_dir("final-fgsm-w0-b32-s2", 4, 4, ["clean+pgd", "apgd ours"])  # seed 2 is not in the study's seeds
    (study / "study.json").write_text(json.dumps({**json.loads((study / "study.json").read_text()), "seeds": [0, 1]}))
    run_dir("final-fgsm-w0-b32-s9", 4, 1)
    run_dir("grid-nfgsm-k1-w0-b32", 2, 0)
    rows = {r["name"]: r for r in pr.in_flight(study)}
    assert set(rows) == {"fgsm-w0-b32-s2", "fgsm-w0-b32-s9", "nfgsm-k1-w0-b32"}
    r = rows["fgsm-w0-b32-s2"]
    assert (r["epochs_done"], r["epochs"], r["eval_parts_done"], r["selected"]) == (4, 4, ["clean+pgd", "apgd ours"],
                                                                                    False)
    assert pr.in_flight_line(r) == ("final fgsm-w0-b32-s2: 4 of 4 epochs trained; test evaluation not finished "
                                    "(kept: clean+pgd, apgd ours) -- not a selected setting any more: the final "
                                    "stage does not resume it")
    assert pr.in_flight_line(rows["nfgsm-k1-w0-b32"]) == "grid nfgsm-k1-w0-b32: 0 of 2 epochs trained"
    sys.path.insert(0, str(ROOT / "experiments"))
    import peers_study as ps
    src = Path(ps.__file__).read_text()
    assert all(f'"{p}": lambda' in src for p in pr.TEST_PARTS), "the reader names the study's test parts"
    assert ps.main(["--status", "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study in progress: 4 of 20 final runs") and "final fgsm-w0-b32-s2: 4 of 4" in out
    with pytest.raises(SystemExit, match="no study"):
        ps.main(["--status", "--out", str(study / "nowhere")])


PROBE = pr.PROBE_KEY


def test_final_runs_beside_the_grid_runs_that_chose_them(study):
    p = study / "final" / "proposed-lam10-w1-b32-s0.json"
    body = json.loads(p.read_text())
    body[pr.PROBE_KEY] = [[250, 40.0, 98.0, 0.3], [500, 61.0, 98.0, 0.3], [502, 62.0, 98.0, 0.3]]
    p.write_text(json.dumps(body))
    rows = {r["name"]: r for r in pr.final_against_grid(study)}
    r = rows["proposed-lam10-w1-b32-s0"]
    assert (r["grid_val_worst"], r["probe_end"], r["robust"], r["pgd"]) == (78.0, 62.0, 80.0, 85.0)
    assert r["grid_name"] == "proposed-lam10-w1-b32" and r["grid_probe_end"] is None, "the grid run kept no probe"
    g = study / "grid" / "proposed-lam10-w1-b32.json"
    body = json.loads(g.read_text())
    body.update({"iterations": 400, PROBE: [[200, 30.0, 97.0, 0.3], [400, 70.0, 97.0, 0.3]]})
    g.write_text(json.dumps(body))
    r = {r["name"]: r for r in pr.final_against_grid(study)}["proposed-lam10-w1-b32-s0"]
    assert (r["grid_iterations"], r["grid_probe_end"], r["probe_at_grid_end"]) == (400, 70.0, 40.0)
    assert rows["fgsm-w0-b32-s0"]["robust"] is None and rows["fgsm-w0-b32-s0"]["did_not_learn"]
    assert rows["fgsm-w0-b32-s1"]["grid_val_worst"] == 0.0 and rows["fgsm-w0-b32-s1"]["probe_end"] is None
    curve = {c["name"]: c for c in pr.learning_curves(study)}["proposed-lam10-w1-b32-s0"]
    assert curve["iterations"] == [250, 502] and curve["pgd"] == [40.0, 62.0], "the epoch-end twin replaces 500"

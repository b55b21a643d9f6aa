"""experiments/peers_study.py (issue 28): the study's design as configs, and a dry run of every stage end to end on a
few dozen images (grid -> select -> final -> anchor -> table), cached and refusing to mix scales."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import peers_study as ps


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_full_study_is_the_design_the_docstring_states():
    grid = ps.grid(ps.FULL)
    assert len(grid) == 48
    assert {c.method for c in grid.values()} == {"fgsm", "proposed", "fgsm_rs", "nfgsm", "gradalign"}
    for name, c in grid.items():
        assert c.eps == 0.3 and c.precision == "fp32" and not c.select_best and c.seed == 0 and c.val_size == 10_000
        assert c.batch_size in (32, 64) and (c.eps_warmup_epochs > 0) == ("-w1-" in name)
        iters = c.epochs * math.ceil(50_000 / c.batch_size)
        assert 3_000 <= iters <= 3_200, "the grid's reduced budget: about half the final one"
        assert c.lr_milestones == (c.epochs * 0.5, c.epochs * 0.75) and c.lr_gamma == 0.2
    assert {grid[n].nfgsm_k for n in grid if n.startswith("nfgsm")} == {0.5, 1.0, 2.0}
    assert {grid[n].rs_step for n in grid if n.startswith("fgsm_rs")} == {1.0, 1.25}
    assert {grid[n].align_lam for n in grid if n.startswith("gradalign")} == {0.1, 0.3, 1.0}
    assert grid["gradalign-al0.3-w1-b64"].eps_warmup_epochs == 1.0           # a quarter of 4 epochs
    for batch, epochs in ps.FULL.final_epochs.items():
        assert epochs * math.ceil(50_000 / batch) >= 6_000, "at least Wong et al.'s ~6,000 iterations"
    wong = ps.anchor_config(0, ps.FULL)
    assert (wong.model, wong.method, wong.eps, wong.rs_step * wong.eps, wong.epochs, wong.batch_size) == \
        ("wong_cnn", "fgsm_rs", 0.3, pytest.approx(0.375), 10, 100)
    assert (wong.optimizer, wong.lr, wong.lr_schedule, wong.lr_peak, wong.weight_decay, wong.val_size,
            wong.rs_clip_start) == ("adam", 5e-3, "cyclic", 0.4, 0.0, 0, False)
    assert wong.epochs * math.ceil(60_000 / wong.batch_size) == 6_000


def test_dry_run_of_every_stage(tmp_path, one_thread, monkeypatch, capsys):
    out = tmp_path / "study"
    common = ["--out", str(out), "--dry-run", "--methods", "fgsm,fgsm_rs", "--batches", "32"]
    assert ps.main(["--stage", "grid", *common]) == 0
    grid = {p.stem: json.loads(p.read_text()) for p in (out / "grid").glob("*.json")}
    assert set(grid) == {"fgsm-w0-b32", "fgsm-w1-b32", "fgsm_rs-rs1-w0-b32", "fgsm_rs-rs1-w1-b32",
                         "fgsm_rs-rs1.25-w0-b32", "fgsm_rs-rs1.25-w1-b32"}
    r = grid["fgsm_rs-rs1.25-w1-b32"]
    assert r["config"]["eps_warmup_epochs"] > 0 and r["cpu"] and "peers_study.py --stage grid" in r["command"]
    assert r["val"]["split"].startswith("train_val_split") and r["val"]["images"] == ps.DRY.val_images
    assert set(r["val"]) >= {"clean", "worst", "did_not_learn", "majority_pct", "top_pred_pct"}
    probe = r["probe (iteration, pgd10 %, clean %, eps_train)"]
    assert probe[0][3] < 0.3 and set(r["collapse"]) == {"collapsed", "iteration", "peak", "final"}
    stamps = {p: p.stat().st_mtime_ns for p in (out / "grid").glob("*.json")}
    # this checkout scores a finished run as it was scored when it was made (the dry scale: rescore reads FULL's
    # image count, so compare on the run's own scale by patching it in)
    import peers_rescore
    monkeypatch.setattr(peers_rescore.ps, "FULL", ps.DRY)
    assert peers_rescore.main(["--out", str(out), "fgsm_rs-rs1.25-w1-b32"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["stored"] == line["now"] and line["name"] == "fgsm_rs-rs1.25-w1-b32"
    monkeypatch.undo()

    assert ps.main(["--stage", "select", *common]) == 0
    sel = json.loads((out / "selected.json").read_text())
    assert set(sel["chosen"]) == {"fgsm-b32", "fgsm_rs-b32"} and "validation" in sel["rule"]
    assert all(c["name"] in grid for c in sel["chosen"].values())
    # FGSM-RS's grid has two values, so its best is at an end: one step beyond it first (beyond both ends when the
    # two values tie), and final waits for it
    c = sel["chosen"]["fgsm_rs-b32"]
    tied = {grid[n]["config"]["rs_step"] for n, v in c["candidates"].items() if v["val_worst"] == c["val_worst"]}
    sides = [ps.EDGE["fgsm_rs"][0 if v == 1.0 else 1] for v in sorted(tied)]
    side = sides[0]
    assert sel["extend"] == {"fgsm_rs-b32": [f"fgsm_rs-rs{v:g}-w{w}-b32" for v in sides for w in (0, 1)]}
    assert ps.main(["--stage", "final", *common, "--seeds", "0"]) == 0          # only the groups that are final
    assert sorted(p.stem for p in (out / "final").glob("*.json")) == ["fgsm-w0-b32-s0"] or \
        sorted(p.stem for p in (out / "final").glob("*.json")) == ["fgsm-w1-b32-s0"]
    early = {p: p.stat().st_mtime_ns for p in (out / "final").glob("*.json")}
    assert ps.main(["--stage", "extend", *common]) == 0
    ext = json.loads((out / "grid" / f"fgsm_rs-rs{side:g}-w1-b32.json").read_text())
    assert ext["config"]["rs_step"] == side and ext["config"]["seed"] == ps.GRID_SEED and ext["stage"] == "grid"
    assert ext["code"]["source_sha256"] and "git_commit" in ext["code"]
    assert ps.main(["--stage", "select", *common]) == 0
    sel = json.loads((out / "selected.json").read_text())
    assert sel["extend"] == {} and len(sel["chosen"]["fgsm_rs-b32"]["candidates"]) == 4 + 2 * len(sides)

    assert ps.main(["--stage", "final", *common, "--seeds", "0,1"]) == 0
    final = {p.stem: json.loads(p.read_text()) for p in (out / "final").glob("*.json")}
    assert len(final) == 4 and {r["config"]["seed"] for r in final.values()} == {0, 1}
    assert all(p.stat().st_mtime_ns == m for p, m in early.items()), "a finished final run is never redone"
    t = next(iter(final.values()))["test"]
    assert set(t) >= {"clean", "pgd", "apgd_worst_ours", "apgd_worst_torchattacks", "robust", "logit_dist",
                      "did_not_learn"} and t["robust"] == min(t["apgd_worst_ours"], t["apgd_worst_torchattacks"])

    assert ps.main(["--stage", "anchor", "--out", str(out), "--dry-run", "--seeds", "0"]) == 0
    anchor = json.loads((out / "anchor" / "wong-s0.json").read_text())
    assert anchor["config"]["model"] == "wong_cnn" and anchor["config"]["optimizer"] == "adam"
    assert anchor["threads"] == 1

    assert ps.main(["--stage", "warmup", "--out", str(out), "--dry-run", "--batches", "32"]) == 0
    warm = {p.stem: json.loads(p.read_text()) for p in (out / "warmup").glob("*.json")}
    assert set(warm) == {"proposed-lam5-w0-b32-s1", "proposed-lam5-w1-b32-s1"}
    assert {(r["config"]["lam"], r["config"]["seed"], r["config"]["eps_warmup_epochs"] > 0) for r in warm.values()} \
        == {(5.0, 1, False), (5.0, 1, True)} and all("worst" in r["val"] for r in warm.values())

    assert ps.main(["--table", "--out", str(out)]) == 0
    text = (out / "TABLE.md").read_text()
    rows = ps.peers_results.grid_rows(out)
    n_grid = 6 + 2 * len(sides)
    assert len(rows) == len(list((out / "grid").glob("*.json"))) == n_grid and sum(r["chosen"] for r in rows) == 2
    page = (out / "grid.html").read_text()
    assert len(page) > 100_000 and "Issue 28 study: the grid" in page
    final_page = (out / "final.html").read_text()
    assert "Issue 28 study: the final comparison" in final_page and "published (AutoAttack" in final_page
    assert "## Grid" in text and "## Final" in text and "## Anchor" in text and "82.93" in text
    assert "## Time taken" in text and f"| grid | {n_grid} |" in text
    assert "## ε warm-up check" in text and "| 32 | off | s1: " in text and "| 32 | on | s1: " in text

    assert ps.main(["--stage", "grid", *common]) == 0                     # cached: nothing recomputed
    assert all(p.stat().st_mtime_ns == m for p, m in stamps.items())
    with pytest.raises(SystemExit, match="holds a study at scale 'dry-run'"):
        ps.main(["--stage", "grid", "--out", str(out), "--methods", "fgsm", "--batches", "32"])


def test_a_diverged_run_is_recorded_as_did_not_learn(tmp_path, monkeypatch):
    """A setting whose loss becomes NaN is an outcome of the grid, not a crash of the study: its JSON says so and
    the selection passes it over."""
    import gmreg_lab as gl

    def diverge(*a, **k):
        raise gl.errors.TrainingDiverged("training loss became NaN/Inf at iteration 3")
    monkeypatch.setattr(ps.gl, "train", diverge)
    cfg = ps.grid(ps.DRY, ("nfgsm",), (32,))["nfgsm-k2-w0-b32"]
    r = ps.run("grid", "nfgsm-k2-w0-b32", cfg.to_dict(), str(tmp_path), "dry-run", "test")
    assert "NaN" in r["diverged"] and r["val"]["did_not_learn"] and not r["collapse"]["collapsed"]
    saved = json.loads((tmp_path / "grid" / "nfgsm-k2-w0-b32.json").read_text())
    assert saved["diverged"] == r["diverged"] and saved["val"] == r["val"]
    assert ps.run("grid", "nfgsm-k2-w0-b32", cfg.to_dict(), str(tmp_path), "dry-run", "test") == saved   # cached


def test_the_table_says_when_a_probe_fell_without_the_collapse_verdict():
    """A run whose PGD probe fell far from its peak but not under 10 % (the anchor's seed 2: 79 -> 23.5 %) must not
    read as 'no collapse'; a steady run and a declared collapse read as such."""
    def res(seed, collapsed, peak, final, it=None):
        return {"config": {"seed": seed}, "collapse": {"collapsed": collapsed, "iteration": it, "peak": peak,
                                                        "final": final}}
    text = ps._collapse_text([res(0, False, 93.5, 91.0), res(2, False, 79.0, 23.5), res(4, True, 48.5, 5.5, 1500)])
    steady, fell, collapsed = text.split("; ")
    assert steady == "s0: no (peak 94, final 91)"
    assert "fell" in fell and "79 → 24" in fell and "no" not in fell.split(":")[1][:4]
    assert collapsed.startswith("s4: at 1500") and "48 → 6" in collapsed   # rounded to whole points
    assert ps._collapse_text([res(1, False, None, None)]) == "s1: no (peak —, final —)"


def _fake_grid_run(out, m, value, warm, batch, worst):
    fld = ps.SETTINGS[m][0]
    name = ps.setting_name(m, value, warm, batch)
    (out / "grid").mkdir(parents=True, exist_ok=True)
    (out / "grid" / f"{name}.json").write_text(json.dumps({
        "name": name, "config": {fld: value, "eps_warmup_epochs": 0.5 if warm else 0.0, "seed": ps.GRID_SEED},
        "val": {"worst": worst, "clean": 97.0, "did_not_learn": False},
        "collapse": {"collapsed": False, "iteration": None, "peak": worst, "final": worst}}))


def test_a_best_setting_at_an_end_of_the_grid_asks_for_one_step_beyond_it(tmp_path):
    """The pre-registered edge rule, on fabricated grid results: an interior best asks for nothing; a best at the
    top asks for EDGE's upper step (both warm-ups), and once those ran, the choice among all settings is final even
    if the extension wins (one step only, flagged as the end of the search)."""
    lams = ps.SETTINGS["proposed"][1]
    for lam, worst in zip(lams, (60.0, 75.0, 70.0)):           # interior best (lambda 5)
        for warm in (False, True):
            _fake_grid_run(tmp_path, "proposed", lam, warm, 32, worst + warm)
    sel = ps.select(tmp_path, ps.FULL, ("proposed",), (32,))
    assert sel["extend"] == {} and sel["chosen"]["proposed-b32"]["value"] == 5.0
    assert not sel["chosen"]["proposed-b32"]["at_edge_of_search"]

    _fake_grid_run(tmp_path, "proposed", lams[-1], True, 32, 80.0)   # now the top of the grid is best
    sel = ps.select(tmp_path, ps.FULL, ("proposed",), (32,))
    up = ps.EDGE["proposed"][1]
    assert sel["extend"] == {"proposed-b32": [f"proposed-lam{up:g}-w0-b32", f"proposed-lam{up:g}-w1-b32"]}
    assert f"| {ps.setting_name('proposed', lams[-1], True, 32)} |" in ps.table(tmp_path).split("best so far")[0]
    runs = ps.extend_runs(sel, ps.FULL)
    assert {n: (c.lam, c.eps_warmup_epochs > 0, c.batch_size, c.seed) for n, c in runs.items()} == {
        f"proposed-lam{up:g}-w0-b32": (up, False, 32, ps.GRID_SEED),
        f"proposed-lam{up:g}-w1-b32": (up, True, 32, ps.GRID_SEED)}

    _fake_grid_run(tmp_path, "proposed", up, False, 32, 85.0)         # one extension finished, the other not yet
    sel = ps.select(tmp_path, ps.FULL, ("proposed",), (32,))
    assert "proposed-b32" not in sel["chosen"] and sel["incomplete"] == {"proposed-b32": [f"proposed-lam{up:g}-w1-b32"]}
    assert list(ps.extend_runs(sel, ps.FULL)) == [f"proposed-lam{up:g}-w1-b32"]   # still asked for

    for warm in (False, True):                                        # the extension ran, and wins
        _fake_grid_run(tmp_path, "proposed", up, warm, 32, 85.0)
    sel = ps.select(tmp_path, ps.FULL, ("proposed",), (32,))
    c = sel["chosen"]["proposed-b32"]
    assert sel["extend"] == {} and c["value"] == up and c["at_edge_of_search"] and len(c["candidates"]) == 8
    assert "best so far" not in ps.table(tmp_path) and f"lam{up:g}-w0-b32 | 97.0 | 85.0 |" in ps.table(tmp_path)
    assert ps.table(tmp_path).count("**yes**") == 1
    assert ps.extension_runs("proposed", up, 32, tmp_path) == []      # never a second step
    assert ps.extension_runs("fgsm", None, 32, tmp_path) == []        # FGSM-AT has no setting to search


def test_a_tie_between_both_ends_of_the_grid_asks_for_a_step_beyond_each(tmp_path):
    """FGSM-RS at batch 32 tied at 73.0 between step 1.0 and 1.25 (both ends of its grid): the tie rule picks 1.0,
    and both steps beyond (0.75 and 1.5) are asked for, not only the one beside the pick."""
    lo, hi = ps.SETTINGS["fgsm_rs"][1]
    for v, warm, worst in ((lo, False, 51.2), (lo, True, 73.0), (hi, False, 37.7), (hi, True, 73.0)):
        _fake_grid_run(tmp_path, "fgsm_rs", v, warm, 32, worst)
    sel = ps.select(tmp_path, ps.FULL, ("fgsm_rs",), (32,))
    down, up = ps.EDGE["fgsm_rs"]
    assert sel["chosen"]["fgsm_rs-b32"]["value"] == lo
    assert sel["extend"] == {"fgsm_rs-b32": [f"fgsm_rs-rs{down:g}-w0-b32", f"fgsm_rs-rs{down:g}-w1-b32",
                                              f"fgsm_rs-rs{up:g}-w0-b32", f"fgsm_rs-rs{up:g}-w1-b32"]}
    for v in (down, up):
        for warm in (False, True):
            _fake_grid_run(tmp_path, "fgsm_rs", v, warm, 32, 60.0)
    sel = ps.select(tmp_path, ps.FULL, ("fgsm_rs",), (32,))
    assert sel["extend"] == {} and sel["chosen"]["fgsm_rs-b32"]["value"] == lo


def test_a_stopped_test_evaluation_resumes_after_its_last_finished_part(tmp_path, monkeypatch, one_thread):
    import gmreg_lab as gl
    torch.manual_seed(0)
    cfg = gl.TrainConfig(dataset="mnist", method="fgsm", eps=0.3)
    model = gl.models.build(cfg.model, cfg.dataset).eval()
    (tmp_path / gl.runs.CHECKPOINT).write_bytes(b"weights one")
    oracle = ps._test(model, cfg, ps.DRY)                       # one pass, nothing kept
    first = ps._test(model, cfg, ps.DRY, tmp_path)
    parts = json.loads((tmp_path / ps.TEST_PARTS).read_text())
    assert set(parts) == {"checkpoint_sha256", "clean+pgd", "apgd ours", "apgd torchattacks", "logit distance"}
    strip = lambda t: {k: v for k, v in t.items() if k != "eval_seconds"}      # noqa: E731
    assert strip(json.loads(json.dumps(oracle, default=str))) == strip(first)

    def refuse(*a, **k):
        raise AssertionError("a finished part was computed again")
    # stopped after its first two parts: the other two are computed, the first two read back
    for k in ("apgd torchattacks", "logit distance"):
        del parts[k]
    (tmp_path / ps.TEST_PARTS).write_text(json.dumps(parts))
    monkeypatch.setattr(gl.evaluate, "evaluate", refuse)
    monkeypatch.setattr(gl.evaluate, "worst_case", refuse)
    again = ps._test(model, cfg, ps.DRY, tmp_path)
    assert strip(again) == strip(first)

    (tmp_path / gl.runs.CHECKPOINT).write_bytes(b"weights two")   # another model: nothing kept is reused
    with pytest.raises(AssertionError, match="computed again"):
        ps._test(model, cfg, ps.DRY, tmp_path)

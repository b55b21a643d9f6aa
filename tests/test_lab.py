"""lab: the notebooks' recipes, cached runs, early checkpoints (snapshots) and timing; the CIFAR fixture."""

import shutil
import time

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.views import lab
from gmreg_lab.fixtures import make_cifar10_fixture


def test_recipes_are_valid_configs_and_smoke_is_tiny():
    for name in lab.RECIPES:
        extra = {"eat_sources": ("runs/a",)} if name == "eat" else {}   # (lab.eat_recipe trains the sources)
        full, smoke = lab.recipe(name, **extra), lab.recipe(name, smoke=True, **extra)
        assert full.method == smoke.method and smoke.limit == 64 and smoke.probe_size == 32
    assert lab.recipe("lambda0").lam == 0 and lab.recipe("proposed", lam=2.0).lam == 2.0
    with pytest.raises(ValueError, match="unknown recipe"):
        lab.recipe("nope")


def test_run_name_is_config_specific():
    a, b = lab.recipe("proposed"), lab.recipe("proposed", lam=1.0)
    assert lab.run_name(a) == lab.run_name(lab.recipe("proposed")) != lab.run_name(b)
    assert "proposed-lam5" in lab.run_name(a) and "lam" not in lab.run_name(lab.recipe("fgsm"))


def test_smoke_runs_go_to_a_temp_dir_and_full_runs_to_runs(monkeypatch, tmp_path):
    assert "gmreg-smoke-runs-" in str(lab.runs_dir(smoke=True))
    monkeypatch.delenv(lab.ENV_RUNS_DIR, raising=False)
    assert lab.runs_dir().name == "runs"
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    assert lab.runs_dir() == tmp_path


def test_cached_train_trains_once(monkeypatch, tmp_path):
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    cfg = lab.recipe("fgsm", smoke=True)
    seen = []
    first = lab.cached_train(cfg, callback=seen.append)
    assert seen and (tmp_path / lab.run_name(cfg) / "checkpoint.pt").is_file()
    seen.clear()
    t = time.perf_counter()
    again = lab.cached_train(cfg, callback=seen.append)
    assert not seen and time.perf_counter() - t < 5          # returned from the cache, no training
    assert again.history == first.history
    for a, b in zip(first.last_model.parameters(), again.last_model.parameters()):
        assert torch.equal(a, b)


def test_snapshot_is_an_early_checkpoint_of_the_same_run(monkeypatch, tmp_path):
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    cfg = lab.recipe("fgsm", smoke=True, limit=128)           # 4 iterations, one log row each
    run = lab.cached_train(cfg, snapshot_at=(2,))
    early = gl.load_model(run.run_dir, which="iter:2")
    stopped = gl.train(cfg, callback=lambda r: r["event"] == "log" and r["iteration"] >= 2, progress=False)
    assert stopped.stopped and lab.log_rows(stopped.history)[-1]["iteration"] == 2
    for a, b in zip(early.parameters(), stopped.last_model.parameters()):
        assert torch.equal(a, b)                            # the weights of the same run after iteration 2
    assert not torch.equal(next(early.parameters()), next(run.last_model.parameters()))
    with pytest.raises(ValueError, match="snapshot"):
        lab.cached_train(cfg, snapshot_at=(0,))
    with pytest.raises(ValueError, match="past the end"):
        lab.cached_train(cfg, snapshot_at=(9,))


def test_a_cached_run_without_the_snapshot_is_trained_again(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    cfg = lab.recipe("fgsm", smoke=True)                      # 2 iterations
    old = lab.cached_train(cfg)                               # as the notebooks cached it: no snapshots
    with pytest.raises(ValueError, match="no snapshot"):
        gl.load_model(old.run_dir, which="iter:1")
    seen = []
    new = lab.cached_train(cfg, snapshot_at=(1,), callback=seen.append)
    assert seen and "training it again" in caplog.text      # trained for real, with a warning
    gl.load_model(new.run_dir, which="iter:1")
    for a, b in zip(old.last_model.parameters(), new.last_model.parameters()):
        assert torch.equal(a, b)                            # same config and seed: the same final weights
    seen.clear()
    again = lab.cached_train(cfg, snapshot_at=(1,), callback=seen.append)
    assert not seen and again.history == new.history        # now cached with its snapshot
    other = lab.recipe("normal", smoke=True)
    shutil.copytree(old.run_dir, lab.run_dir(other))          # a folder holding another config's run
    with pytest.raises(ValueError, match="different run"):
        lab.cached_train(other, snapshot_at=(1,))              # reported, never overwritten
    assert gl.runs.load_checkpoint(lab.run_dir(other))["config"]["method"] == "fgsm"


def test_seconds_per_epoch_scales_by_images():
    cfg = lab.recipe("normal", smoke=True)
    res = gl.train(cfg, progress=False)
    s = lab.seconds_per_epoch(res, images=64)
    assert s == pytest.approx(res.metrics["train_seconds"])
    assert lab.seconds_per_epoch(res) == pytest.approx(s * 50_000 / 64)


def test_cifar_fixture_loads_and_trains(tmp_path):
    pytest.importorskip("torchvision")
    root = make_cifar10_fixture(tmp_path, n_per_batch=8)
    tr, te = gl.data.load("cifar10", "train", root), gl.data.load("cifar10", "test", root)
    assert (len(tr), len(te)) == (40, 8) and tr.images.shape[1:] == (3, 32, 32)
    with pytest.raises(ValueError, match="n_per_batch"):
        make_cifar10_fixture(tmp_path, n_per_batch=0)


def test_lab_and_fixtures_are_lazy_package_attributes():
    assert gl.lab is lab and gl.fixtures.make_cifar10_fixture is make_cifar10_fixture
    assert {"lab", "fixtures"} <= set(gl.__all__)
    for gone in ("sweep", "train_until", "masking_checklist"):   # one implementation each: the core's
        assert not hasattr(lab, gone)


def test_estimate_is_measured_here_and_scales_with_the_run(monkeypatch):
    monkeypatch.setattr(lab, "_SPEED", {})
    cfg = lab.recipe("proposed", smoke=True, limit=320)            # 10 iterations, a probe row after each
    one = lab.estimate_seconds(cfg)
    per_step, per_probe = next(iter(lab._SPEED.values()))
    assert per_step > 0 and per_probe > 0 and len(lab._SPEED) == 1
    assert one == pytest.approx(cfg.iterations * per_step + (cfg.iterations / cfg.log_every + 1) * per_probe
                                + per_probe * cfg.select_size / cfg.probe_size * 0.3)
    longer = cfg.replace(limit=640, log_every=2)                   # twice the steps, the same number of rows
    two = lab.estimate_seconds(longer)
    assert len(lab._SPEED) == 1, "the same step and probe: measured once"
    assert two - one == pytest.approx(10 * per_step)
    assert lab.estimate_seconds(lab.recipe("pgd", smoke=True)) > 0 and len(lab._SPEED) == 2


def test_a_run_to_train_is_labelled_with_its_estimate_and_a_cached_one_is_not(monkeypatch, tmp_path):
    monkeypatch.setattr(lab, "estimate_seconds", lambda cfg, device="auto": 95.0)
    monkeypatch.setattr(lab, "ESTIMATE_FROM", 2)                  # (200 iterations in real use)
    seen = []
    real = lab.train
    monkeypatch.setattr(lab, "train", lambda *a, **kw: (seen.append(kw["progress"]), real(*a, **kw))[1])
    cfg = lab.recipe("normal", smoke=True)                      # 2 iterations
    lab.cached_train(cfg, root=tmp_path)
    lab.cached_train(cfg, root=tmp_path)                           # cached: nothing to estimate
    lab.cached_train(cfg, root=tmp_path, snapshot_at=(1,))         # cached without that snapshot: trains again
    lab.cached_train(cfg.replace(seed=1), root=tmp_path, progress=False)
    lab.cached_train(lab.recipe("normal", smoke=True, limit=32), root=tmp_path)   # 1 iteration: too short
    label = f"trains normal, {cfg.iterations} iterations: about 1.6 min on this machine"
    assert seen == [label, True, label, False, True]
    assert lab.format_seconds(42) == "42 s" and lab.format_seconds(600) == "10.0 min"


def test_cached_train_many_trains_side_by_side_then_returns_the_cached_runs(tmp_path, caplog):
    """Two uncached runs train in two worker processes under one labelled bar; the results are what cached_train
    returns for each (same history, same weights); a second call trains nothing, and one process is used when only
    one run is left to train."""
    cfgs = {"fgsm": lab.recipe("fgsm", smoke=True, limit=128), "proposed": lab.recipe("proposed", smoke=True,
                                                                                       limit=128)}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with caplog.at_level("INFO", logger="gmreg_lab.views.lab"):
            many = lab.cached_train_many(cfgs, root=tmp_path, jobs=2)
    finally:
        torch.set_num_threads(threads)
    assert any("trains 2 runs in 2 processes" in r.getMessage() and "on this machine" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert set(many) == set(cfgs)
    for name, cfg in cfgs.items():
        assert (tmp_path / lab.run_name(cfg) / "metrics.json").is_file()
        one = lab.cached_train(cfg, root=tmp_path)
        assert one.history == many[name].history and many[name].metrics["iterations"] == cfg.iterations
        for a, b in zip(one.last_model.parameters(), many[name].last_model.parameters()):
            assert torch.equal(a, b)
    caplog.clear()
    with caplog.at_level("INFO", logger="gmreg_lab.views.lab"):
        again = lab.cached_train_many(cfgs, root=tmp_path, jobs=2)
    assert not any("processes" in r.getMessage() for r in caplog.records), "nothing left to train"
    assert again["fgsm"].history == many["fgsm"].history


def test_course_time_reads_the_manifest_and_says_when_it_cannot(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv(lab.ENV_COURSE_BUILD, raising=False)
    m = tmp_path / "MANIFEST.json"
    m.write_text(json.dumps({"03_x": {"seconds": 600.0, "trained_runs": 2, "training_seconds": 480.0,
                                      "started": "2026-12-02T08:00:00+00:00", "machine": "Some CPU"}}))
    text = lab.course_time("03_x", manifest=m)
    assert text.startswith("How long, in the course build of 2026-12-02T08:00:00+00:00 on Some CPU")
    assert "first run 10.0 min, 8.0 min of it with runs training (wall clock, probes included: 2 run(s))" in text
    assert "about 2.0 min" in text
    assert "no course build has timed 04_y" in lab.course_time("04_y", manifest=m)
    assert "no course build" in lab.course_time("03_x", manifest=tmp_path / "missing.json")
    monkeypatch.setenv(lab.ENV_COURSE_BUILD, "1")
    text = lab.course_time("03_x", manifest=m)
    assert "this page was made by the course build" in text and "in the build before it of 2026-12-02T08:00" in text
    assert "first run 10.0 min" in text, "a page made by a build still prints the first run's time"


def test_record_writes_a_curve_that_recorded_reads_back_with_its_machine(monkeypatch, tmp_path):
    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path / "runs"))
    path = lab.record("fgsm", out_dir=tmp_path / "rec", smoke=True, progress=False)
    rec = lab.recorded("fgsm", path=path)
    assert not lab.run_dir(lab.recipe("fgsm", smoke=True), smoke=True).exists(), \
        "record trains in a folder of its own: never a run a notebook would then find cached without its snapshots"
    run = gl.train(lab.recipe("fgsm", smoke=True), tmp_path / "same", progress=False)   # same config, same seed
    assert rec["config"] == lab.recipe("fgsm", smoke=True)
    assert rec["rows"] == [{k: r[k] for k in lab.RECORDED_KEYS if k in r} for r in lab.log_rows(run.history)]
    env = run.metrics["environment"]
    assert rec["label"].startswith("recorded: ") and env["time"][:10] in rec["label"]
    assert env["cpu"].split(",")[0] in rec["label"] and "with its probes" in rec["label"]
    assert rec["wall_seconds"] >= rec["train_seconds"] > 0
    with pytest.raises(gl.errors.GmregError, match="gmreg-lab record nfgsm"):
        lab.recorded("nfgsm", path=tmp_path / "rec" / "nfgsm.json")
    for broken in ("{not json", '{"rows": []}', '{"config": {"method": "fgsm"}, "rows": []}',
                   '{"config": {"no_such_field": 1}, "rows": [{"iteration": 1}]}'):
        (tmp_path / "bad.json").write_text(broken)
        with pytest.raises(gl.errors.GmregError, match="re-make it with `gmreg-lab record fgsm`"):
            lab.recorded("fgsm", path=tmp_path / "bad.json")


def test_the_packaged_recorded_curves_are_the_recipes_runs_and_show_what_02_says():
    """Notebook 02 draws ``recorded("fgsm")`` at once: it must be a run of today's recipe (a changed recipe makes it
    stale: re-record with ``gmreg-lab record fgsm``), made by a named machine, and show the collapse the notebook
    describes (``gl.diagnostics.collapse``: the PGD probe under 10 % for good after a peak of at least 15 %) while
    the FGSM probe climbs."""
    rec = lab.recorded("fgsm")
    assert rec["config"] == lab.recipe("fgsm"), "stale: re-record with `gmreg-lab record fgsm`"
    env = rec["environment"]
    assert env.get("cpu") and env.get("time") and env.get("command") and env.get("source_sha256")
    c = gl.diagnostics.collapse(rec["rows"])
    assert c["collapsed"], c
    last = rec["rows"][-1]
    assert last["acc_pgd"] < 10 and last["acc_fgsm"] > last["acc_pgd"] + 50, last


def test_machine_line_says_when_the_precision_is_forced(monkeypatch):
    from gmreg_lab import runtime

    try:
        for forced in ("fp32", "bf16"):
            monkeypatch.setenv(runtime.ENV_PRECISION, forced)
            runtime._auto_precision.cache_clear()
            assert lab.machine().endswith(f"computes in {forced} here (set by $GMREG_PRECISION={forced})")
        monkeypatch.delenv(runtime.ENV_PRECISION)
        runtime._auto_precision.cache_clear()
        assert "set by" not in lab.machine()
    finally:
        runtime._auto_precision.cache_clear()


def test_cached_run_of_the_other_precision_is_flagged(monkeypatch, tmp_path, caplog):
    """A folder's name holds precision "auto"; a run cached where auto meant bf16 comes back with a warning where
    auto means fp32 (and no warning when they agree)."""
    import logging

    from gmreg_lab import runtime

    monkeypatch.setenv(lab.ENV_RUNS_DIR, str(tmp_path))
    cfg = lab.recipe("fgsm", smoke=True, limit=64).replace(precision="auto")    # smoke recipes pin fp32
    try:
        monkeypatch.setenv(runtime.ENV_PRECISION, "bf16")
        runtime._auto_precision.cache_clear()
        first = lab.cached_train(cfg, progress=False)
        assert first.config.precision == "bf16"
        with caplog.at_level(logging.WARNING, logger=lab.log.name):
            lab.cached_train(cfg, progress=False)
        assert "was trained in" not in caplog.text
        monkeypatch.setenv(runtime.ENV_PRECISION, "fp32")
        runtime._auto_precision.cache_clear()
        with caplog.at_level(logging.WARNING, logger=lab.log.name):
            again = lab.cached_train(cfg, progress=False)
        assert again.config.precision == "bf16" and again.history == first.history      # the cached run, not retrained
        assert "was trained in bf16, and precision 'auto' computes in fp32 here" in caplog.text
    finally:
        runtime._auto_precision.cache_clear()

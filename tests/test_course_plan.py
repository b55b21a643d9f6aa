"""The course build's plan (gmreg_lab/runners/course_plan.py): the runs a notebook asks for are recorded, and the
next build trains them up front, side by side, EAT after its sources, so that the notebooks find them cached."""

import json

import pytest

from gmreg_lab.runners import cache, course, course_plan
from gmreg_lab.views import lab


def test_the_schedule_takes_the_longest_chain_first_and_waits_for_eat_sources():
    seconds = {"long": 10.0, "mid": 6.0, "a": 1.0, "b": 1.0, "eat": 5.0, "short": 2.0}
    deps = {"eat": ["a", "b"]}
    order, makespan = course_plan.schedule(seconds, deps, lanes=2)
    assert order[0] == "long" and set(order) == set(seconds)
    assert order.index("eat") > max(order.index("a"), order.index("b"))
    assert makespan == pytest.approx(13.0)     # long (10) + short (2) ... ; mid 6 + a 1 + b 1 + eat 5 = 13
    assert course_plan.schedule(seconds, deps, lanes=1)[1] == pytest.approx(sum(seconds.values()))
    # one lane: longest first is a permutation of everything, with the sources before EAT
    one = course_plan.schedule(seconds, deps, lanes=1)[0]
    assert one.index("eat") > max(one.index("a"), one.index("b"))


def test_a_build_records_the_runs_its_notebook_asked_for_and_the_next_one_trains_them_up_front(tmp_path,
                                                                                                monkeypatch):
    """What a notebook asks the cache for is logged (``$GMREG_COURSE_USED``), turned into plan entries (EAT's
    sources relative to the runs folder, snapshots kept), and a later build with an empty runs folder trains them
    in two processes, after which ``cached_train`` finds every one of them cached (nothing trains again)."""
    first, second = tmp_path / "runs1", tmp_path / "runs2"
    used = tmp_path / "used.log"
    monkeypatch.setenv(course_plan.ENV_USED, str(used))
    fgsm = lab.recipe("fgsm", smoke=True, limit=96, precision="auto")   # a checkpoint stores "auto" resolved
    srcs = {s: lab.recipe(s, smoke=True, precision="auto") for s in ("normal_a", "normal_b")}
    lab.cached_train(fgsm, root=first, snapshot_at=(2,), progress=False)
    runs = {s: lab.cached_train(c, root=first, progress=False) for s, c in srcs.items()}
    eat = lab.recipe("eat", smoke=True, precision="auto", eat_sources=tuple(str(r.run_dir) for r in runs.values()))
    lab.cached_train(eat, root=first, progress=False)
    monkeypatch.delenv(course_plan.ENV_USED)
    folders = course_plan.used_runs(used)
    assert [f["dir"].name for f in folders] == [cache.run_name(c) for c in (fgsm, *srcs.values(), eat)]
    entries = course_plan.plan_entries(folders, first)
    assert [e["name"] for e in entries] == [f["dir"].name for f in folders]
    assert all(e["config"]["precision"] == "auto" for e in entries), "the config asked for, not the resolved one"
    assert entries[0]["snapshot_at"] == [2]
    assert all(s.startswith(course_plan.RUNS_PREFIX) for s in entries[-1]["config"]["eat_sources"])
    json.dumps(entries)                                         # the manifest stores them as they are

    manifest = {"04_x": {"runs": entries[:2]}, "05_y": {"runs": entries[1:]}, "06_z": {}}
    assert course_plan.plan_from_manifest(manifest, ["04_x", "05_y", "06_z"]) == entries, "each run once"
    assert course_plan.plan_from_manifest(manifest, ["05_y"]) == entries[1:]

    done = course_plan.pretrain(entries, second, jobs=2, device="cpu", progress=False)
    assert not done["failed"] and len(done["trained"]) == 4 and done["processes"] == 2
    eat2 = course_plan.rebase(entries[-1], second)
    assert all(str(second) in s for s in eat2.eat_sources)
    stamps = course.run_stamps(second)
    for cfg in (fgsm, *srcs.values(), eat2):
        res = lab.cached_train(cfg, root=second, snapshot_at=(2,) if cfg is fgsm else (), progress=False)
        assert res.metrics["complete"]
    assert course.run_stamps(second) == stamps, "every run was cached: none trained again"
    again = course_plan.pretrain(entries, second, jobs=2, device="cpu", progress=False)
    assert again["trained"] == [] and again["seconds"] == 0.0


def test_the_plan_skips_what_cannot_be_trained_up_front(tmp_path):
    """An unfinished run, a folder outside the runs folder, a missing one and a folder the config does not name
    are not planned."""
    import shutil

    root = tmp_path / "runs"
    cfg = lab.recipe("fgsm", smoke=True, precision="fp32")
    res = lab.cached_train(cfg, root=root, progress=False)
    other = lab.cached_train(cfg.replace(seed=3), root=tmp_path / "elsewhere", progress=False)
    renamed = res.run_dir.with_name(res.run_dir.name + "-copy")
    shutil.copytree(res.run_dir, renamed)
    used = [{"dir": d, "config": c.to_dict()} for d, c in ((res.run_dir, cfg), (other.run_dir, cfg.replace(seed=3)),
                                                            (root / "nope", cfg), (renamed, cfg))]
    assert [e["name"] for e in course_plan.plan_entries(used, root)] == [res.run_dir.name]
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    (res.run_dir / "metrics.json").write_text(json.dumps({**metrics, "complete": False}))
    assert course_plan.plan_entries(used[:1], root) == []


def test_the_index_states_the_last_whole_build():
    build = {"command": "./kit.sh course", "started": "2026-12-02T20:00:00+00:00", "machine": "Some CPU",
             "seconds": 2400.0, "pretrain": {"trained": ["a", "b"], "processes": 2, "seconds": 1500.0},
             "notebooks": {"01": {"seconds": 600.0, "trained_runs": 0}, "02": {"seconds": 300.0, "trained_runs": 1}}}
    text = course.build_text(build)
    assert "took <b>40.0 min</b>" in text and "2 run(s) trained up front in 2 processes, 25.0 min" in text
    assert "the 2 notebooks 15.0 min (they trained 1 run(s) themselves)" in text
    assert course.build_text(build) in course.index_html({}, build)
    assert course.build_text(None) == ""


def test_a_first_run_that_failed_is_said_to_be_short_and_a_rebuild_trains_itself_not_again():
    first = {"seconds": 200.0, "training_seconds": 150.0, "trained_runs": 7, "started": "T0", "passed": False}
    e = {"seconds": 48.0, "training_seconds": 10.0, "trained_runs": 1, "first_run": first}
    text = course.times_text(e)
    assert "first run 3.3 min" in text and "which trained 1 run(s) itself" in text and "again" not in text
    assert "stopped at a failing check" in text
    assert "failing" not in course.times_text({**e, "first_run": {**first, "passed": True}})


def test_a_first_run_kept_from_a_build_in_another_precision_names_both_precisions():
    first = {"seconds": 200.0, "training_seconds": 150.0, "trained_runs": 7, "started": "T0",
             "machine": "Some CPU, no GPU, precision auto = bf16, Python 3.11"}
    e = {"seconds": 48.0, "training_seconds": 10.0, "trained_runs": 1, "first_run": first,
         "machine": "Some CPU, no GPU, precision auto = fp32 (forced by $GMREG_PRECISION), Python 3.11"}
    text = course.times_text(e)
    assert "first run 3.3 min (build of T0, in bf16)" in text and "(that build, in fp32, which trained" in text
    bare = course.times_text({**e, "machine": "Some CPU", "first_run": {**first, "machine": "Some CPU"}})
    assert "in bf16" not in bare and "in fp32" not in bare


def test_the_index_names_notebooks_that_failed_in_the_last_whole_build():
    build = {"command": "./kit.sh course", "started": "T", "machine": "Some CPU", "seconds": 600.0,
             "notebooks": {"01": {"seconds": 60.0, "trained_runs": 0, "passed": True},
                           "04": {"seconds": 60.0, "trained_runs": 0, "passed": False}}}
    text = course.build_text(build)
    assert "04 stopped at a failing check in it" in text and "01 stopped" not in text
    build["notebooks"]["04"]["passed"] = True
    assert "failing" not in course.build_text(build)

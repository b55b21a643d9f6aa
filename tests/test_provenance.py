"""Provenance (issue 24): every results file the kit writes says which code made it, how, where and when."""

import json
import shutil

import gmreg_lab as gl
from conftest import tiny_cfg

KEYS = {"git_commit", "git_dirty", "source_sha256", "command", "time", "device", "processes", "cpu",
        "precision_auto", "torch"}


def test_environment_info_carries_provenance():
    env = gl.runs.environment_info("cpu")
    assert KEYS <= set(env)
    assert len(env["source_sha256"]) == 64 and env["processes"] == 1 and env["device"] == "cpu"
    assert env["command"] and env["time"].endswith("+00:00")


def test_the_source_hash_changes_with_the_source(tmp_path):
    copy = tmp_path / "gmreg_lab"
    shutil.copytree(gl.runs.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = gl.runs.source_sha256(copy)
    assert before == gl.runs.source_sha256()                        # the copy is the running source
    (copy / "losses.py").write_text((copy / "losses.py").read_text() + "\n# changed\n")
    assert gl.runs.source_sha256(copy) != before
    (copy / "new_module.py").write_text("x = 1\n")
    assert len({before, gl.runs.source_sha256(copy)}) == 2


def test_git_state_outside_a_repository_is_none(tmp_path):
    copy = tmp_path / "pkg" / "gmreg_lab"
    copy.mkdir(parents=True)
    assert gl.runs.git_state(copy) == {"git_commit": None, "git_dirty": None}


def test_a_run_directory_records_its_provenance(tmp_path):
    gl.train(tiny_cfg(select_best=False), tmp_path / "run", device="cpu", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert KEYS <= set(metrics["environment"])
    assert metrics["environment"]["source_sha256"] == gl.runs.source_sha256()
    assert metrics["precision"] == metrics["config"]["precision"] in ("fp32", "bf16")

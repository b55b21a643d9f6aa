"""The command line: exit codes, one-line errors, nothing half-written. Most cases call ``cli.main()`` in this
process (a subprocess importing torch costs seconds each); ``cli_process`` keeps the real-process cases: exit status
2 and no traceback from ``python -m gmreg_lab``, and a training process killed mid-run."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from gmreg_lab.views.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--limit", "64", "--batch-size", "32", "--epochs", "1", "--val-size", "200", "--log-every", "1",
        "--precision", "fp32", "--no-progress"]


def cli(*args):
    """``gmreg-lab ARGS`` in this process: its exit status and what it printed (argparse's exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def cli_process(*args, cwd=None):
    """``python -m gmreg_lab ARGS`` as a real process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gmreg_lab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _tiny_without(args):
    """TINY minus the options that ``args`` sets itself (argparse keeps the last value given)."""
    out, i = [], 0
    while i < len(TINY):
        if TINY[i] in args:
            i += 1 if TINY[i] == "--no-progress" else 2
            continue
        out.append(TINY[i])
        i += 1
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "p"
    r = cli("train", "--dataset", "mnist", "--model", "lenet_plus", "--method", "proposed", "--eps", "0.3",
            "--lam", "5", "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    assert "run saved in" in r.stdout
    return out


def test_train_writes_a_run_directory(run_dir):
    for name in ("checkpoint.pt", "config.json", "history.csv", "metrics.json"):
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "config.json").read_text())["lam"] == 5.0


def test_evaluate_json_and_table(run_dir):
    r = cli("evaluate", run_dir, "--attacks", "clean,fgsm,ifgsm:2,pgd:2", "--eps", "0.3", "--limit", "50", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert set(res) == {"clean", "fgsm", "ifgsm-2", "pgd-2"}
    assert all(0 <= v["acc"] <= 100 for v in res.values())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert any("pgd-2" in v for v in metrics["evaluations"].values())
    r = cli("evaluate", run_dir, "--attacks", "clean,fgsm", "--limit", "20")
    assert r.returncode == 0 and "accuracy %" in r.stdout


def test_transfer_and_sweep(run_dir, tmp_path):
    r = cli("transfer", "--source", run_dir, "--target", run_dir, "--limit", "20", "--json")
    assert r.returncode == 0, r.stderr
    r = cli("sweep", run_dir, "--attacks", "fgsm", "--eps-list", "0,0.1,0.3", "--limit", "20",
            "--save", tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["eps"] == [0, 0.1, 0.3] and len(saved["fgsm"]["acc"]) == 3


def test_refuses_to_clobber_a_different_run(run_dir):
    before = (run_dir / "checkpoint.pt").read_bytes()
    r = cli("train", "--method", "fgsm", "--out", run_dir, *TINY)
    assert r.returncode == 2 and "holds a different run" in r.stderr and "method" in r.stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["train", "--eps", "1.5"], "eps must be a number in [0, 1]"),
    (["train", "--eps", "nan"], "eps must be a number in [0, 1]"),
    (["train", "--lam", "-2"], "lam must be a finite number >= 0"),
    (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["train", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["train", "--method", "magic"], "unknown method 'magic'; valid: normal, fgsm, rfgsm, fgsm_rfgsm, eat"),
    (["train", "--model", "resnet18"], "unknown model 'resnet18' for mnist"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--dataset", "cifar10", "--data-dir", "EMPTY"], "CIFAR-10 not found"),
    (["train", "--data-dir", "EMPTY"], "MNIST file"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_train_input_is_one_clean_line(args, message, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    out = tmp_path / "out"
    r = cli(*args, "--out", out, *_tiny_without(args))
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert not out.exists(), "nothing may be written on bad input"


def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    out = tmp_path / "out"
    r = cli_process("train", "--eps", "1.5", "--out", out, *TINY)
    assert r.returncode == 2 and "eps must be a number in [0, 1]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not out.exists()
    r = cli_process("evaluate", tmp_path / "missing", "--limit", "10")
    assert r.returncode == 2 and "no checkpoint at" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no checkpoint at"),
    (lambda d: (d / "checkpoint.pt").write_bytes(b"\x00garbage" * 10), "is corrupt or unreadable"),
])
def test_bad_checkpoint_is_one_clean_line(make, message, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    make(d)
    r = cli("evaluate", d, "--limit", "10")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bad_attack_name_lists_valid(run_dir):
    r = cli("evaluate", run_dir, "--attacks", "clean,cw", "--limit", "10")
    assert r.returncode == 2 and "unknown attack 'cw'; valid: clean, fgsm, rfgsm, ifgsm, pgd" in r.stderr


def test_killed_training_resumes_to_the_same_result(tmp_path):
    """Kill a real training subprocess mid-run, resume it, and get what an uninterrupted run gets."""
    import signal
    import time

    import torch

    import gmreg_lab as gl

    args = ["train", "--method", "proposed", "--limit", "640", "--batch-size", "32", "--epochs", "3",
            "--val-size", "64", "--log-every", "10", "--probe-size", "32", "--probe-pgd-steps", "2",
            "--precision", "fp32", "--no-progress"]
    # the killed process computes with this process's thread count, so the in-process resume continues it exactly
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "gmreg_lab", *args, "--out", str(killed)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    time.sleep(0.3)  # mid-way through epoch 2
    p.send_signal(signal.SIGKILL)
    p.wait()
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=True)  # the file on disk is whole
    assert 1 <= ckpt["epoch"] < 3
    r = cli(*args, "--out", killed, "--resume")    # the resume and the straight run in this process: the kill is
    assert r.returncode == 0, r.stderr            # what needs a real one (same thread count, so the same numbers)
    r = cli(*args, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr
    a = gl.load_model(killed, which="last").state_dict()
    b = gl.load_model(tmp_path / "straight", which="last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist_a = [{k: v for k, v in row.items() if "time" not in k and "seconds" not in k}
              for row in torch.load(killed / "checkpoint.pt", weights_only=True)["history"]]
    hist_b = [{k: v for k, v in row.items() if "time" not in k and "seconds" not in k}
              for row in torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["history"]]
    assert hist_a == hist_b


def test_compile_choice_resolves_where_it_pays(run_dir):
    """`train --compile auto` (the default) compiles only for CIFAR-10 on a GPU: not for this MNIST run on the CPU."""
    assert json.loads((run_dir / "config.json").read_text())["compile_model"] is False
    r = cli("train", "--compile", "sometimes", *TINY)
    assert r.returncode != 0 and "invalid choice" in r.stderr


def test_record_an_unknown_recipe_is_one_clean_line_and_writes_nothing(tmp_path):
    r = cli("record", "magic", "--out", tmp_path / "rec", "--smoke", "--no-progress")
    assert r.returncode == 2 and "unknown recipe 'magic'; valid: normal, first_look, fgsm" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "rec").exists()


def test_record_writes_the_curve_and_names_where_it_was_made(tmp_path, monkeypatch):
    monkeypatch.setenv("GMREG_RUNS_DIR", str(tmp_path / "runs"))
    r = cli("record", "fgsm", "--out", tmp_path / "rec", "--smoke", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rec" / "fgsm.json").is_file() and "recorded fgsm:" in r.stdout and "recorded: " in r.stdout

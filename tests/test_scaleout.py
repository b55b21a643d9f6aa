"""Every core of one machine, several processes for one run (torchrun + DDP, gloo on the CPU), and sharded
reproductions. Real processes throughout: worker pools, torchrun, killed ranks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.runners import jobs
from conftest import tiny_cfg

ROOT = Path(__file__).resolve().parent.parent
TINY_ARGS = ["--limit", "256", "--val-size", "200", "--log-every", "4", "--probe-size", "32", "--probe-pgd-steps", "2",
             "--no-progress"]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _torchrun(n, *args, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--standalone",
           "-m", "gmreg_lab", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600, **kw)


def _weights(run, which="last"):
    return list(gl.load_model(run, which=which).parameters())


# --- shards and worker pools ----------------------------------------------------------------------------------------
def test_shards_are_disjoint_deterministic_and_complete():
    names = [f"run{i}" for i in range(11)]
    parts = [jobs.shard_of(names, (i, 4)) for i in range(4)]
    assert set().union(*parts) == set(names) and sum(map(len, parts)) == 11
    assert parts == [jobs.shard_of(reversed(names), (i, 4)) for i in range(4)]
    for bad in ("1/1", "3/2", "a/b", "2"):
        with pytest.raises(ValueError, match="I/N"):
            jobs.parse_shard(bad)


def test_parallel_workers_train_exactly_what_one_process_trains(tmp_path):
    """Two worker processes (one thread each) end with the weights, bit for bit, of the same runs trained one
    after another in one process with one thread."""
    runs = {"fgsm": tiny_cfg(method="fgsm", limit=128), "proposed": tiny_cfg(method="proposed", limit=128)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        jobs.train_runs(runs, tmp_path / "seq", jobs=1, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(2)
    try:
        jobs.train_runs(runs, tmp_path / "par", jobs=2, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in runs:
        for p, q in zip(_weights(tmp_path / "seq" / name), _weights(tmp_path / "par" / name)):
            assert torch.equal(p, q), name


@pytest.mark.slow
def test_two_shard_processes_then_one_final_call_equal_an_unsharded_reproduction(tmp_path):
    pytest.importorskip("torchattacks")
    args = [sys.executable, "-m", "gmreg_lab", "reproduce", "--scale", "smoke", "--methods", "fgsm,proposed",
            "--no-progress", "--no-figures", "--jobs", "1"]
    shards = [subprocess.Popen(args + ["--out", str(tmp_path / "sharded"), "--shard", f"{i}/2"], cwd=ROOT,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    outs = [p.communicate(timeout=600) for p in shards]
    assert all(p.returncode == 0 for p in shards), outs
    assert "without --shard" in outs[0][0]
    trained = {p.name for p in (tmp_path / "sharded" / "runs").iterdir()}
    assert trained == {"fgsm", "proposed"} and not (tmp_path / "sharded" / "summary.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sharded" / "runs").rglob("checkpoint.pt")}
    for out in ("sharded", "plain"):
        r = subprocess.run(args + ["--out", str(tmp_path / out)], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "the final call retrained nothing"
    a, b = (json.loads((tmp_path / out / "summary.json").read_text()) for out in ("sharded", "plain"))
    def numbers(d):   # every number but the seconds an attack took
        return {k: numbers(v) if isinstance(v, dict) else v for k, v in d.items() if not k.endswith("_seconds")}
    for key in ("table3", "table5", "masking", "crosscheck"):
        assert numbers(a[key]) == numbers(b[key]), key


# --- torchrun / DDP -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_train_what_one_process_trains(tmp_path):
    """Normal training, global batch 32: two ranks of 16 images each end with the weights of one process."""
    common = ["--method", "normal", "--epochs", "2", "--precision", "fp32", *TINY_ARGS]
    r = _torchrun(2, *common, "--out", str(tmp_path / "ddp"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run saved in") == 1, "rank 0 alone reports"
    one = subprocess.run([sys.executable, "-m", "gmreg_lab", "train", *common, "--out", str(tmp_path / "one")],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    for p, q in zip(_weights(tmp_path / "ddp"), _weights(tmp_path / "one")):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)
    assert not torch.equal(_weights(tmp_path / "ddp")[0], gl.models.build("lenet_plus").net[0].weight)


# 16 iterations an epoch, probes and model selection on 50 validation images: an epoch takes seconds, so the first
# checkpoint leaves three epochs (several seconds) in which to kill a rank, and the resume stays short (about 10 s)
KILL_ARGS = ["--limit", "512", "--val-size", "50", "--log-every", "8", "--probe-size", "32", "--probe-pgd-steps", "2",
             "--no-progress"]


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_it_resumes_with_another_world_size(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m",
           "gmreg_lab", "train", "--method", "proposed", "--epochs", "4", *KILL_ARGS, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    ckpt, t0 = out / "checkpoint.pt", time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before a rank could be killed"
    rank1 = [p for p in Path("/proc").glob("[0-9]*") if _is_rank(p, 1, out)]
    assert rank1, "rank 1 not found"
    os.kill(int(rank1[0].name), signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    done = gl.runs.load_checkpoint(out)["epoch"]
    assert 1 <= done < 4
    r = subprocess.run([sys.executable, "-m", "gmreg_lab", "train", "--method", "proposed", "--epochs", "4",
                        *KILL_ARGS, "--resume", "--out", str(out)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = gl.runs.load_checkpoint(out)
    assert ckpt["complete"] and ckpt["epoch"] == 4
    epochs = [row["epoch"] for row in ckpt["history"] if row["event"] == "epoch"]
    assert epochs == list(range(1, 5)), "every epoch once, none lost or repeated"


def _is_rank(proc_dir: Path, rank: int, out: Path) -> bool:
    try:
        env = (proc_dir / "environ").read_bytes().split(b"\0")
        cmd = (proc_dir / "cmdline").read_bytes()
    except OSError:
        return False
    return f"RANK={rank}".encode() in env and str(out).encode() in cmd and b"gmreg_lab" in cmd


@pytest.mark.slow
def test_bad_input_under_torchrun_is_one_line_and_writes_nothing(tmp_path):
    r = _torchrun(2, "--batch-size", "33", *TINY_ARGS, "--out", str(tmp_path / "odd"))
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("gmreg-lab: error:")]
    assert len(lines) == 1 and "does not split over 2 processes" in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "odd").exists()
    r = _torchrun(2, "--method", "normal", "--lr", "1e30", "--epochs", "2", *TINY_ARGS, "--out", str(tmp_path / "nan"))
    lines = [line for line in r.stderr.splitlines() if line.startswith("gmreg-lab: error:")]
    assert r.returncode != 0 and len(lines) == 1 and "NaN/Inf" in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "nan" / "checkpoint.pt").exists(), "no epoch finished: nothing half-written"

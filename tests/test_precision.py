"""Precision chosen by the hardware (issue 23): "auto" is bf16 autocast only where the device runs it natively and
faster (CUDA with bf16, AMX-BF16 CPUs), fp32 elsewhere; decided once per process; recorded in every run."""

import json

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab import runtime
from conftest import tiny_cfg


@pytest.fixture
def cpu_caps(monkeypatch):
    """Pretend this CPU reports the given capabilities; the per-process decision is forgotten before and after."""
    monkeypatch.delenv(runtime.ENV_PRECISION, raising=False)

    def set_caps(**caps):
        monkeypatch.setattr(runtime, "_cpu_capabilities", lambda: dict(caps))
        runtime._auto_precision.cache_clear()
    yield set_caps
    runtime._auto_precision.cache_clear()


@pytest.mark.parametrize("caps, expected", [
    (dict(amx_bf16=True, avx512_bf16=True), "bf16"),     # AMX tiles: bf16 matrix units
    (dict(avx512_bf16=True, amx_bf16=False), "fp32"),    # measured slower than fp32 on this project's Xeon
    (dict(avx2=True), "fp32"),                           # no bf16 unit at all: emulated, ~10x slower
    ({}, "fp32"),                                        # torch reports nothing
])
def test_auto_on_a_cpu_follows_what_torch_reports(cpu_caps, caps, expected):
    cpu_caps(**caps)
    assert runtime.resolve_precision("auto", "cpu") == expected
    assert runtime.resolve_precision("fp32", "cpu") == "fp32" and runtime.resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_follows_cuda_bf16_support(monkeypatch, cpu_caps, supported, expected):
    cpu_caps()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert runtime.resolve_precision("auto", torch.device("cuda", 0)) == expected
    assert runtime.resolve_precision("auto", "cpu") == "fp32"      # the CPU's decision is its own


def test_decided_once_per_process(cpu_caps, monkeypatch):
    cpu_caps(amx_bf16=True)
    assert runtime.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(runtime, "_cpu_capabilities", lambda: {})      # what torch reports no longer matters
    assert runtime.resolve_precision("auto", "cpu") == "bf16"


def test_environment_variable_overrides_auto_and_bad_values_are_clear(cpu_caps, monkeypatch):
    cpu_caps(amx_bf16=True)
    monkeypatch.setenv(runtime.ENV_PRECISION, "fp32")
    runtime._auto_precision.cache_clear()
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setenv(runtime.ENV_PRECISION, "fp16")
    runtime._auto_precision.cache_clear()
    with pytest.raises(gl.errors.GmregError, match="GMREG_PRECISION='fp16': must be fp32 or bf16"):
        runtime.resolve_precision("auto", "cpu")
    with pytest.raises(gl.errors.GmregError, match="unknown precision 'fp8'"):
        runtime.resolve_precision("fp8", "cpu")


def test_auto_is_the_default_everywhere_a_run_is_configured():
    assert gl.TrainConfig().precision == "auto"
    assert all(gl.lab.recipe(name).precision == "auto" for name in gl.lab.RECIPES if name != "eat")


@pytest.mark.parametrize("caps, expected", [(dict(amx_bf16=True), "bf16"), (dict(avx512_bf16=True), "fp32")])
def test_a_run_records_the_precision_it_used(tmp_path, cpu_caps, caps, expected):
    cpu_caps(**caps)
    res = gl.train(tiny_cfg(precision="auto", select_best=False), tmp_path / "run", device="cpu", progress=False)
    assert res.config.precision == expected
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == expected
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == expected and metrics["config"]["precision"] == expected
    assert metrics["environment"]["precision_auto"] == expected
    assert "AMX-BF16" in metrics["environment"]["cpu"]


def test_an_auto_run_resumes_in_the_precision_it_started_with(tmp_path, cpu_caps):
    """Started where auto meant bf16, resumed where it means fp32: the run stays bf16 (no config clash), while an
    explicit different precision is another run."""
    cpu_caps(amx_bf16=True)
    cfg = tiny_cfg(precision="auto", epochs=2, select_best=False)
    gl.train(cfg, tmp_path / "run", device="cpu", progress=False, callback=lambda r: r["event"] == "epoch")
    assert gl.runs.load_checkpoint(tmp_path / "run")["epoch"] == 1
    cpu_caps(avx512_bf16=True)
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    res = gl.train(cfg, tmp_path / "run", device="cpu", progress=False, resume=True)
    assert res.metrics["complete"] and res.config.precision == "bf16"
    with pytest.raises(gl.errors.GmregError, match="config differs in: precision"):
        gl.train(cfg.replace(precision="fp32"), tmp_path / "run", device="cpu", progress=False, resume=True)

"""The benchmark itself (its numbers are for BENCHMARKS.md, never asserted as timings here)."""

import pytest
import torch

import gmreg_lab as gl
from gmreg_lab.runners.bench import _reference_proposed_step, bench, format_bench, summarise


def test_summary_ratios_compare_like_with_like():
    """Hand-made batch times: every ratio is the one a reader would compute by hand, a ``+graph`` variant is divided
    by the ``+graph`` variant of the baseline, and the reference's speed-up is per proposed variant."""
    per_batch = {"normal": 1.0, "proposed": 2.5, "pgd": 20.0, "normal+graph": 0.25, "proposed+graph": 0.5,
                 "pgd+graph": 4.0, "reference_proposed": 5.0}
    r = summarise(per_batch, "mnist", 50, pgd_steps=40)
    assert r["seconds_per_epoch"]["proposed"] == pytest.approx(2.5 * 1000)          # 50k images / batch 50
    assert r["ratio_to_normal"]["proposed"] == pytest.approx(2.5)
    assert r["ratio_to_normal"]["proposed+graph"] == pytest.approx(2.0)           # 0.5 / 0.25, not 0.5 / 1.0
    assert r["ratio_to_pgd"]["proposed+graph"] == pytest.approx(0.125)
    assert r["ratio_to_normal"]["reference_proposed"] == pytest.approx(5.0)
    assert r["speedups"] == pytest.approx({"proposed": 2.0, "proposed+graph": 10.0})
    assert r["floor"]["proposed/pgd"] == pytest.approx(10 / 83)
    assert "ratio_to_pgd" not in summarise({"normal": 1.0, "proposed": 2.0}, "mnist", 50, 40)


def test_bench_runs_every_method_and_reports_it():
    r = bench("mnist", batch_size=8, batches=1, rounds=1, methods=("normal", "fgsm", "proposed", "pgd"),
              device="cpu", progress=False)
    methods = {"normal", "fgsm", "proposed", "pgd"}
    assert set(r["seconds_per_batch"]) == methods | {m + "+bf16" for m in methods} | {"reference_proposed"}
    assert all(v > 0 for v in r["seconds_per_batch"].values()) and not r["failed_variants"]
    assert set(r["bf16_over_fp32"]) == methods
    assert r["precision_auto"] == gl.runtime.resolve_precision("auto", "cpu")
    text = format_bench(r)
    assert "reference" in text and "floors" in text and "proposed" in text
    # both precisions side by side, the CPU and its bf16 units named, and what "auto" picks here
    assert "proposed: bf16 autocast takes" in text and gl.runtime.cpu_description() in text
    assert f"precision 'auto' (the kit's default) picks {r['precision_auto']}" in text
    one = bench("mnist", batch_size=8, batches=1, rounds=1, methods=("normal",), device="cpu", progress=False,
                precision="fp32", reference=False)
    assert set(one["seconds_per_batch"]) == {"normal"} and "bf16_over_fp32" not in one


def test_reference_step_is_algorithm_1_as_the_kit_trains_it():
    """The plain reference the speed-ups are measured against computes the same update as the kit's proposed step
    (fp32, eager, the same noise): the same weights after two steps, to float tolerance."""
    cfg = gl.TrainConfig(method="proposed", precision="fp32", channels_last=False)
    torch.manual_seed(0)
    kit_model, kit_opt = gl.training.make_model(cfg, torch.device("cpu"))
    ref_model = gl.models.build("lenet_plus")
    ref_model.load_state_dict(kit_model.state_dict())
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
    ctx = gl.training.StepContext(kit_model, cfg, torch.Generator().manual_seed(7))
    step = gl.training.make_step(ctx, kit_opt, torch.device("cpu"))
    ref_gen = torch.Generator().manual_seed(7)
    x, y = gl.data.load("mnist", "test").tensors(16)
    before = [p.detach().clone() for p in ref_model.parameters()]
    for _ in range(2):
        step(x, y)
        _reference_proposed_step(ref_model, ref_opt, x, y, cfg.eps, cfg.alpha, cfg.lam, generator=ref_gen)
    for p, q, b in zip(kit_model.parameters(), ref_model.parameters(), before):
        assert not torch.equal(q, b), "the reference step updates every weight"
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


def test_bench_variants_and_their_ratio_baselines():
    from gmreg_lab.runners.bench import _variants

    v = _variants(("normal", "eat", "proposed"), cuda_graphs=True, compiled=True)
    assert v["proposed+graph"] == ("proposed", True, False, "fp32")
    assert v["proposed+compile+graph"] == ("proposed", True, True, "fp32")
    assert "eat+graph" not in v and v["eat+compile"] == ("eat", False, True, "fp32")   # EAT is never captured
    cpu = _variants(("normal", "proposed"), cuda_graphs=False, compiled=True)
    assert set(cpu) == {"normal", "proposed", "normal+compile", "proposed+compile"}
    both = _variants(("normal", "proposed"), cuda_graphs=False, compiled=False, precisions=("fp32", "bf16"))
    assert both == {"normal": ("normal", False, False, "fp32"), "proposed": ("proposed", False, False, "fp32"),
                    "normal+bf16": ("normal", False, False, "bf16"),
                    "proposed+bf16": ("proposed", False, False, "bf16")}
    # a bf16 variant's ratios are taken to the bf16 variant of normal
    r = summarise({k: float(i + 1) for i, k in enumerate(both)}, "mnist", 32, 40)
    assert r["ratio_to_normal"]["proposed+bf16"] == pytest.approx(4 / 3)

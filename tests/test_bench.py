"""The benchmark itself (its numbers are for BENCHMARKS.md, never asserted as timings here)."""

import gmreg_lab as gl
from gmreg_lab.bench import bench, format_bench


def test_bench_reports_every_method_reference_and_floors():
    r = bench("mnist", batch_size=8, batches=1, rounds=1, methods=("normal", "fgsm", "proposed", "pgd"),
              device="cpu", progress=False)
    assert set(r["seconds_per_batch"]) == {"normal", "fgsm", "proposed", "pgd", "reference_proposed"}
    assert all(v > 0 for v in r["seconds_per_batch"].values())
    assert r["ratio_to_normal"]["normal"] == 1.0 and r["ratio_to_pgd"]["pgd"] == 1.0
    assert r["speedup_over_reference"] > 0 and r["speedups"]["proposed"] == r["speedup_over_reference"]
    assert abs(r["floor"]["proposed/pgd"] - 10 / 83) < 1e-9
    text = format_bench(r)
    assert "reference" in text and "floors" in text


def test_reference_step_back_propagates_into_every_weight():
    """The plain reference really runs a full training step (with lr 0, so the weights must stay put)."""
    import torch

    from gmreg_lab.bench import _reference_proposed_step

    torch.manual_seed(0)
    m = gl.models.build("lenet_plus")
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    before = [p.detach().clone() for p in m.parameters()]
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    _reference_proposed_step(m, opt, x, y, 0.3, 0.01, 5.0)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert all(p.grad is not None for p in m.parameters())


def test_bench_variants_and_their_ratio_baselines():
    from gmreg_lab.bench import _variants

    v = _variants(("normal", "eat", "proposed"), cuda_graphs=True, compiled=True)
    assert v["proposed+graph"] == ("proposed", True, False)
    assert v["proposed+compile+graph"] == ("proposed", True, True)
    assert "eat+graph" not in v and v["eat+compile"] == ("eat", False, True)   # EAT is never captured
    cpu = _variants(("normal", "proposed"), cuda_graphs=False, compiled=True)
    assert set(cpu) == {"normal", "proposed", "normal+compile", "proposed+compile"}

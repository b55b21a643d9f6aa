"""GPU-only checks (skipped without CUDA; run wherever a GPU is present, e.g. `pytest tests/test_gpu.py` on the
device machine): a CUDA-graph training step must follow the eager trajectory."""

import pytest
import torch

import gmreg_lab as gl
from conftest import tiny_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(**kw):
    cfg = tiny_cfg(precision="fp32", channels_last=False, select_best=False, **kw)
    return gl.train(cfg, device="cuda", progress=False)


@pytest.mark.parametrize("method", ["normal", "fgsm"])
def test_graph_steps_follow_the_eager_trajectory(method):
    """Deterministic methods: the warm-up iterations of the capture are undone (weights, momentum, RNG), the graph
    is captured again when the learning rate changes, and the epoch's short last batch runs eagerly, so the graph
    run ends with the eager run's weights (to float tolerance). 80 images: batches of 32, 32, 16; lr drops after
    the first batch."""
    kw = dict(method=method, limit=80, epochs=2, lr_milestones=(0.4,))
    eager, graph = _run(cuda_graphs=False, **kw), _run(cuda_graphs=True, **kw)
    a = torch.tensor([r["loss"] for r in eager.history if r["event"] == "log"])
    b = torch.tensor([r["loss"] for r in graph.history if r["event"] == "log"])
    assert len(a) == 6 and torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a, b)
    for p, q in zip(eager.last_model.parameters(), graph.last_model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


def test_graph_step_of_the_proposed_method_trains():
    """Its noise comes from the default CUDA generator inside the graph (another stream of numbers than eager),
    so the losses agree only statistically; the step must run, replay and learn."""
    eager, graph = _run(method="proposed", limit=320, cuda_graphs=False), _run(method="proposed", limit=320)
    a = [r["loss"] for r in eager.history if r["event"] == "log"]
    b = [r["loss"] for r in graph.history if r["event"] == "log"]
    assert len(b) == 10 and all(torch.isfinite(torch.tensor(b)))
    assert abs(a[-1] - b[-1]) < 0.5 * max(a[-1], b[-1]), (a, b)


def test_step_object_serves_one_shape_fast():
    cfg = tiny_cfg(method="normal", precision="fp32")
    model, opt = gl.training.make_model(cfg, torch.device("cuda"))
    ctx = gl.training.StepContext(model, cfg, torch.Generator(device="cuda").manual_seed(0))
    step = gl.training.make_step(ctx, opt, torch.device("cuda"))
    x, y = torch.rand(32, 1, 28, 28, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    step(x, y)
    assert step.mode == "graph" and step.graph is not None
    graph = step.graph
    step(x[:16], y[:16])                       # another shape: eager, the graph is kept
    assert step.graph is graph

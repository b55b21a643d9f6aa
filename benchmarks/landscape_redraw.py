"""How long one redraw of notebook 03's loss-landscape explorer takes (issue: under a second on a 2-core CPU).

    python benchmarks/landscape_redraw.py [--grid 41] [--threads 2]

Prints, measured side by side in one run on the model of the series' proposed recipe (trained into runs/ if
missing, a few minutes): the grid's forward pass in one batch vs in the chunks `gmreg_lab.landscape` uses, one whole
`loss_landscape` call (FGSM and R-FGSM, PGD-40 for the adversarial axis, the grid with its loss and margin), the
figure, and one redraw of the widget (the model picker moved between the run's best and last weights). Medians of 7;
run it while nothing else heavy runs.
"""
import argparse
import statistics
import time

import torch

import gmreg_lab as gl
from gmreg_lab import landscape


def median_seconds(f, n=7):
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=41)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = gl.lab.cached_train(gl.lab.recipe("proposed"))
    model = run.model.eval()
    x, y = gl.data.load("mnist", "test").tensors(50)
    pts = (x[:1] + 0.3 * torch.randn(a.grid ** 2, *x.shape[1:])).clamp(0, 1)
    with torch.no_grad():
        one = median_seconds(lambda: model(pts))
        chunked = median_seconds(lambda: [model(c) for c in pts.split(landscape.GRID_CHUNK)])
    whole = median_seconds(lambda: landscape.loss_landscape(model, x[:1], y[0], 0.3, 0.01, grid=a.grid))
    data = landscape.loss_landscape(model, x[:1], y[0], 0.3, 0.01, grid=a.grid)
    figure = median_seconds(lambda: gl.plots.landscape_figure(data))
    explorer = gl.widgets.landscape_explorer({"best": model, "last": run.last_model}, x, y, eps=0.3, alpha=0.01,
                                             grid=a.grid)
    redraw = median_seconds(lambda: setattr(explorer.model, "value", "last" if explorer.model.value == "best" else
                                            "best"))
    print(gl.lab.machine())
    print(f"{a.grid} x {a.grid} grid, {torch.get_num_threads()} threads")
    print(f"grid forward, one batch of {a.grid ** 2}:   {one:.3f} s")
    print(f"grid forward, chunks of {landscape.GRID_CHUNK}:       {chunked:.3f} s  ({one / chunked:.2f}x faster)")
    print(f"loss_landscape (FGSM, R-FGSM, PGD-40, grid): {whole:.3f} s")
    print(f"landscape_figure:                     {figure:.3f} s")
    print(f"one widget redraw (model picker):     {redraw:.3f} s")


if __name__ == "__main__":
    main()

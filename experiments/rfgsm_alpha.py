"""Issue 13: which R-FGSM noise alpha reproduces the paper's R-FGSM-AT and FGSM + R-FGSM rows of Table 3?

Trains one baseline at the quick scale (2 epochs, lr / 5 after epochs 1 and 1.5, the kit's defaults otherwise: raw
pixels, batch 32) with the given alpha and scores it on the first 1000 test images with Table 3's attacks.

    OMP_NUM_THREADS=1 python experiments/rfgsm_alpha.py rfgsm 0.01 --out DIR       # -> DIR/q2-rfgsm-a0.01.json
    OMP_NUM_THREADS=1 python experiments/rfgsm_alpha.py fgsm_rfgsm 0.15 --out DIR

About 4-7 min per run on one CPU thread. REPRODUCTION.md's deviations table has the measured rows.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gmreg_lab as gl


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=("rfgsm", "fgsm_rfgsm"))
    ap.add_argument("alpha", type=float)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    ms = (1.0, 1.5) if a.epochs == 2 else tuple(a.epochs * f for f in (0.25, 0.5, 0.75))
    cfg = gl.TrainConfig(dataset="mnist", method=a.method, alpha=a.alpha, epochs=a.epochs, lr_milestones=ms)
    out = Path(a.out) / f"q{a.epochs}-{a.method}-a{a.alpha}"
    res = gl.train(cfg, out, resume=True, progress=False, data_dir=a.data_dir)
    x, y = gl.data.load("mnist", "test", a.data_dir).tensors(1000)
    r = gl.evaluate.evaluate(res.model, x, y, "clean,fgsm,ifgsm:40,pgd:40,pgd:100", cfg.eps)
    result = {"method": a.method, "alpha": a.alpha, "epochs": a.epochs, "config": cfg.to_dict(),
              "best_epoch": res.metrics["best_epoch"], "s_per_epoch": res.metrics["seconds_per_epoch"],
              "eval": r, "environment": gl.runs.environment_info()}
    gl.runs.write_json(out.with_suffix(".json"), result)
    print(a.method, a.alpha, {k: v["acc"] for k, v in r.items()})


if __name__ == "__main__":
    main()

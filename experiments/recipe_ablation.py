"""Issue 13's ablation: the proposed method at the paper's settings (20 epochs, batch 32, lambda 5, eps 0.3), one
difference at a time, several seeds; every run scored under the strongest attacks the kit has.

    python experiments/recipe_ablation.py --normalize 0 --split val --seed 0 --out DIR [--device cuda]
    python experiments/recipe_ablation.py --grid --jobs 4 --out DIR          # every combination, 4 processes

Each run trains in memory, keeping the weights after every epoch, then
  * scores every epoch on 1000 validation images (the training split's seeded hold-out): I-FGSM-3 (the authors'
    selection rule, computed by the training loop itself), PGD-10 (step 0.075, random start) and APGD-CE-20;
  * picks an epoch by each rule (ties: the later epoch), and the last epoch;
  * evaluates each picked epoch on the first 1000 test images: clean, PGD-40 (step 0.01, random start), APGD-CE-100,
    APGD-T-100 (9 targets), and the worst case over the three (an image robust only if all three fail).
``--split all`` trains on all 60k training images (no hold-out: the last epoch is the only rule).
Writes ``<out>/<name>.json`` (name = norm{0,1}-{val,all}-s{seed}); an existing file is not recomputed.
"""
import argparse
import itertools
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gmreg_lab as gl


def config(normalize: int, split: str, seed: int, epochs: int = 20, limit=None) -> gl.TrainConfig:
    return gl.TrainConfig(dataset="mnist", method="proposed", normalize=bool(normalize), seed=seed, epochs=epochs,
                          limit=limit, val_size=10_000 if split == "val" else 0, select_best=split == "val")


def name_of(normalize, split, seed) -> str:
    return f"norm{normalize}-{split}-s{seed}"


def run(normalize: int, split: str, seed: int, out: Path, device: str = "auto", epochs: int = 20, limit=None,
        threads: int = 0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    path = out / f"{name_of(normalize, split, seed)}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = config(normalize, split, seed, epochs, limit)
    dev = gl.runtime.resolve_device(device)
    n_train = (cfg.limit or (50_000 if split == "val" else 60_000))
    ipe = -(-n_train // cfg.batch_size)
    t0 = time.time()
    res = gl.train(cfg, device=dev, progress=False, snapshot_at=tuple(ipe * e for e in range(1, cfg.epochs + 1)))
    wall = time.time() - t0
    snaps = {it // ipe: sd for it, sd in res.snapshots.items()}

    def model_at(epoch):
        m = gl.models.build(cfg.model, cfg.dataset, cfg.normalize)
        m.load_state_dict(snaps[epoch])
        return m.to(dev).eval()

    result = {"config": cfg.to_dict(), "device": str(dev), "train_seconds": res.metrics["train_seconds"],
              "wall_seconds": wall, "val": {}, "test": {}}
    rules = {"last": max(snaps)}
    if split == "val":
        _, val = gl.data.train_val_split(gl.data.load("mnist", "train"), cfg.val_size, cfg.seed)
        xv, yv = val.tensors(1000)
        ifgsm3 = {r["epoch"]: r["val_ifgsm3"] for r in res.history if r.get("event") == "epoch"}
        for e in sorted(snaps):
            r = gl.evaluate.evaluate(model_at(e), xv, yv, "pgd:10:0.075,apgd-ce:20", cfg.eps)
            result["val"][e] = {"ifgsm3": ifgsm3[e], "pgd10": r["pgd-10"]["acc"], "apgdce20": r["apgd-ce-20"]["acc"]}
        for rule in ("ifgsm3", "pgd10", "apgdce20"):
            rules[rule] = max(result["val"], key=lambda e: (result["val"][e][rule], e))
    result["rules"] = rules
    x, y = gl.data.load("mnist", "test", device=dev).tensors(1000)
    for e in sorted(set(rules.values())):
        w = gl.evaluate.worst_case(model_at(e), x, y, "pgd:40,apgd-ce:100,apgd-t:100", cfg.eps)
        single = gl.evaluate.evaluate(model_at(e), x, y, "clean,pgd:40", cfg.eps)
        result["test"][e] = {"clean": single["clean"]["acc"], "pgd-40": single["pgd-40"]["acc"],
                             "worst": w["robust"], "broke": w["broke"]}
    out.mkdir(parents=True, exist_ok=True)
    gl.runs.write_json(path, result)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--normalize", type=int, choices=(0, 1), default=0)
    ap.add_argument("--split", choices=("val", "all"), default="val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", action="store_true", help="every normalize x split x seed in --seeds")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="training images (a dry run)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    todo = [(a.normalize, a.split, a.seed)]
    if a.grid:
        todo = list(itertools.product((0, 1), ("val", "all"), [int(s) for s in a.seeds.split(",")]))
    args = [(n, sp, s, out, a.device, a.epochs, a.limit, 1 if a.jobs > 1 else 0) for n, sp, s in todo]
    if a.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(a.jobs) as pool:
            results = pool.starmap(run, args)
    else:
        results = [run(*arg) for arg in args]
    for (n, sp, s), r in zip(todo, results):
        test = {int(e): v for e, v in r["test"].items()}   # JSON keys are strings once read back
        print(name_of(n, sp, s), json.dumps({rule: {"epoch": e, **test[int(e)]} for rule, e in r["rules"].items()}))


if __name__ == "__main__":
    main()

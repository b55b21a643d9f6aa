"""Issue 28: check that this checkout scores a finished peers-study grid run as the checkout that made it did.

    python experiments/peers_rescore.py --out results/peers-study proposed-lam10-w1-b32 [more run names]

Loads each run's last model from <out>/runs/grid-<name>, scores it on the validation images with this checkout's
peers_study._validation (the grid's rule), and prints the stored and the new clean / worst-case numbers with this
checkout's git commit. One thread; nothing is written.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import peers_study as ps

import gmreg_lab as gl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="+")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    for name in a.names:
        path = out / "grid" / f"{name}.json"
        if not path.exists():
            raise SystemExit(f"peers_rescore: no finished grid run {name} in {out}")
        r = json.loads(path.read_text())
        model = gl.load_model(out / "runs" / f"grid-{name}", which=ps.WHICH, device="cpu")
        v = ps._validation(model, gl.TrainConfig.from_dict(r["config"]), ps.FULL)
        print(json.dumps({"name": name, "stored": {k: r["val"][k] for k in ("clean", "worst")},
                          "now": {k: v[k] for k in ("clean", "worst")}, "code": gl.runs.git_state()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 13: does bf16 autocast (the kit's default training precision) blur the proposed regulariser?

Eq. 8's regulariser is the squared distance of two nearly equal logit vectors (FGSM vs R-FGSM adversaries of the
same images), so rounding the logits to bf16 (8 significant bits) could drown it. On a trained model this script
takes training batches as Algorithm 1 does (adversaries crafted in eval mode, one forward pass in train mode over
B* = [B1, B2]) and compares, fp32 vs bf16 autocast on the same inputs:
  * the logits' rounding error against the FGSM - R-FGSM logit difference it has to resolve;
  * the regulariser's value, and the cosine between the parameter gradients of lam * reg (and of the whole loss).

    python experiments/bf16_regulariser.py RUN_DIR [--batches 20] [--data-dir DIR]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gmreg_lab as gl
from gmreg_lab.attacks import fgsm_rfgsm
from gmreg_lab.losses import proposed_loss


def flat_grad(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])


def compare(model, x, y, cfg, generator) -> dict:
    model.eval()
    x_f, x_r = fgsm_rfgsm(model, x, y, cfg.eps, alpha=cfg.alpha, generator=generator)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for prec in ("fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            logits = model(torch.cat([x_f, x_r]))
        n = len(y)
        loss, _, reg = proposed_loss(logits[:n], logits[n:], y, cfg.lam)
        out[prec] = {"logits": logits.detach().float(), "reg": float(reg.detach()),
                     "g_reg": flat_grad(cfg.lam * reg, params), "g_loss": flat_grad(loss, params)}
    a, b = out["fp32"], out["bf16"]
    n = len(y)
    cos = torch.nn.functional.cosine_similarity
    return {"logit_rounding": float((b["logits"] - a["logits"]).abs().mean()),
            "logit_difference": float((a["logits"][:n] - a["logits"][n:]).abs().mean()),
            "reg_rel_error": abs(b["reg"] - a["reg"]) / max(a["reg"], 1e-12),
            "cos_grad_reg": float(cos(a["g_reg"], b["g_reg"], dim=0)),
            "cos_grad_loss": float(cos(a["g_loss"], b["g_loss"], dim=0))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    cfg = gl.TrainConfig.from_dict(gl.runs.read_json(Path(a.run) / "config.json"))
    model = gl.load_model(a.run, which="best", device="cpu")
    train = gl.data.load("mnist", "train", a.data_dir)
    x, y = train.tensors(a.batches * cfg.batch_size)
    gen = torch.Generator().manual_seed(0)
    rows = [compare(model, x[i:i + cfg.batch_size], y[i:i + cfg.batch_size], cfg, gen)
            for i in range(0, len(y), cfg.batch_size)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    worst = min(r["cos_grad_reg"] for r in rows)
    print(f"{len(rows)} batches of {cfg.batch_size} training images, model {a.run} (best epoch)")
    print(f"mean |logit error| of bf16: {mean['logit_rounding']:.4f}   mean |FGSM - R-FGSM logit difference|: "
          f"{mean['logit_difference']:.4f}   (ratio {mean['logit_rounding'] / mean['logit_difference']:.2f})")
    print(f"regulariser relative error: {mean['reg_rel_error']:.3f}")
    print(f"cosine of parameter gradients, fp32 vs bf16: lam*reg {mean['cos_grad_reg']:.3f} (lowest batch {worst:.3f}),"
          f" whole loss {mean['cos_grad_loss']:.3f}")


if __name__ == "__main__":
    main()

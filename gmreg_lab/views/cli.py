"""The ``gmreg-lab`` command line: train, evaluate, transfer, sweep, reproduce, bench, audit, record.

Bad input prints one line ``gmreg-lab: error: ...`` and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..config import METHODS
from ..errors import GmregError

EPILOG = """examples:
  gmreg-lab train --dataset mnist --model lenet_plus --method proposed --eps 0.3 --lam 5 --epochs 1 --out runs/p
  gmreg-lab evaluate runs/p --attacks clean,fgsm,ifgsm:40,pgd:40,pgd:100 --eps 0.3 --limit 1000
  gmreg-lab reproduce --dataset mnist --scale quick --out results/mnist-quick
  gmreg-lab bench --methods normal,fgsm,proposed,pgd        # fp32 and bf16 side by side on this machine
  gmreg-lab audit my_model.pt --dataset mnist --out audit/
"""


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _common(p, data=True):
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    if data:
        p.add_argument("--data-dir", default=None, help="dataset folder (default $GMREG_DATA_DIR or the repo's data/)")
        p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
        p.add_argument("--batch-size", type=int, default=1000, help="attack batch size (default 1000)")
        p.add_argument("--precision", default="fp32", help="fp32 (default), bf16 autocast or auto for the attacks")
        p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts")
        p.add_argument("--which", default="best", help="best (validation-selected epoch, default) or last")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gmreg-lab", description=__doc__.splitlines()[0], epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_train_parser, _evaluation_parsers, _reproduce_parser, _bench_parser, _audit_parser,
                _record_parser):
        add(sub)
    return ap


# train options that set a TrainConfig field of the same name (None: the config's default for the dataset)
TRAIN_FIELDS = (  # (flag, type, help)
    ("--dataset", str, "mnist (default) or cifar10"),
    ("--model", str, "lenet_plus, a, b, c, d, wong_cnn (MNIST); resnet18/34, vgg11/16/19 (CIFAR-10)"),
    ("--method", str, f"{', '.join(METHODS)} (default: proposed)"),
    ("--eps", float, "training epsilon in pixels (0.3 MNIST, 8/255 CIFAR-10)"),
    ("--alpha", float, "R-FGSM noise size in pixels (0.01 MNIST, 2/255 CIFAR-10)"),
    ("--lam", float, "lambda of Eq. 8 (default 5; 0 is the paper's ablation)"),
    ("--epochs", int, "passes over the training set (20 MNIST, 100 CIFAR-10)"),
    ("--batch-size", int, "clean images per minibatch (32 MNIST, 64 CIFAR-10)"),
    ("--lr", float, "initial SGD learning rate (0.01 MNIST, 0.1 CIFAR-10)"),
    ("--pgd-steps", int, "PGD-AT inner steps (40 MNIST, 7 CIFAR-10)"),
    ("--pgd-step-size", float, "PGD-AT step in pixels (0.01 MNIST, 2/255 CIFAR-10)"),
    ("--rs-step", float, "FGSM-RS step in units of eps (default 1.25)"),
    ("--nfgsm-k", float, "N-FGSM noise magnitude in units of eps (default 2)"),
    ("--align-lam", float, "GradAlign's lambda (default: 1 on MNIST, 0.2 on CIFAR-10)"),
    ("--eps-warmup-epochs", float, "ramp the training eps linearly from 0 over this many epochs (default 0: off)"),
    ("--optimizer", str, "sgd (default, with momentum) or adam"),
    ("--lr-schedule", str, "step (default: x lr_gamma at the milestones) or cyclic (0 -> lr -> 0, Wong et al.)"),
    ("--lr-peak", float, "cyclic schedule: where lr peaks, as a fraction of the run (default 0.4)"),
    ("--limit", int, "train on the first N training images only"),
    ("--val-size", int, "images held out of the training set for validation (default 10000)"),
    ("--log-every", int, "iterations between history rows and probes (default 500)"),
    ("--probe-size", int, "validation images each probe row attacks (default 200)"),
    ("--probe-pgd-steps", int, "PGD steps of each probe row (default 10)"),
    ("--precision", str, "auto (default: bf16 autocast where the device runs it natively and faster, i.e. CUDA "
                         "with bf16 or an AMX-BF16 CPU, else fp32), fp32 or bf16"),
    ("--seed", int, "seeds init, data order and attack noise (default 0)"),
)


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model with one of the paper's methods (or a later single-step one)")
    t.add_argument("--out", required=True, help="run directory to write")
    for flag, typ, help_ in TRAIN_FIELDS:
        t.add_argument(flag, type=typ, default=None, help=help_)
    t.add_argument("--eat-sources", default="", help="comma-separated run directories of static models (EAT)")
    t.add_argument("--input", choices=("raw", "normalized"), default=None,
                   help="raw [0, 1] pixels into the network, or a fixed mean/std layer inside the model first "
                        "(default: the config's); eps is in pixel units either way")
    t.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the model for the training steps (auto: on a GPU for CIFAR-10)")
    t.add_argument("--graphs", choices=("on", "off"), default="on",
                   help="on a GPU, replay each training step as one CUDA graph (default on)")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--download", action="store_true", help="download CIFAR-10 if missing (needs internet)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out (or reuse it when complete)")
    t.add_argument("--overwrite", action="store_true", help="replace whatever run --out holds")
    t.add_argument("--no-progress", action="store_true")
    _common(t, data=False)


def _evaluation_parsers(sub) -> None:
    e = sub.add_parser("evaluate", help="white-box accuracy of a run under a list of attacks")
    e.add_argument("run", help="run directory (or checkpoint file)")
    e.add_argument("--attacks", default="clean,fgsm,ifgsm:40,pgd:40,pgd:100")
    e.add_argument("--eps", type=float, default=None, help="attack epsilon (default: the run's training eps)")
    _common(e)

    tr = sub.add_parser("transfer", help="black-box: adversaries from a source run, accuracy of a target run")
    tr.add_argument("--source", required=True)
    tr.add_argument("--target", required=True)
    tr.add_argument("--attack", default="fgsm")
    tr.add_argument("--eps", type=float, default=None)
    _common(tr)

    s = sub.add_parser("sweep", help="accuracy and mean loss vs epsilon (Fig. 3/4)")
    s.add_argument("run")
    s.add_argument("--attacks", default="pgd:40,fgsm")
    s.add_argument("--eps-list", type=_floats, default=None, help="comma-separated epsilons (default 0..2x train eps)")
    s.add_argument("--save", default=None, help="also write the result as JSON to this file")
    _common(s)


def _reproduce_parser(sub) -> None:
    r = sub.add_parser("reproduce", help="train and evaluate every method of the paper's tables (cached, resumable)")
    r.add_argument("--dataset", default="mnist")
    r.add_argument("--scale", default="quick", help="smoke (seconds), quick (tens of minutes on a CPU), paper")
    r.add_argument("--out", default=None, help="results folder (default results/<dataset>-<scale>)")
    r.add_argument("--methods", default=None, help="comma-separated subset of runs (default: all)")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--download", action="store_true", help="download CIFAR-10 first if missing (needs internet)")
    r.add_argument("--suite", choices=("paper", "peers"), default="paper",
                   help="paper: the paper's Tables 3-7 (default); peers: the proposed method beside FGSM-RS, N-FGSM, "
                        "GradAlign, FGSM-AT and PGD-AT at several eps")
    r.add_argument("--jobs", type=int, default=None,
                   help="training runs in parallel processes (default: one per CPU core, one on a GPU)")
    r.add_argument("--shard", default=None,
                   help="I/N: train only this share of the runs (a scheduler array job), no tables; e.g. "
                        "--shard $SLURM_ARRAY_TASK_ID/8, then one final call without --shard")
    r.add_argument("--no-figures", action="store_true")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--device", default="auto")


def _audit_parser(sub) -> None:
    a = sub.add_parser("audit", help="is this model masking its gradients? checklist, white-box table, verdict")
    a.add_argument("model", help="TorchScript / torch.export file, package.module:factory, or a gmreg-lab run")
    a.add_argument("--weights", default=None, help="state-dict file for a package.module:factory model")
    a.add_argument("--dataset", default="mnist", help="mnist (default) or cifar10: its test images")
    a.add_argument("--data", default=None, help="a .pt file holding (images in [0, 1], labels) instead")
    a.add_argument("--eps", type=float, default=None, help="L-inf radius (default 0.3 MNIST, 8/255 CIFAR-10)")
    a.add_argument("--limit", type=int, default=500, help="first N images (default 500)")
    a.add_argument("--steps", type=int, default=40, help="PGD steps (step 2.5 eps / steps)")
    a.add_argument("--square-queries", type=int, default=1000, help="Square's query budget")
    a.add_argument("--apgd-steps", type=int, default=100, help="APGD-CE and APGD-T steps (default 100, AutoAttack's)")
    a.add_argument("--source", default=None, help="another model (same forms) for the black-box check")
    a.add_argument("--out", default=None, help="folder for audit.md / audit.json / audit.html (default: print)")
    a.add_argument("--data-dir", default=None)
    a.add_argument("--device", default="auto")
    a.add_argument("--json", action="store_true")


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time every training method side by side (ratios, floors, reference)")
    b.add_argument("--dataset", default="mnist")
    b.add_argument("--model", default=None)
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--batches", type=int, default=5, help="timed batches per method per round")
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--methods", default="normal,fgsm,proposed,pgd")
    b.add_argument("--precision", default="both",
                   help="both (default: fp32 and bf16 autocast side by side), auto, fp32 or bf16")
    b.add_argument("--eval-limit", type=int, default=0, help="also time PGD-100 evaluation on N test images")
    b.add_argument("--eval-model", default=None, help="run directory of the model to attack in that timing")
    b.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                   help="also time each step captured as a CUDA graph (auto: on a GPU)")
    b.add_argument("--compile", action="store_true",
                   help="also time each step with the model torch.compile'd (compiles in the warm-up)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--device", default="auto")


def _record_parser(sub) -> None:
    r = sub.add_parser("record", help="train a notebook recipe and record its probe curve for the notebooks")
    r.add_argument("recipe", help="a recipe of gl.lab.RECIPES, e.g. fgsm (notebook 02 draws it at once)")
    r.add_argument("--out", default=None, help="folder for <recipe>.json (default: the package's recorded/)")
    r.add_argument("--smoke", action="store_true", help="the recipe's smoke size (tests)")
    r.add_argument("--device", default="auto")
    r.add_argument("--no-progress", action="store_true")


def cmd_record(args) -> int:
    from . import lab

    path = lab.record(args.recipe, out_dir=args.out, smoke=args.smoke, device=args.device,
                      progress=not args.no_progress)
    print(f"recorded {args.recipe}: {path} ({lab.recorded(args.recipe, path=path)['label']})")
    return 0


def _download(wanted: bool, dataset: str, data_dir) -> None:
    """``--download``: fetch CIFAR-10's train and test splits if missing (MNIST ships with the repository)."""
    if wanted and dataset == "cifar10":
        from .. import data
        data.load_cifar10("train", data_dir, download=True)
        data.load_cifar10("test", data_dir, download=True)


def _device(name):
    from ..runtime import resolve_device
    return resolve_device(name)


def _test_set(args, dataset, device):
    from .. import data
    return data.load(dataset, "test", args.data_dir, device=device).tensors(args.limit)


def cmd_train(args) -> int:
    from ..config import TrainConfig
    from ..training import compile_pays, train

    fields = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in TRAIN_FIELDS}
    cfg = TrainConfig(**{k: v for k, v in fields.items() if v is not None},
                      eat_sources=tuple(s for s in args.eat_sources.split(",") if s),
                      cuda_graphs=args.graphs == "on",
                      **({} if args.input is None else {"normalize": args.input == "normalized"}))
    dev = _device(args.device)
    cfg = cfg.replace(compile_model=args.compile == "on" or (args.compile == "auto" and compile_pays(cfg, dev)))
    _download(args.download, cfg.dataset, args.data_dir)
    result = train(cfg, args.out, device=dev, data_dir=args.data_dir, resume=args.resume,
                   overwrite=args.overwrite, progress=not args.no_progress)
    m = result.metrics
    if os.environ.get("RANK", "0") != "0":
        return 0                 # data-parallel: rank 0 reports for all
    if args.json:
        print(json.dumps(m, indent=2, default=str))
    else:
        last = [r for r in result.history if r.get("event") == "log"]
        print(f"trained {cfg.model} on {cfg.dataset} with {cfg.method}: {m['epochs_done']} epochs, "
              f"{m['seconds_per_epoch']:.1f} s/epoch" if m.get("seconds_per_epoch") else "trained")
        if last:
            r = last[-1]
            print(f"probe on {cfg.probe_size} validation images at eps={cfg.eps:g}: clean {r['acc_clean']:.1f}%  "
                  f"FGSM {r['acc_fgsm']:.1f}%  PGD-{cfg.probe_pgd_steps} {r['acc_pgd']:.1f}%  "
                  f"FGSM/R-FGSM logit distance {r['logit_dist']:.3f}")
        print(f"run saved in {args.out}")
    return 0


def _run_eps(run, eps):
    from ..runs import load_checkpoint
    ckpt = load_checkpoint(run)
    return ckpt["dataset"], (eps if eps is not None else ckpt["config"]["eps"])


def cmd_evaluate(args) -> int:
    from ..evaluate import evaluate, format_table
    from ..runs import checkpoint_path, load_model, read_json, write_json

    dev = _device(args.device)
    dataset, eps = _run_eps(args.run, args.eps)
    model = load_model(args.run, which=args.which, device=dev)
    x, y = _test_set(args, dataset, dev)
    res = evaluate(model, x, y, args.attacks, eps, batch_size=args.batch_size, precision=args.precision,
                   seed=args.seed, progress=True)
    run_dir = checkpoint_path(args.run).parent
    metrics_file = run_dir / "metrics.json"
    metrics = read_json(metrics_file) if metrics_file.exists() else {}
    key = f"eps={eps:g} n={len(y)} model={args.which} precision={args.precision} seed={args.seed}"
    metrics.setdefault("evaluations", {}).setdefault(key, {}).update(res)
    write_json(metrics_file, metrics)
    if args.json:
        print(json.dumps({"eps": eps, "n": len(y), "results": res}, indent=2))
    else:
        print(format_table(res, f"{args.run}: white-box, eps={eps:g}, {len(y)} test images ({args.which} epoch)"))
    return 0


def cmd_transfer(args) -> int:
    from ..evaluate import format_table, transfer
    from ..runs import load_model

    dev = _device(args.device)
    dataset, eps = _run_eps(args.target, args.eps)
    source = load_model(args.source, which=args.which, device=dev, dataset=dataset)
    target = load_model(args.target, which=args.which, device=dev)
    x, y = _test_set(args, dataset, dev)
    res = {f"{args.attack} from source": transfer(source, target, x, y, args.attack, eps,
                                                  batch_size=args.batch_size, precision=args.precision,
                                                  seed=args.seed)}
    if args.json:
        print(json.dumps({"eps": eps, "n": len(y), "source": args.source, "target": args.target, "results": res}))
    else:
        print(format_table(res, f"black-box: {args.source} -> {args.target}, eps={eps:g}, {len(y)} test images"))
    return 0


def cmd_sweep(args) -> int:
    from ..evaluate import sweep
    from ..runs import load_model, write_json

    dev = _device(args.device)
    dataset, eps = _run_eps(args.run, None)
    eps_list = args.eps_list or [round(eps * i / 5, 6) for i in range(11)]
    model = load_model(args.run, which=args.which, device=dev)
    x, y = _test_set(args, dataset, dev)
    res = sweep(model, x, y, args.attacks, eps_list, batch_size=args.batch_size, precision=args.precision,
                seed=args.seed, progress=True)
    if args.save:
        write_json(args.save, {"run": str(args.run), "n": len(y), **res})
    if args.json:
        print(json.dumps(res))
    else:
        labels = [k for k in res if k != "eps"]
        print(f"{args.run}: accuracy % (mean loss) vs eps, {len(y)} test images")
        print(f"{'eps':>8}" + "".join(f"{lab:>20}" for lab in labels))
        for i, e in enumerate(res["eps"]):
            print(f"{e:>8.4f}" + "".join(f"{res[lab]['acc'][i]:>11.2f} ({res[lab]['loss'][i]:>6.3f})"
                                         for lab in labels))
    return 0


def _figure_writer(name: str):
    """``report_figures.<name>``, or None (tables only, with a warning) where plotly is not installed."""
    try:
        from . import report_figures
    except ImportError:  # plotly missing (e.g. a bare GPU machine)
        logging.getLogger(__name__).warning("plotly is not installed: figures skipped")
        return None
    return getattr(report_figures, name)


def cmd_reproduce(args) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise GmregError(f"--jobs must be >= 1, got {args.jobs}")
    _download(args.download, args.dataset, args.data_dir)
    kw = dict(methods=args.methods, device=_device(args.device), data_dir=args.data_dir,
              progress=not args.no_progress, jobs=args.jobs, shard=args.shard)
    figures = None if args.no_figures else _figure_writer("write_suite_figures" if args.suite == "peers"
                                                          else "write_figures")
    kw["figures"] = figures
    if args.suite == "peers":
        from ..runners.suite import peers
        out = args.out or f"results/{args.dataset}-peers-{args.scale}"
        s = peers(args.scale, out, dataset=args.dataset, **kw)
        report = Path(out, "SUITE.md")
    else:
        from ..runners.reproduce import reproduce
        out = args.out or f"results/{args.dataset}-{args.scale}"
        s = reproduce(args.dataset, args.scale, out, **kw)
        report = Path(out, "TABLES.md")
    if args.shard is not None:
        print(f"shard {args.shard}: {len(s['runs'])} run(s) trained or found complete in {out}/runs; "
              f"run the same command without --shard to write the tables")
    else:
        print(report.read_text())
        print(f"results written to {out}")
    return 0


def cmd_bench(args) -> int:
    from ..runners.bench import bench, bench_eval, format_bench

    r = bench(args.dataset, args.model, args.batch_size, args.batches, args.rounds,
              tuple(m for m in args.methods.split(",") if m), _device(args.device), args.precision,
              cuda_graphs={"auto": None, "on": True, "off": False}[args.cuda_graphs], compiled=args.compile)
    if args.eval_limit:
        from ..runs import load_model
        model = load_model(args.eval_model) if args.eval_model else None
        r["eval_pgd100"] = bench_eval(args.eval_limit, device=_device(args.device), model=model)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(format_bench(r))
        for p, e in r.get("eval_pgd100", {}).items():
            print(f"PGD-100 evaluation, {p}: {e['seconds']:.1f} s on {args.eval_limit} images "
                  f"(~{e['seconds_10k']:.0f} s for the 10k test set)")
    return 0


def cmd_audit(args) -> int:
    from ..runners.audit import DEFAULT_EPS, audit, load_any_model, load_data
    from ..runners.report_tables import render_audit
    from ..runs import environment_info, write_json

    dev = _device(args.device)
    model = load_any_model(args.model, weights=args.weights, device=dev)
    source = load_any_model(args.source, device=dev) if args.source else None
    x, y = load_data(args.dataset, data_file=args.data, limit=args.limit, data_dir=args.data_dir)
    eps = args.eps if args.eps is not None else DEFAULT_EPS.get(args.dataset, 0.3)
    result = audit(model, x, y, eps, steps=args.steps, square_queries=args.square_queries, source=source,
                   apgd_steps=args.apgd_steps)
    text = render_audit(result, args.model)
    if args.out:
        out = Path(args.out)
        write_json(out / "audit.json", {"model": args.model, "command": " ".join(sys.argv), **result,
                                        "environment": environment_info(dev)})
        from ..runs import atomic_write_text
        atomic_write_text(out / "audit.md", text)
        try:
            from .report_figures import write_audit_html
            write_audit_html(result, args.model, out / "audit.html")
        except ImportError:
            pass
    print(json.dumps(result, indent=2, default=str) if args.json else text)
    return 0 if not result["checklist"]["failed"] else 1


COMMANDS = {"audit": cmd_audit, "bench": cmd_bench, "train": cmd_train, "evaluate": cmd_evaluate,
            "transfer": cmd_transfer,
            "sweep": cmd_sweep, "reproduce": cmd_reproduce, "record": cmd_record}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", None) is not None and args.limit < 1:
        return _fail(f"--limit must be >= 1, got {args.limit}")
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        return _fail(f"--batch-size must be >= 1, got {args.batch_size}")
    distributed = "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ   # started by torchrun
    if distributed and args.command != "train":
        return _fail(f"only `train` runs under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}); "
                     f"run `{args.command}` as one process")
    try:
        if distributed:
            from ..runtime import init_distributed
            args.device = str(init_distributed(args.device))
        return COMMANDS[args.command](args)
    except GmregError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        return _fail("interrupted" + (f"; finished epochs are saved in {out}: continue with --resume"
                                      if out else ""), code=130)
    finally:
        if distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _fail(msg: str, code: int = 2) -> int:
    """One line on stderr (from rank 0 only when torchrun runs several processes) and the exit status."""
    if os.environ.get("RANK", "0") == "0":
        print(f"gmreg-lab: error: {msg}", file=sys.stderr)
    return code

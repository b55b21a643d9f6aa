"""The Markdown of a reproduction (``TABLES.md``): each table beside the paper's values, the cross-check and the
gradient-masking checklist. Pure formatting of the ``summary`` dict that :func:`gmreg_lab.runners.reproduce.reproduce`
writes; nothing here trains or attacks."""

from __future__ import annotations

import statistics
from typing import Optional

from .. import paper
from ..diagnostics import kind_of
from ..evaluate import parse_attacks
from ..training import FP32_STEPS


def _fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def _label(name: str) -> str:
    return paper.LABELS.get(name, name)


def median_epoch(run: dict) -> Optional[float]:
    """Median seconds per epoch of a run's summary entry (robust to an epoch slowed by other work)."""
    times = run.get("epoch_seconds") or []
    return statistics.median(times) if times else run.get("seconds_per_epoch")


def render_markdown(summary: dict, out) -> str:
    env = summary["environment"]
    head = [f"# {summary['dataset'].upper()} reproduction, scale `{summary['scale']}`", "",
            f"Produced by `gmreg-lab reproduce --dataset {summary['dataset']} --scale {summary['scale']} "
            f"--out {out}` on {env.get('gpu') or env.get('processor') or env.get('machine')} "
            f"({env.get('cpu_count')} CPUs, torch {env.get('torch')}). Settings: see `summary.json` "
            f"(`scale_settings`, and each run's `config.json`).", ""]
    parts = (_autoattack(summary), _table3(summary), _table5(summary), _table7(summary), _crosscheck(summary),
             _masking(summary))
    return "\n".join(head + [line for part in parts for line in part]) + "\n"


def _autoattack(summary: dict) -> list:
    aa = summary.get("autoattack", {})
    if not aa:
        return []
    lines = ["## Headline: AutoAttack (standard), robust accuracy (%)", "",
             "APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries), 100 steps each, every attack on "
             "the images the earlier ones left; an image is robust only if all four fail. *Ours*: the kit's APGD-CE, "
             "APGD-T and Square with torchattacks' FAB-T; *torchattacks*: all four from torchattacks, at the same "
             "settings. The number to trust is the lower one.", "",
             "| model | images | device | clean | ours | torchattacks | **robust** | broken by (ours: APGD-CE / "
             "APGD-T / FAB-T / Square) |", "|---|---|---|---|---|---|---|---|"]
    for name, h in aa.items():
        o, t = h["ours"], h["torchattacks"]
        lines.append(f"| {_label(name)} | {h['images']} | {h['device']} | {_fmt(o['clean'])} | {_fmt(o['robust'])} "
                     f"| {_fmt(t['robust'])} | **{_fmt(h['robust'])}** | "
                     + " / ".join(str(v) for v in o["broke"].values()) + " |")
    return lines + [""]


def _table3(summary: dict) -> list:
    t3, sc, dataset = summary.get("table3", {}), summary["scale_settings"], summary["dataset"]
    if not t3:
        return []
    cols = [a.label for a in parse_attacks(sc["attacks"], dataset)]   # the scale's column order
    lines = [f"## Table 3 — white-box accuracy (%), first {sc['eval_limit'] or 10000} test images", "",
             "Each of our columns beside the paper's value of the same attack (— where the paper has none).", "",
             "| method | " + " | ".join(f"{c} (ours / paper)" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for name in sorted(t3, key=lambda n: paper.ROW_ORDER.index(n) if n in paper.ROW_ORDER else len(paper.ROW_ORDER)):
        res = t3[name]
        cells = [f"{_fmt(res[c]['acc']) if c in res else '—'} / {_fmt(paper.white_box(dataset, name, c))}"
                 for c in cols]
        lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _table5(summary: dict) -> list:
    t5 = summary.get("table5", {})
    if not t5:
        return []
    lines = ["## Table 5 — black-box FGSM accuracy (%)", "", "| source -> target | ours | paper |", "|---|---|---|"]
    for key, res in t5.items():
        src, tgt = key.split("->")
        ref = paper.BLACK_BOX.get(summary["dataset"], {}).get((src, tgt))
        lines.append(f"| {_label(src)} -> {_label(tgt)} | {_fmt(res['acc'])} | {_fmt(ref)} |")
    return lines + [""]


def _table7(summary: dict) -> list:
    runs = summary.get("runs", {})
    if not runs:
        return []
    lines = ["## Table 7 — training time per epoch (s), measured in this run", "",
             "Median over the epochs (robust to an epoch slowed by other work on the machine); the mean and "
             "every epoch's time are in `summary.json` (`runs.*.epoch_seconds`).", "",
             "| method | s/epoch (ours, median) | mean | ratio to normal (medians) | paper (Titan Xp) |",
             "|---|---|---|---|---|"]
    normal = median_epoch(runs.get("normal", {}))
    ref = paper.SECONDS_PER_EPOCH.get(summary["dataset"], {})
    for name, r in runs.items():
        s = median_epoch(r)
        ratio = f"{s / normal:.2f}" if s and normal else "—"
        lines.append(f"| {_label(name)} | {_fmt(s, 1)} | {_fmt(r.get('seconds_per_epoch'), 1)} | {ratio} "
                     f"| {_fmt(ref.get(name), 1)} |")
    return lines + [""]


def _crosscheck(summary: dict) -> list:
    cross = summary.get("crosscheck", {})
    if not cross:
        return []
    lines = ["## Independent cross-check: our PGD / APGD-CE / APGD-T vs torchattacks', accuracy (%)", "",
             "`*_worst_case`: an example counts as robust only if every attack of that side fails on it; "
             "`gap_points` = ours minus theirs.", ""]
    first = next(iter(cross.values()))
    keys = sorted((k for k in first if not k.endswith("_seconds") and k != "n"),
                  key=lambda k: (not k.startswith("ours"), not k.startswith("torchattacks"), k.endswith("case"),
                                 "apgd" in k, k))
    lines += ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, r in cross.items():
        lines.append(f"| {_label(name)} | " + " | ".join(
            _fmt(r.get(k)) if isinstance(r.get(k), float) else str(r.get(k, "—")) for k in keys) + " |")
    return lines + [""]


def _masking(summary: dict) -> list:
    masking = summary.get("masking", {})
    if not masking:
        return []
    mark = {True: "pass", False: "FAIL", None: "skip"}
    lines = ["## Gradient-masking checklist", "",
             "Each failed check is tagged with what it means: *masking* (a sign of gradient masking), *convergence* "
             "(an attack had not converged: its number overstates robustness), *leaking* (label leaking: a separate "
             "effect, not masking).", "", "| model | verdict | failed checks |", "|---|---|---|"]
    lines += [f"| {_label(name)} | {'pass' if rep['passed'] else 'FAIL'} | "
              f"{', '.join(f'{c} ({k})' for c, k in _failed_kinds(rep)) or '—'} |" for name, rep in masking.items()]
    lines.append("")
    for name, rep in masking.items():
        lines += [f"**{_label(name)}**", ""]
        lines += [_check_line(c, mark) for c in rep["checks"]]
        lines.append("")
    return lines


def _failed_kinds(rep: dict) -> list:
    kinds = {c["name"]: kind_of(c) for c in rep["checks"]}
    return [(name, kinds.get(name, "masking")) for name in rep["failed"]]


def _check_line(c: dict, mark: dict) -> str:
    """One checklist line: pass / FAIL / skip, the check's kind (what a failure means), its detail."""
    return f"- {mark[c['passed']]} `{c['name']}` ({kind_of(c)}): {c['detail']}"


# --- the peers suite ------------------------------------------------------------------------------------------------
SUITE_NAMES = {"fgsm": "FGSM-AT", "proposed": "Proposed (λ = 5)", "fgsm_rs": "FGSM-RS", "nfgsm": "N-FGSM",
               "gradalign": "GradAlign", "pgd": "PGD-AT"}


# A run that did not learn: its clean accuracy is within DEAD_MARGIN points of the majority-class rate of the
# evaluated images, or it puts at least DEAD_SHARE % of them in one class. Such a model's accuracy under attack is
# the share of the class it always predicts, not robustness (N-FGSM at eps 0.3 in results/mnist-peers-quick:
# 13.7 % everywhere, a constant predictor of the most frequent class among the first 300 test images).
DEAD_MARGIN = 5.0
DEAD_SHARE = 90.0
DEFAULT_MAJORITY = 15.0     # when the majority-class rate was not recorded (older results): MNIST's largest class is
                            # 11.35 % of the test set, 13.7 % of its first 300 images


def did_not_learn(clean: Optional[float], majority_pct: Optional[float] = None,
                  top_pred_pct: Optional[float] = None) -> bool:
    """Whether a model is a constant (or near-constant) predictor rather than a classifier: clean accuracy (%) at
    most DEAD_MARGIN points above the majority-class rate of the evaluated images (DEFAULT_MAJORITY when unknown),
    or DEAD_SHARE % or more of its predictions in a single class."""
    if clean is None:
        return False
    majority = DEFAULT_MAJORITY if majority_pct is None else majority_pct
    return clean <= majority + DEAD_MARGIN or (top_pred_pct is not None and top_pred_pct >= DEAD_SHARE)


def result_did_not_learn(res: dict) -> bool:
    """:func:`did_not_learn` of one suite result (its recorded flag, else from ``acc["clean"]`` and, when
    recorded, its class shares)."""
    if res.get("did_not_learn") is not None:
        return bool(res["did_not_learn"])
    return did_not_learn(res.get("acc", {}).get("clean"), res.get("majority_pct"), res.get("top_pred_pct"))


def lowest_logit_distance(results: dict, eps: float):
    """``(run name, distance)`` of the lowest FGSM / R-FGSM logit distance at ``eps`` among the runs that learned
    (a constant predictor's 0.00 says nothing about masking), or None."""
    alive = {n: r["logit_dist"] for n, r in results.items()
             if r.get("eps") == eps and r.get("logit_dist") is not None and not result_did_not_learn(r)}
    return min(alive.items(), key=lambda kv: kv[1]) if alive else None


FAIRNESS_NOTE = ("**Not a ranking.** Every method runs at the kit's default setting for it (one `TrainConfig` "
                 "each), one seed, one budget, without searching its settings on this dataset: a method can lose "
                 "here to a setting, not to a rival. A fair comparison (each method at its best, chosen on "
                 "validation images, over seeds) is `experiments/peers_study.py` (`results/peers-study/`).")


def render_suite(summary: dict, out) -> str:
    """``SUITE.md``: one row per method and eps, then the cost of each method and the published anchors. A run that
    did not learn (:func:`did_not_learn`) gets "did not learn" where its attack accuracies would stand: they are
    the share of the class it predicts, not robustness."""
    env, sc = summary["environment"], summary["scale_settings"]
    lines = [f"# Single-step methods side by side: {summary['dataset'].upper()}, scale `{summary['scale']}`", "",
             f"Produced by `gmreg-lab reproduce --suite peers --dataset {summary['dataset']} --scale "
             f"{summary['scale']} --out {out}` on {env.get('gpu') or env.get('processor') or env.get('machine')} "
             f"({env.get('cpu_count')} CPUs, torch {env.get('torch')}). One training budget for all (see "
             f"`suite.json`: `scale_settings`, each run's `config`); first {sc['eval_limit']} test images.", "",
             FAIRNESS_NOTE, "",
             f"Worst case: an image counts as robust only if every attack of `{sc['worst']}` fails on it (run one "
             "after another on what the earlier ones left). Logit distance: mean L2 distance of the FGSM and "
             "R-FGSM logits on the test images (the paper's diagnostic). Collapse: the PGD probe (PGD-10 on 200 "
             "validation images) fell under 10 % and stayed there to the end after having reached "
             f"{summary.get('collapse_peak', 30):g} % (catastrophic overfitting, Wong, Rice & Kolter 2020), looked "
             "for in every method's whole training history, the proposed method's included.", "",
             "Evaluated model: each run's best-validation epoch (the epoch with the best I-FGSM-3 accuracy on "
             "the validation images, the paper's selection rule; "
             + ("`best_epoch` in `suite.json`" if any(r.get("best_epoch") is not None for r in
                                                      summary.get("runs", {}).values())
                else "which epoch that was is not recorded in this suite's `suite.json`") + "), not its last epoch, "
             "so a collapse late in training may not show in the attack columns: read the collapse column.", "",
             f"*Did not learn*: clean accuracy within {DEAD_MARGIN:g} points of the majority-class rate of the "
             f"evaluated images, or {DEAD_SHARE:g} % or more of them predicted as one class. Such a run is a "
             "constant predictor: its attack accuracies are that class's share, not robustness, so none is "
             "printed.", ""]
    parts = (_suite_results(summary), _suite_cost(summary), _suite_anchors(summary))
    return "\n".join(lines + [line for part in parts for line in part]) + "\n"


def _suite_results(summary: dict) -> list:
    res, sc = summary.get("results", {}), summary["scale_settings"]
    lines = ["| method | eps | clean | FGSM | PGD-40 | worst case | logit distance | collapsed at iteration |",
             "|---|---|---|---|---|---|---|---|"]
    for eps in sc["eps_list"]:
        for m in summary["methods"]:
            r = res.get(f"{m}_eps{eps:g}")
            if r is None:
                continue
            acc, c = r["acc"], r["collapse"]
            pgd = next((v for k, v in acc.items() if k.startswith("pgd")), None)
            coll = str(c["iteration"]) if c["collapsed"] else f"no (PGD probe peak {_fmt(c['peak'], 0)} %)"
            if result_did_not_learn(r):
                lines.append(f"| {SUITE_NAMES.get(m, m)} | {eps:g} | {_fmt(acc.get('clean'), 1)} | — | — | "
                             f"did not learn | — | {coll} |")
                continue
            lines.append(f"| {SUITE_NAMES.get(m, m)} | {eps:g} | {_fmt(acc.get('clean'), 1)} | "
                         f"{_fmt(acc.get('fgsm'), 1)} | {_fmt(pgd, 1)} | **{_fmt(r['worst']['robust'], 1)}** | "
                         f"{_fmt(r['logit_dist'], 2)} | {coll} |")
    lines.append("")
    for eps in sc["eps_list"]:
        low = lowest_logit_distance(res, eps)
        dead = [SUITE_NAMES.get(r["method"], r["method"]) for r in res.values()
                if r.get("eps") == eps and result_did_not_learn(r)]
        if low is not None:
            lines.append(f"- eps {eps:g}: lowest logit distance among the runs that learned: "
                         f"{SUITE_NAMES.get(res[low[0]]['method'], low[0])} ({_fmt(low[1], 2)})"
                         + (f"; did not learn: {', '.join(dead)}" if dead else "") + ".")
    return lines + [""]


def _suite_cost(summary: dict) -> list:
    bench = summary.get("bench")
    if not bench:
        return []
    lines = ["## Cost: seconds per 50k-image epoch, measured side by side (`gmreg-lab bench`)", "",
             f"Batch {bench['batch_size']}, {bench['device']} ({bench.get('cpu', 'CPU not recorded')}); every "
             "method timed in the same rounds, interleaved, in each precision listed (ratios within one "
             "precision; a step that always computes in fp32 says so in its row)."
             + (f" The kit's \"auto\" precision picks {bench['precision_auto']} here." if bench.get("precision_auto")
                else ""), "",
             "| method | precision | s/epoch | / FGSM-AT | / PGD-AT |", "|---|---|---|---|---|"]
    spe = bench["seconds_per_epoch"]
    precisions = bench.get("precisions") or [bench["precision"]]
    for m in summary["methods"]:
        for i, prec in enumerate(precisions):
            tag = f"+{prec}" if i else ""
            keys = [k for k in spe if k.split("+")[0] == m and k.endswith(tag)
                    and (tag or not any(k.endswith(f"+{p}") for p in precisions[1:]))]
            k = max(keys, key=len) if keys else None   # the fastest variant measured ("+graph" on a GPU)
            if k is None:
                continue
            base = k.replace(m, "fgsm", 1)
            pgd = k.replace(m, "pgd", 1)
            shown = f"fp32 (its step always; the others {prec})" if m in FP32_STEPS and prec != "fp32" else prec
            lines.append(f"| {SUITE_NAMES.get(m, m)} | {shown} | {_fmt(spe[k], 1)} | "
                         f"{_fmt(spe[k] / spe[base] if base in spe else None)} | "
                         f"{_fmt(spe[k] / spe[pgd] if pgd in spe else None, 3)} |")
    return lines + [""]


def _suite_anchors(summary: dict) -> list:
    lines = ["## Published anchors (their models and settings, not ours)", "",
             "| method | dataset | eps | model | clean (%) | reported (%) | AutoAttack (%) | source |",
             "|---|---|---|---|---|---|---|---|"]
    for a in summary.get("anchors", []):
        lines.append(f"| {SUITE_NAMES.get(a['method'], a['method'])} | {a['dataset']} | {a['eps']:.4g} | "
                     f"{a['model']} | {a.get('clean', '—')} | {a.get('reported', '—')} | {a['autoattack']} | "
                     f"{a['source']} |")
    return lines


# --- audit ----------------------------------------------------------------------------------------------------------
def render_audit(result: dict, title: str) -> str:
    """``audit.md``: the verdict in plain words, the white-box table with the worst case, the checklist."""
    mark = {True: "pass", False: "FAIL", None: "skip"}
    lines = [f"# Gradient-masking audit: {title}", "", f"{result['n']} images, eps = {result['eps']:.4g}.", "",
             "## Verdict", "", result["verdict"], "", "## White-box accuracy (%)", "",
             "| attack | accuracy |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result["table"].items()]
    w = result["worst_case"]
    lines += [f"| **worst case** (robust only if every attack fails) | **{_fmt(w['robust'])}** |", "",
              "Broken first by: " + ", ".join(f"{k} {v}" for k, v in w["broke"].items()) + ".", ""]
    notes = result.get("preflight") or []
    lines += ["## Pre-flight checks (AutoAttack's)", "",
              *([f"- {n}" for n in notes] or ["- nothing to note: logits, deterministic, enough classes for DLR"]), ""]
    lines += ["## The checklist", "", "Kinds: *masking* = a failure is a sign of gradient masking; *convergence* = "
              "an attack had not converged (its number overstates robustness); *leaking* = label leaking, a separate "
              "effect, not masking.", ""]
    lines += [_check_line(c, mark) for c in result["checklist"]["checks"]]
    return "\n".join(lines) + "\n"

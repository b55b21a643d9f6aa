"""The Markdown of a reproduction (``TABLES.md``): each table beside the paper's values, the cross-check and the
gradient-masking checklist. Pure formatting of the ``summary`` dict that :func:`gmreg_lab.reproduce.reproduce`
writes; nothing here trains or attacks."""

from __future__ import annotations

import statistics
from typing import Optional

from . import paper
from .evaluate import parse_attacks


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
    lines = ["## Gradient-masking checklist", "", "| model | verdict | failed checks |", "|---|---|---|"]
    lines += [f"| {_label(name)} | {'pass' if rep['passed'] else 'FAIL'} | {', '.join(rep['failed']) or '—'} |"
              for name, rep in masking.items()]
    lines.append("")
    for name, rep in masking.items():
        lines += [f"**{_label(name)}**", ""]
        lines += [f"- {mark[c['passed']]} `{c['name']}`: {c['detail']}" for c in rep["checks"]]
        lines.append("")
    return lines


# --- the peers suite ------------------------------------------------------------------------------------------------
SUITE_NAMES = {"fgsm": "FGSM-AT", "proposed": "Proposed (λ = 5)", "fgsm_rs": "FGSM-RS", "nfgsm": "N-FGSM",
               "gradalign": "GradAlign", "pgd": "PGD-AT"}


def render_suite(summary: dict, out) -> str:
    """``SUITE.md``: one row per method and eps, then the cost of each method and the published anchors."""
    env, sc = summary["environment"], summary["scale_settings"]
    lines = [f"# Single-step methods side by side: {summary['dataset'].upper()}, scale `{summary['scale']}`", "",
             f"Produced by `gmreg-lab reproduce --suite peers --dataset {summary['dataset']} --scale "
             f"{summary['scale']} --out {out}` on {env.get('gpu') or env.get('processor') or env.get('machine')} "
             f"({env.get('cpu_count')} CPUs, torch {env.get('torch')}). One training budget for all (see "
             f"`suite.json`: `scale_settings`, each run's `config`); first {sc['eval_limit']} test images.", "",
             f"Worst case: an image counts as robust only if every attack of `{sc['worst']}` fails on it (run one "
             "after another on what the earlier ones left). Logit distance: mean L2 distance of the FGSM and "
             "R-FGSM logits on the test images (the paper's diagnostic). Collapse: the PGD probe (PGD-10 on 200 "
             "validation images) fell under 10 % and stayed there to the end after having reached "
             f"{summary.get('collapse_peak', 30):g} % (catastrophic overfitting).", "",
             "| method | eps | clean | FGSM | PGD-40 | worst case | logit distance | collapsed at iteration |",
             "|---|---|---|---|---|---|---|---|"]
    res = summary.get("results", {})
    for eps in sc["eps_list"]:
        for m in summary["methods"]:
            r = res.get(f"{m}_eps{eps:g}")
            if r is None:
                continue
            acc = r["acc"]
            pgd = next((v for k, v in acc.items() if k.startswith("pgd")), None)
            c = r["collapse"]
            coll = str(c["iteration"]) if c["collapsed"] else f"no (PGD probe peak {_fmt(c['peak'], 0)} %)"
            lines.append(f"| {SUITE_NAMES.get(m, m)} | {eps:g} | {_fmt(acc.get('clean'), 1)} | "
                         f"{_fmt(acc.get('fgsm'), 1)} | {_fmt(pgd, 1)} | **{_fmt(r['worst']['robust'], 1)}** | "
                         f"{_fmt(r['logit_dist'], 2)} | {coll} |")
    lines.append("")
    bench = summary.get("bench")
    if bench:
        lines += ["## Cost: seconds per 50k-image epoch, measured side by side (`gmreg-lab bench`)", "",
                  f"Batch {bench['batch_size']}, {bench['device']} ({bench.get('cpu', 'CPU not recorded')}); every "
                  "method timed in the same rounds, interleaved, in each precision listed (ratios within one "
                  f"precision). The kit's \"auto\" precision picks {bench.get('precision_auto', '?')} here.", "",
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
                lines.append(f"| {SUITE_NAMES.get(m, m)} | {prec} | {_fmt(spe[k], 1)} | "
                             f"{_fmt(spe[k] / spe[base] if base in spe else None)} | "
                             f"{_fmt(spe[k] / spe[pgd] if pgd in spe else None, 3)} |")
        lines.append("")
    lines += ["## Published anchors (their models and settings, not ours)", "",
              "| method | dataset | eps | model | AutoAttack (%) | source |", "|---|---|---|---|---|---|"]
    for a in summary.get("anchors", []):
        lines.append(f"| {SUITE_NAMES.get(a['method'], a['method'])} | {a['dataset']} | {a['eps']:.4g} | "
                     f"{a['model']} | {a['autoattack']} | {a['source']} |")
    return "\n".join(lines) + "\n"


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
              "Broken first by: " + ", ".join(f"{k} {v}" for k, v in w["broke"].items()) + ".", "",
              "## The checklist", ""]
    lines += [f"- {mark[c['passed']]} `{c['name']}`: {c['detail']}" for c in result["checklist"]["checks"]]
    return "\n".join(lines) + "\n"

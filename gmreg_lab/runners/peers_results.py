"""Reading a finished (or running) peers study folder -- the one ``experiments/peers_study.py`` writes -- into plain
rows for tables, figures and notebook 07. Nothing here trains or attacks; it reads the JSON files each finished run
wrote and never a run directory.

Folder layout: ``grid/<name>.json`` (validation scores at the grid's budget), ``warmup/<name>-s<seed>.json``,
``final/<name>-s<seed>.json`` and ``anchor/wong-s<seed>.json`` (test scores), ``selected.json`` (the choice per
method and batch size) and ``study.json`` (the study's scale).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from ..errors import GmregError

# method -> the TrainConfig field of its key setting (None: FGSM-AT has none); experiments/peers_study.py's SETTINGS
# agree (tested)
SETTING_FIELD = {"fgsm": None, "proposed": "lam", "fgsm_rs": "rs_step", "nfgsm": "nfgsm_k", "gradalign": "align_lam"}
SETTING_SYMBOL = {"proposed": "λ", "fgsm_rs": "α/ε", "nfgsm": "k", "gradalign": "λ", "anchor": "α/ε"}
METHOD_NAMES = {"fgsm": "FGSM-AT", "proposed": "proposed", "fgsm_rs": "FGSM-RS", "nfgsm": "N-FGSM",
                "gradalign": "GradAlign", "anchor": "Wong et al.'s recipe (anchor)"}
FELL_POINTS = 20.0   # a probe that ends this many points under its peak fell, collapse verdict or not


def fell(c: dict) -> bool:
    """A probe that ended FELL_POINTS or more under its peak, whether or not the collapse verdict fired."""
    return c.get("peak") is not None and c.get("final") is not None and c["peak"] - c["final"] >= FELL_POINTS


def settled(sel: dict) -> dict:
    """Chosen run name -> whether its choice is settled (False while its group waits for an edge step)."""
    pending = set(sel.get("extend", {}))
    return {c["name"]: g not in pending for g, c in sel.get("chosen", {}).items()}


def _read(folder: Path, stage: str) -> list:
    d = folder / stage
    out = []
    for p in sorted(d.glob("*.json")) if d.exists() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise GmregError(f"{p}: not a readable study result ({e})") from None
    return out


def _check(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise GmregError(f"{folder}: no peers study here (run experiments/peers_study.py, or give its --out folder)")
    return folder


def selected(folder) -> dict:
    p = _check(folder) / "selected.json"
    return json.loads(p.read_text()) if p.exists() else {"chosen": {}, "incomplete": {}, "extend": {}}


def _setting(cfg: dict):
    fld = SETTING_FIELD.get(cfg["method"])
    return cfg.get(fld) if fld else None


def _is_edge(cfg: dict, settings: dict) -> bool:
    """Whether a grid run's value lies outside its method's planned grid (study.json "settings"): an edge step."""
    return bool(settings) and _setting(cfg) not in settings.get(cfg["method"], [None])


def _split_group(group: str) -> tuple:
    """'fgsm_rs-b64' -> ('fgsm_rs', 64)."""
    m, b = group.rsplit("-b", 1)
    return m, int(b)


def setting_label(method: str, value, warmup: bool, sep: str = ", ") -> str:
    """'λ = 10, ε warm-up' / 'no warm-up' -- a chosen setting in words (``sep`` between its two parts)."""
    s = "" if value is None else f"{SETTING_SYMBOL.get(method, 'value')} = {value:g}{sep}"
    return s + ("ε warm-up" if warmup else "no warm-up")


def grid_rows(folder) -> list:
    """The grid's runs (edge steps included), as rows for ``gl.plots.setting_search``."""
    folder = _check(folder)
    final = {n for n, ok in settled(selected(folder)).items() if ok}
    study = folder / "study.json"
    settings = json.loads(study.read_text()).get("settings", {}) if study.exists() else {}
    rows = []
    for r in _read(folder, "grid"):
        cfg, c = r["config"], r["collapse"]
        rows.append({"method": cfg["method"], "batch": cfg["batch_size"], "value": _setting(cfg),
                     "warmup": cfg["eps_warmup_epochs"] > 0, "worst": r["val"]["worst"],
                     "clean": r["val"]["clean"], "collapsed": bool(c["collapsed"] or fell(c)),
                     "collapse_verdict": bool(c["collapsed"]),
                     "edge": _is_edge(cfg, settings),
                     "did_not_learn": r["val"]["did_not_learn"], "chosen": r["name"] in final, "name": r["name"]})
    return rows


def test_rows(folder, stage: str = "final") -> list:
    """One row per finished run of ``stage`` ("final" or "anchor"), test images: method (``"anchor"`` for the
    anchor), batch, setting value, warm-up, seed, clean, PGD-50x10, the two APGD worst cases, ``robust`` (the
    lower of those), the logit distance, did_not_learn, collapse (verdict, iteration, peak, final, fell). ``robust``
    is None for a run that did not learn: its accuracy under attack is not robustness."""
    if stage not in ("final", "anchor"):
        raise GmregError(f"stage {stage!r}: the test numbers are in 'final' or 'anchor'")
    rows = []
    for r in _read(_check(folder), stage):
        cfg, t, c = r["config"], r["test"], r["collapse"]
        dead = bool(t["did_not_learn"])
        rows.append({"method": "anchor" if stage == "anchor" else cfg["method"], "batch": cfg["batch_size"],
                     "value": _setting(cfg), "warmup": cfg["eps_warmup_epochs"] > 0, "seed": cfg["seed"],
                     "name": r["name"], "images": t["images"], "clean": t["clean"],
                     "pgd": None if dead else t["pgd"], "apgd_ours": None if dead else t["apgd_worst_ours"],
                     "apgd_torchattacks": None if dead else t["apgd_worst_torchattacks"],
                     "robust": None if dead else t["robust"], "logit_dist": t.get("logit_dist"),
                     "did_not_learn": dead, "collapsed": bool(c["collapsed"]), "collapse_iteration": c["iteration"],
                     "peak": c["peak"], "final_probe": c["final"], "fell": fell(c), "cpu": r.get("cpu"),
                     "peak_iteration": _peak_iteration(r),
                     "train_seconds": r.get("train_seconds"), "iterations": r.get("iterations")})
    return rows


def _peak_iteration(r: dict):
    """The iteration of the highest PGD probe of a run's history (the first, if tied), or None."""
    probe = r.get("probe (iteration, pgd10 %, clean %, eps_train)") or []
    return max(probe, key=lambda p: (p[1], -p[0]))[0] if probe else None


def incomplete(folder) -> list:
    """(method, batch) of the groups whose grid runs are not all finished."""
    return [_split_group(g) for g in selected(folder).get("incomplete", {})]


def panel_notes(folder) -> dict:
    """(method, batch) -> the line gl.plots.setting_search writes on a panel whose choice is not made yet."""
    notes = {k: "grid runs still<br>to finish" for k in incomplete(folder)}
    notes.update({k: "choice waits for<br>its edge step" for k in pending(folder)})
    return notes


def summary(rows: list) -> list:
    """Per (method, batch, value, warm-up): seeds, mean / min / max of clean and robust accuracy over the seeds
    that learned, how many did not learn, how many collapsed or fell. Sorted by method, then batch."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["method"], r["batch"], r["value"], r["warmup"]), []).append(r)
    out = []
    for (m, b, v, w), rs in groups.items():
        learned = [r["robust"] for r in rs if r["robust"] is not None]
        out.append({"method": m, "batch": b, "value": v, "warmup": w, "seeds": sorted(r["seed"] for r in rs),
                    "clean_mean": statistics.mean(r["clean"] for r in rs),
                    "robust_mean": statistics.mean(learned) if learned else None,
                    "robust_min": min(learned) if learned else None,
                    "robust_max": max(learned) if learned else None,
                    "did_not_learn": sum(r["did_not_learn"] for r in rs),
                    "collapsed_or_fell": sum(r["collapsed"] or r["fell"] for r in rs)})
    order = list(METHOD_NAMES)
    return sorted(out, key=lambda s: (order.index(s["method"]) if s["method"] in order else 99, s["batch"]))


def progress(folder) -> dict:
    """What the study has finished and what it still waits for: counts per stage, the groups still unselected,
    the final runs expected (selected groups x seeds) and those finished."""
    folder = _check(folder)
    sel = selected(folder)
    study = json.loads((folder / "study.json").read_text()) if (folder / "study.json").exists() else {}
    seeds = study.get("seeds", [0, 1])
    groups = {f"{m}-b{b}" for m in SETTING_FIELD for b in study.get("batches", [32, 64])}
    final = {r["name"] for r in _read(folder, "final")}
    expected = {f"{name}-s{s}" for name, ok in settled(sel).items() if ok for s in seeds}
    settings = study.get("settings", {})
    grid = _read(folder, "grid")
    base = [r for r in grid if not _is_edge(r["config"], settings)]
    return {"grid": len(grid), "grid_base": len(base), "grid_edge": len(grid) - len(base),
            "grid_planned": sum(len(v) for v in settings.values()) * 2 * len(study.get("batches", [32, 64])),
            "warmup": len(_read(folder, "warmup")),
            "anchor": len(_read(folder, "anchor")), "final": len(final),
            "groups": len(groups),
            "groups_selected": len(set(sel.get("chosen", {})) - set(sel.get("extend", {}))),   # settled choices
            "groups_waiting": sorted(set(sel.get("incomplete", {})) | set(sel.get("extend", {}))),
            "final_expected": len(groups) * len(seeds), "final_missing_of_selected": sorted(expected - final),
            "complete": len(final) >= len(groups) * len(seeds) and expected <= final}


def group_name(group: str) -> str:
    """'fgsm_rs-b64' -> 'FGSM-RS at batch 64'."""
    m, b = _split_group(group)
    return f"{METHOD_NAMES.get(m, m)} at batch {b}"


def pending(folder) -> list:
    """(method, batch) of the groups whose best setting waits for its edge step."""
    return [_split_group(g) for g in selected(folder).get("extend", {})]


def progress_line(p: dict) -> str:
    """progress() in one sentence."""
    if p["complete"]:
        return f"complete: all {p['final']} final runs finished"
    return (f"in progress: {p['final']} of {p['final_expected']} final runs finished; settings chosen for "
            f"{p['groups_selected']} of {p['groups']} method / batch-size groups" +
            (f" (still open: {', '.join(group_name(g) for g in p['groups_waiting'])})" if p["groups_waiting"]
             else "") +
            f"; {p['grid_base']} of the grid's {p['grid_planned']} runs and {p['grid_edge']} edge steps finished, "
            f"{p['anchor']} anchor seeds")


def warmup_check(folder) -> list:
    """The warm-up check: per (batch, warm-up) the validation worst case of each seed (seed 0 from the grid, the
    others from the warmup stage) of the proposed method at lambda 5; rows {"batch", "warmup", "seeds": {seed:
    worst}}."""
    folder = _check(folder)
    runs = _read(folder, "warmup")
    names = {r["name"].rsplit("-s", 1)[0] for r in runs}
    runs += [r for r in _read(folder, "grid") if r["name"] in names]
    out: dict = {}
    for r in runs:
        cfg = r["config"]
        key = (cfg["batch_size"], cfg["eps_warmup_epochs"] > 0)
        out.setdefault(key, {})[cfg["seed"]] = r["val"]["worst"]
    return [{"batch": b, "warmup": w, "seeds": dict(sorted(v.items()))} for (b, w), v in sorted(out.items())]


def published_anchor() -> dict:
    """Wong et al.'s published MNIST numbers (gmreg_lab.paper.WONG_MNIST_REPORTED)."""
    from .. import paper
    return dict(paper.WONG_MNIST_REPORTED)


def comparison_rows(folder, anchor: bool = True) -> tuple:
    """(rows, published) for ``gl.plots.seeds_comparison``: the final runs grouped by batch size, each method at its
    chosen setting, and (``anchor``) the anchor's seeds beside Wong et al.'s published AutoAttack number."""
    rows = test_rows(folder, "final") + (test_rows(folder, "anchor") if anchor else [])
    out, published = [], {}
    for r in rows:
        if r["method"] == "anchor":
            group, label = "anchor", f"Wong et al.'s<br>FGSM-RS recipe<br>(their CNN, batch {r['batch']})"
            published[label] = published_anchor()["autoattack"]
        else:
            group = f"batch {r['batch']}"
            label = f"{METHOD_NAMES[r['method']]}<br>{setting_label(r['method'], r['value'], r['warmup'], '<br>')}"
        out.append({**r, "group": group, "label": label, "collapsed": r["collapsed"] or r["fell"]})
    order = list(METHOD_NAMES)
    out.sort(key=lambda r: (r["method"] == "anchor", r["batch"], order.index(r["method"]), r["seed"]))
    return out, published


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def ranking(summary_rows: list, batch: int) -> dict:
    """The final table's order at one batch size and what its seeds can and cannot say about it.

    Methods are ordered by mean robust accuracy over the seeds that learned; a method none of whose seeds learned
    is left out of the order (``did_not_learn``). ``overlapping_top``: the methods whose seed range reaches the top
    method's lowest seed, so that these seeds do not separate them from it; ``clear``: no such method. Also the
    proposed method's place (1-based, None if it is absent or did not learn), and the methods with a seed that
    collapsed or fell, or did not learn."""
    rows = [s for s in summary_rows if s["batch"] == batch and s["method"] != "anchor"]
    learned = sorted((s for s in rows if s["robust_mean"] is not None), key=lambda s: -s["robust_mean"])
    order = [s["method"] for s in learned]
    top = learned[0] if learned else None
    overlapping = [s["method"] for s in learned[1:] if s["robust_max"] >= top["robust_min"]] if top else []
    rank = order.index("proposed") + 1 if "proposed" in order else None
    return {"batch": batch, "order": order, "rows": learned, "top": top["method"] if top else None,
            "overlapping_top": overlapping, "clear": top is not None and not overlapping,
            "did_not_learn": [s["method"] for s in rows if s["robust_mean"] is None],
            "some_seed_did_not_learn": [s["method"] for s in learned if s["did_not_learn"]],
            "collapsed_or_fell": [s["method"] for s in rows if s["collapsed_or_fell"]],
            "proposed_rank": rank, "proposed_is_top": rank == 1, "proposed_clearly_top": rank == 1 and not overlapping}


def ranking_line(r: dict) -> str:
    """ranking() in plain sentences, saying it plainly when the proposed method is not the most robust."""
    name = lambda m: METHOD_NAMES.get(m, m)                                      # noqa: E731
    if r["top"] is None:
        return f"batch {r['batch']}: no method has a run that learned"
    top = r["rows"][0]
    out = [f"batch {r['batch']}: the highest mean robust accuracy is {name(top['method'])}'s "
           f"({top['robust_mean']:.1f} % [{top['robust_min']:.1f}, {top['robust_max']:.1f}])"]
    if r["overlapping_top"]:
        out.append(f"the seed range of {', '.join(name(m) for m in r['overlapping_top'])} reaches it, so these seeds "
                   "do not separate them")
    else:
        out.append("no other method's seed range reaches it")
    n = len(r["order"])
    if r["proposed_rank"] is None:
        out.append("the proposed method " + ("did not learn" if "proposed" in r["did_not_learn"] else
                                             "has no finished run here"))
    elif r["proposed_rank"] == 1:
        out.append(f"the proposed method ranks first of {n}" + ("" if r["clear"] else ", not separated from the next"))
    else:
        p = r["rows"][r["proposed_rank"] - 1]
        out.append(f"the proposed method is not the most robust here: it ranks {_ordinal(r['proposed_rank'])} of {n} "
                   f"({p['robust_mean']:.1f} % [{p['robust_min']:.1f}, {p['robust_max']:.1f}])")
    if r["did_not_learn"]:
        out.append("no seed learned: " + ", ".join(map(name, r["did_not_learn"])))
    if r["some_seed_did_not_learn"]:
        out.append("a seed did not learn (left out of its mean): " + ", ".join(map(name, r["some_seed_did_not_learn"])))
    if r["collapsed_or_fell"]:
        out.append("collapsed or fell in at least one seed: " + ", ".join(map(name, r["collapsed_or_fell"])))
    return "; ".join(out)


def warmup_seed_gap(check: list) -> Optional[dict]:
    """The largest gap between two seeds of one setting in the warm-up check (warmup_check's rows): {"gap" (points),
    "batch", "warmup"}; None while no setting has two seeds."""
    gaps = [{"gap": max(c["seeds"].values()) - min(c["seeds"].values()), "batch": c["batch"], "warmup": c["warmup"]}
            for c in check if len(c["seeds"]) > 1]
    return max(gaps, key=lambda g: g["gap"]) if gaps else None


def anchor_verdict(folder) -> Optional[dict]:
    """The anchor against Wong et al.'s published AutoAttack number: {"seeds", "best_seed", "mean" (over the seeds
    that learned), "published", "reproduced" (some seed reaches the published number), "fell" (anchor rows whose
    probe fell)}; None before an anchor seed has finished."""
    rows = test_rows(folder, "anchor")
    learned = [r["robust"] for r in rows if r["robust"] is not None]
    if not rows:
        return None
    aa = published_anchor()["autoattack"]
    best_seed = max(learned) if learned else None
    return {"seeds": len(rows), "best_seed": best_seed, "mean": statistics.mean(learned) if learned else None,
            "published": aa, "reproduced": best_seed is not None and best_seed >= aa,
            "fell": [r for r in rows if r["fell"]]}


PROBE_KEY = "probe (iteration, pgd10 %, clean %, eps_train)"
CUT_SHORT_POINTS = 5.0   # a PGD probe that gained this much over a run's last quarter was still rising: cut short
_TAIL = 3                # probe points averaged at each end of the last quarter (one probe: 200 images, noisy)


def _drop_twins(iterations: list, *series: list) -> tuple:
    """An epoch's end logs a probe a few iterations after a periodic one: keep the later of two such near-twins."""
    keep = [k for k in range(len(iterations)) if k + 1 == len(iterations) or iterations[k + 1] - iterations[k] > 10]
    return tuple([s[k] for k in keep] for s in (iterations, *series))


def last_quarter_gain(iterations: list, pgd: list) -> Optional[float]:
    """How much the PGD probe rose over the last quarter of a run: the mean of its last ``_TAIL`` points minus the
    mean of the ``_TAIL`` points up to three quarters of the run (the last learning-rate cut of the study's
    schedule). None for a history too short to tell."""
    if not iterations:
        return None
    iterations, pgd = _drop_twins(iterations, pgd)
    cut = 0.75 * iterations[-1]
    before = [p for i, p in zip(iterations, pgd) if i <= cut][-_TAIL:]
    after = [p for i, p in zip(iterations, pgd) if i > cut][-_TAIL:]
    if len(before) < _TAIL or len(after) < _TAIL:
        return None
    return statistics.mean(after) - statistics.mean(before)


def learning_curves(folder, stage: str = "final") -> list:
    """One row per finished run of ``stage``: method, batch, seed, warm-up, name, and its PGD-10 / clean probe
    history (``iterations``, ``pgd``, ``clean``), with ``gain`` (last_quarter_gain), ``cut_short`` (the probe
    still rose CUT_SHORT_POINTS or more over the last quarter) and ``recovering`` (cut short, after the probe had
    fallen FELL_POINTS or more from its peak: rising again, not still learning for the first time). The evidence
    that the budget was long enough."""
    if stage not in ("grid", "warmup", "final", "anchor"):
        raise GmregError(f"stage {stage!r}: one of grid, warmup, final, anchor")
    rows = []
    for r in _read(_check(folder), stage):
        cfg = r["config"]
        probe = r.get(PROBE_KEY) or []
        its, pgd, clean = _drop_twins(*([p[k] for p in probe] for k in range(3)))
        gain = last_quarter_gain(its, pgd)
        top = max(range(len(pgd)), key=lambda k: pgd[k]) if pgd else None
        dropped = top is not None and pgd[top] - min(pgd[top:]) >= FELL_POINTS
        rows.append({"method": "anchor" if stage == "anchor" else cfg["method"], "batch": cfg["batch_size"],
                     "seed": cfg["seed"], "warmup": cfg["eps_warmup_epochs"] > 0, "value": _setting(cfg),
                     "name": r["name"], "iterations": its, "pgd": pgd, "clean": clean, "gain": gain,
                     "peak": pgd[top] if pgd else None, "low_after_peak": min(pgd[top:]) if pgd else None,
                     "end": pgd[-1] if pgd else None,
                     "cut_short": gain is not None and gain >= CUT_SHORT_POINTS,
                     "recovering": gain is not None and gain >= CUT_SHORT_POINTS and dropped})
    return rows


TEST_PARTS = ("clean+pgd", "apgd ours", "apgd torchattacks", "logit distance")   # peers_study's test-parts.json


def in_flight(folder) -> list:
    """The runs started but not finished (a run directory under ``runs/`` without its result JSON): stage, name,
    epochs finished (the "epoch" rows of its history.csv) of those configured, which parts of its test evaluation
    are kept (runs/<dir>/test-parts.json), and ``selected`` (False for a final run whose setting is no longer the
    chosen one). A killed study resumes each selected one at these points."""
    folder = _check(folder)
    study = json.loads((folder / "study.json").read_text()) if (folder / "study.json").exists() else {}
    expected = {f"{n}-s{s}" for n, ok in settled(selected(folder)).items() if ok for s in study.get("seeds", [0, 1])}
    out = []
    for d in sorted((folder / "runs").glob("*-*")) if (folder / "runs").exists() else []:
        stage, name = d.name.split("-", 1)
        if stage not in ("grid", "warmup", "final", "anchor") or (folder / stage / f"{name}.json").exists():
            continue
        try:
            epochs = json.loads((d / "config.json").read_text()).get("epochs")
        except (OSError, json.JSONDecodeError):
            epochs = None
        hist = d / "history.csv"
        done = sum(line.startswith("epoch,") for line in hist.read_text().splitlines()) if hist.exists() else 0
        parts_file = d / "test-parts.json"
        try:
            kept = json.loads(parts_file.read_text()) if parts_file.exists() else {}
        except (OSError, json.JSONDecodeError):
            kept = {}
        out.append({"stage": stage, "name": name, "epochs_done": done, "epochs": epochs,
                    "eval_parts_done": [p for p in TEST_PARTS if p in kept],
                    "selected": stage != "final" or name in expected})
    return out


def in_flight_line(r: dict) -> str:
    """One in_flight() row in words."""
    total = "?" if r["epochs"] is None else f"{r['epochs']:g}"
    s = f"{r['stage']} {r['name']}: {r['epochs_done']} of {total} epochs trained"
    if r["epochs"] is not None and r["epochs_done"] >= r["epochs"]:
        s += "; test evaluation not finished" + (f" (kept: {', '.join(r['eval_parts_done'])})"
                                                 if r["eval_parts_done"] else "")
    if not r["selected"]:
        s += " -- not a selected setting any more: the final stage does not resume it"
    return s


def final_against_grid(folder) -> list:
    """Each finished final run beside the grid run that chose its setting (seed 0, half the budget, validation
    images). The final run is not the grid run made longer: its eps warm-up and learning-rate cuts stretch with its
    length. Rows: name, method, batch, seed, grid_name, grid_val_worst, grid_iterations, grid_probe_end (the grid
    run's PGD-10 probe at its end), probe_at_grid_end (this run's probe at the last probe up to that iteration),
    probe_end (this run's probe at its end), and its test numbers: robust (None if it did not learn), pgd,
    logit_dist, did_not_learn."""
    folder = _check(folder)
    grid = {r["name"]: r for r in _read(folder, "grid")}
    out = []
    for r in _read(folder, "final"):
        probe = _drop_twins(*([p[k] for p in (r.get(PROBE_KEY) or [])] for k in range(2)))
        gname = r["name"].rsplit("-s", 1)[0]
        g = grid.get(gname)
        gprobe = (g.get(PROBE_KEY) or []) if g else []
        g_its = g.get("iterations") if g else None
        at = [p for i, p in zip(*probe) if g_its is not None and i <= g_its]
        t = r["test"]
        dead = bool(t["did_not_learn"])
        out.append({"name": r["name"], "method": r["config"]["method"], "batch": r["config"]["batch_size"],
                    "seed": r["config"]["seed"], "grid_name": gname,
                    "grid_val_worst": g["val"]["worst"] if g else None, "grid_iterations": g_its,
                    "grid_probe_end": gprobe[-1][1] if gprobe else None,
                    "probe_at_grid_end": at[-1] if at else None, "probe_end": probe[1][-1] if probe[1] else None,
                    "robust": None if dead else t["robust"], "pgd": None if dead else t["pgd"],
                    "logit_dist": t.get("logit_dist"), "did_not_learn": dead})
    return out

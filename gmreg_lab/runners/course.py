"""The executed course (``./kit.sh course``): every notebook run top to bottom in full mode with papermill, then
written as a static, offline HTML page a learner can read first ("what you should see").

Each page says at its top the command, the machine, the date and the time it took, and records the SHA-256 of the
notebook it was made from; ``course/MANIFEST.json`` holds the same for all of them (``tests/test_course.py`` fails
when a notebook changed after its page was made). plotly.js is shipped once (``course/plotly.min.js``); every
figure becomes a ``<div>`` that uses it. Interactive widgets need a kernel: the pages say so where they stood.

Before the notebooks, the build trains up front every run the last build recorded for them (``course_plan``: one
worker process per core, longest first), so that a notebook finds its runs cached and no core idles while one long
run trains alone; ``BUILD.json`` and the index say how long each part took.

    python -m gmreg_lab.runners.course [--out course] [--only 01,03] [--timeout 7200] [--no-pretrain] [--jobs N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import json
import os
import re
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from ..runs import atomic_write_text, environment_info

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

ENV_COURSE_BUILD = "GMREG_COURSE_BUILD"   # set by `./kit.sh course` while it executes the notebooks


def _precision(entry: dict) -> str:
    """", in bf16" from an entry's machine line ("... precision auto = bf16 ..."), or "" when it names none."""
    m = re.search(r"precision auto = (\w+)", entry.get("machine") or "")
    return f", in {m.group(1)}" if m else ""


def times_text(e: dict) -> str:
    """A course manifest entry's times in words: the first run, the training in it, and the time with its runs
    cached (the first run less its training). A first run kept from an earlier build names that build's precision."""
    if e.get("seconds") is None:
        return "not timed"
    first = f"{e['seconds'] / 60:.1f} min"
    if "trained_runs" not in e:
        return first
    f = e.get("first_run")
    if f and e["trained_runs"] < f.get("trained_runs", 0):
        older = (" on an earlier version of the notebook" if e.get("sha256") and f.get("sha256")
                 and f["sha256"] != e["sha256"] else "")
        return (f"first run {f['seconds'] / 60:.1f} min (build of {f.get('started', '?')}{_precision(f)}{older}), "
                f"{f['training_seconds'] / 60:.1f} min of it with runs training (wall clock, probes included: "
                f"{f['trained_runs']} run(s)); with the runs cached {first} (that build{_precision(e)}"
                + (f", which trained {e['trained_runs']} run(s) itself)" if e["trained_runs"] else ")")
                + (" (that first run stopped at a failing check of the notebook, so a whole one takes a little longer)"
                   if f.get("passed") is False else ""))
    if e["trained_runs"] == 0:
        return f"{first} (its runs were cached already)"
    cached = max(0.0, e["seconds"] - e["training_seconds"]) / 60
    return (f"first run {first}, {e['training_seconds'] / 60:.1f} min of it with runs training (wall clock, probes "
            f"included: {e['trained_runs']} run(s)); with the runs cached about {cached:.1f} min (first run less its "
            f"training)")


PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
COMMAND = "./kit.sh course"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    from ..runtime import cpu_description, resolve_precision

    bf16 = cpu_description().split("cores, ", 1)[-1]       # "AVX-512-BF16 yes, AMX-BF16 no"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    from ..runtime import ENV_PRECISION

    forced = os.environ.get(ENV_PRECISION, "").strip()
    why = f" (forced by ${ENV_PRECISION})" if forced else ""
    return (f"{cpu}, {os.cpu_count()} CPU cores ({bf16}), {gpu}, "
            f"precision auto = {resolve_precision('auto', dev)}{why}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _static_outputs(nb) -> None:
    """Give every plotly figure an HTML rendering (a div drawn by the shared plotly.js) and every widget a note."""
    import plotly.io as pio

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data and "text/html" not in data:
                fig = pio.from_json(json.dumps(data[PLOTLY_MIME]))
                data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False)
            elif WIDGET_MIME in data and _is_progress_bar(data.get("text/plain", "")):
                plain = data["text/plain"]
                plain = "".join(plain) if isinstance(plain, list) else str(plain)
                text = html.escape(re.sub(r":?\s*\d+%$", "", plain.split("|")[0].rstrip()))
                data["text/html"] = f"<p class='progress'><em>(progress bar) {text}</em></p>"
            elif WIDGET_MIME in data:
                data["text/html"] = ("<p><em>(An interactive widget stood here: open the notebook in JupyterLab, "
                                     "<code>./kit.sh lab</code>, to use it.)</em></p>")


def _is_progress_bar(text) -> bool:
    """A tqdm.notebook bar's plain-text form: ``desc:   0%|          | 0/500 [00:00<?, ?it/s]``."""
    text = "".join(text) if isinstance(text, list) else str(text)
    return "|" in text and ("it/s]" in text or "s/it]" in text)


def to_html(nb, banner: str) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    notes = [line.strip() for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "stream"
             for line in out.get("text", "").splitlines() if line.startswith("NOTE:")]
    banner += "".join(f"\n>\n> **{n}**" for n in notes)     # what a notebook flags (06: the CIFAR-10 stand-in) on top
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(banner))
    _static_outputs(nb)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    html, _ = exporter.from_notebook_node(nb)
    return finish_page(html)


NETWORK_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>\s*')
MATHJAX = "mathjax/tex-svg-full.js"        # vendored MathJax 3.2.2 (course/mathjax/README.md): SVG, no web fonts
MATHJAX_CONFIG = re.compile(r'<script type="text/x-mathjax-config">.*?</script>\s*', re.S)
HEAD_STYLE = re.compile(r'<style type="text/css">.*?</style>\s*', re.S)
STYLESHEET = "course.css"
PAGE_MARK = "<!-- gmreg-course-page -->"
NAV_MARK = "<!-- gmreg-course-nav -->"
MATHS = (PAGE_MARK + "\n<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
         "displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']], processEscapes: true, processEnvironments: true}, "
         "svg: {fontCache: 'global'}};</script>\n"
         f'<script src="{MATHJAX}" id="MathJax-script"></script>\n'
         '<script src="plotly.min.js" charset="utf-8"></script>\n'
         f'<link rel="stylesheet" href="{STYLESHEET}">\n')
EXTRA_CSS = """
/* gmreg-lab course: navigation, progress-bar notes */
nav.gmreg-nav { font: 14px/1.4 system-ui, sans-serif; padding: 0.5em 1em; background: #f1f3f5;
                border-bottom: 1px solid #dee2e6; display: flex; gap: 1.5em; }
nav.gmreg-nav a { text-decoration: none; }
p.progress { color: #495057; font-size: 90%; }
"""


def page_title(html_text: str) -> str:
    """The notebook's own heading (its first ``<h1>``), as plain text."""
    m = re.search(r"<h1[^>]*>(.*?)</h1>", html_text, re.S)
    if not m:
        return "gmreg-lab"
    text = re.sub(r"<[^>]+>", "", m.group(1)).replace("¶", "").strip()
    return html.unescape(text)


def finish_page(page: str, css: Optional[str] = None) -> str:
    """Make one nbconvert page stand alone offline (idempotent): no script from a CDN, the maths typeset by the
    vendored MathJax (SVG output, so no web fonts to fetch from ``file://``), plotly.js and the stylesheet shared by
    every page (``course.css``: the head's inline styles move there when they are the shared ones, ``css``), and the
    tab titled by the notebook's heading."""
    page = strip_network_scripts(page)
    page = MATHJAX_CONFIG.sub("", page)
    if css is not None and "".join(HEAD_STYLE.findall(page[:page.index("</head>")])).strip() == css.strip():
        head_end = page.index("</head>")
        page = HEAD_STYLE.sub("", page[:head_end]) + page[head_end:]
    if PAGE_MARK not in page:
        page = page.replace('<script src="plotly.min.js" charset="utf-8"></script>\n', "", 1)
        page = page.replace("</head>", MATHS + "</head>", 1)
    title = html.escape(page_title(page))
    return re.sub(r"<title>.*?</title>", f"<title>{title}</title>", page, count=1, flags=re.S)


def shared_css(page: str) -> str:
    """The inline styles of an nbconvert page's head (what ``course.css`` holds, plus the course's own rules)."""
    return "".join(HEAD_STYLE.findall(page[:page.index("</head>")]))


def add_nav(page: str, order: list, name: str) -> str:
    """Previous / index / next links on top of the page (replacing earlier ones); ``order``: page file names."""
    if NAV_MARK in page:
        a = page.index(NAV_MARK)
        b = page.index(NAV_MARK, a + len(NAV_MARK)) + len(NAV_MARK)
        page = page[:a] + page[b:]
    i = order.index(name)
    links = []
    if i > 0:
        links.append(f'<a href="{order[i - 1]}">← {html.escape(order[i - 1][:-5])}</a>')
    links.append('<a href="index.html">index</a>')
    if i + 1 < len(order):
        links.append(f'<a href="{order[i + 1]}">{html.escape(order[i + 1][:-5])} →</a>')
    nav = f'{NAV_MARK}<nav class="gmreg-nav">{"".join(links)}</nav>{NAV_MARK}'
    at = page.index(">", page.index("<body")) + 1
    return page[:at] + nav + page[at:]


def refresh_pages(out: Path) -> list:
    """Apply :func:`finish_page` and the navigation to every page of the manifest, write ``course.css`` and copy
    the vendored MathJax if ``out`` is not the repository's ``course/``. Run after every page is made (and by
    ``--refresh``): pages made by older versions get the same offline maths, titles, links and stylesheet."""
    out = Path(out)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    order = [e["html"] for _, e in sorted(manifest.items())]
    src = ROOT / "course" / MATHJAX
    if not src.is_file():
        raise FileNotFoundError(f"vendored MathJax missing: {src} (npm pack mathjax@3.2.2; see course/mathjax)")
    if (out / MATHJAX).resolve() != src.resolve():
        (out / MATHJAX).parent.mkdir(parents=True, exist_ok=True)
        for f in src.parent.iterdir():
            shutil.copy(f, (out / MATHJAX).parent / f.name)
    css = next((c for c in (shared_css((out / n).read_text()) for n in order) if c), None)
    if css is not None:       # pages not yet refreshed carry nbconvert's styles inline: they move to course.css
        (out / STYLESHEET).write_text(re.sub(r"</?style[^>]*>", "", css) + EXTRA_CSS)
    elif not (out / STYLESHEET).exists():
        raise FileNotFoundError(f"{out / STYLESHEET} is missing and no page carries its styles: re-make the course")
    for name in order:
        page = out / name
        page.write_text(add_nav(finish_page(page.read_text(), css), order, name))
    for e in manifest.values():          # the index lists pages by their notebooks' headings
        e["title"] = page_title((out / e["html"]).read_text())
    _record(out, manifest, replace=True)
    return order


def strip_network_scripts(html: str) -> str:
    """Drop the scripts nbconvert's template loads from a CDN (MathJax, require.js): an offline reader's browser
    would try the network and wait for it. The maths then shows as TeX source until MathJax is vendored."""
    return NETWORK_SCRIPT.sub("", html)


def run_one(path: Path, out: Path, timeout: int, command: Optional[str] = None) -> dict:
    """Execute ``path`` in full mode, write ``out/<name>.html``; returns its manifest entry. ``command``: the build's
    command line, for the page's banner."""
    import nbformat
    import papermill as pm

    from .cache import runs_dir
    from .course_plan import ENV_USED, plan_entries, used_runs

    digest, started, t0 = sha256(path), dt.datetime.now().astimezone(), time.time()
    cache_before = run_stamps(runs_dir())
    executed = out / ".executed" / str(os.getpid()) / path.name   # per process: two --only runs may share out/
    executed.parent.mkdir(parents=True, exist_ok=True)
    used_log = executed.parent / f"{path.stem}.used"
    used_log.unlink(missing_ok=True)
    env_smoke = os.environ.pop("GMREG_SMOKE", None)
    os.environ[ENV_COURSE_BUILD] = "1"      # the notebook's set-up cell: "this is the course build itself"
    os.environ[ENV_USED] = str(used_log)    # every run folder the notebook asks for (the next build's plan)
    error = None
    try:
        pm.execute_notebook(str(path), str(executed), parameters={"SMOKE": False}, kernel_name="python3",
                            cwd=str(path.parent), progress_bar=False, execution_timeout=timeout,
                            store_widget_state=False)
    except Exception as e:  # papermill's execution error: the notebook's own assertion failed, or a cell broke
        error = f"{type(e).__name__}: {str(e)[-2000:]}"
    finally:
        os.environ.pop(ENV_COURSE_BUILD, None)
        os.environ.pop(ENV_USED, None)
        if env_smoke is not None:
            os.environ["GMREG_SMOKE"] = env_smoke
    seconds = time.time() - t0
    trained = trained_since(runs_dir(), cache_before, t0)
    used = used_runs(used_log)
    entry = {"notebook": f"notebooks/{path.name}", "sha256": digest, "html": f"{path.stem}.html",
             "command": COMMAND, "machine": machine(), "started": started.isoformat(timespec="seconds"),
             "seconds": round(seconds, 1), "passed": error is None, "error": error,
             "trained_runs": len(trained), "training_seconds": round(training_wall_seconds(runs_dir(), cache_before,
                                                                                          t0), 1),
             "exercises": exercises(path), "title": notebook_title(path), "environment": environment_info(),
             "runs": plan_entries(used, runs_dir())}
    status = ("every assertion of its final cell held" if error is None
              else f"**it FAILED**: {error.splitlines()[0] if error else ''}")
    cached = (f" with {len(used) - len(trained)} of the {len(used)} runs it uses already in the run cache (trained "
              f"by this build's up-front step, an earlier notebook or an earlier build; the course index gives its "
              f"first run with nothing cached)" if len(used) > len(trained) else "")
    banner = (f"> **Executed course copy.** Made by `{command or COMMAND}` on {entry['machine']}, started "
              f"{entry['started']}, {seconds / 60:.1f} minutes{cached}, full mode (not smoke); {status}. Source: "
              f"`notebooks/{path.name}`, SHA-256 `{digest[:16]}…`. Figures are static here; the widgets need "
              f"JupyterLab (`./kit.sh lab`).")
    if executed.exists():
        (out / entry["html"]).write_text(to_html(nbformat.read(executed, as_version=4), banner))
    return entry


STALE_MARK = "<!-- gmreg-course: stale page -->"


def _stale_banner(e: dict, current: str) -> str:
    return (f'{STALE_MARK}<div style="border:2px solid #c00;padding:0.6em;margin:0.6em 0;background:#fff4f4">'
            f"<b>This page is out of date.</b> It was executed from an earlier version of <code>{e['notebook']}</code> "
            f"(SHA-256 {e['sha256'][:16]}…); the notebook has changed since (now {current[:16]}…), so some text, "
            f"numbers or figures here may differ from what the notebook shows today. Re-make it with "
            f"<code>{COMMAND} --only {e['notebook'].split('/')[-1][:2]}</code>.</div>{STALE_MARK}")


def mark_stale(out: Path, root: Path = ROOT) -> list:
    """Put an "out of date" banner on top of every page whose notebook changed since the page was made, record the
    notebook's current SHA-256 under ``stale`` in the manifest, and lift the banner from pages that are current
    again. Returns the names of the stale pages. (Used while the notebooks change and the course waits to be
    re-made once; a learner must never read a stale page without being told.)"""
    out = Path(out)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    stale = []
    for name, e in manifest.items():
        page = out / e["html"]
        html = page.read_text()
        if STALE_MARK in html:     # drop an earlier banner
            a = html.index(STALE_MARK)
            b = html.index(STALE_MARK, a + len(STALE_MARK)) + len(STALE_MARK)
            html = html[:a] + html[b:]
        current = sha256(Path(root) / e["notebook"])
        e.pop("stale", None)
        if current != e["sha256"]:
            at = html.index(">", html.index("<body")) + 1
            html = html[:at] + _stale_banner(e, current) + html[at:]
            e["stale"] = {"notebook_sha256": current,
                          "marked": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            stale.append(name)
        page.write_text(html)
    _record(out, manifest, replace=True)
    return stale


def run_stamps(root: Path) -> dict:
    """``{run folder: mtime of its metrics.json}`` for every run cached under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {d.name: (d / "metrics.json").stat().st_mtime for d in root.iterdir() if (d / "metrics.json").is_file()}


def _training_spans(root: Path, before: dict, t0: float) -> dict:
    """``{run: (start, end)}`` for the runs under ``root`` that trained after ``t0`` (new or updated metrics.json):
    from config.json (or ``t0`` if earlier) to the last metrics.json."""
    out = {}
    for name, stamp in run_stamps(root).items():
        if stamp > t0 and stamp != before.get(name):
            cfg = Path(root) / name / "config.json"
            out[name] = (max(t0, cfg.stat().st_mtime) if cfg.is_file() else t0, stamp)
    return out


def trained_since(root: Path, before: dict, t0: float) -> dict:
    """Runs under ``root`` that trained after ``t0`` and the wall seconds each took."""
    return {name: max(0.0, b - a) for name, (a, b) in _training_spans(root, before, t0).items()}


def training_wall_seconds(root: Path, before: dict, t0: float) -> float:
    """Wall seconds during which at least one run under ``root`` was training since ``t0``: the union of the
    runs' intervals (runs trained side by side overlap, and their sum would exceed the time)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(_training_spans(root, before, t0).values()):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def notebook_title(path: Path) -> str:
    """The notebook's own heading: the first markdown line that starts with "# "."""
    import nbformat

    for c in nbformat.read(path, as_version=4).cells:
        if c.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", c.source, re.M)
            if m:
                return m.group(1).strip()
    return Path(path).stem


def exercises(path: Path) -> dict:
    """How many exercises the notebook has, and how many of their solutions train a model (the cost a learner
    adds by doing them: a trained run is minutes, the rest seconds)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    count = sum(1 for c in nb.cells if c.cell_type == "markdown" and re.search(r"^#+\s*Exercise", c.source, re.M))
    solutions = [c.source for c in nb.cells if c.cell_type == "markdown" and "<details>" in c.source]
    training = sum(1 for src in solutions if re.search(r"cached_train\(|gl\.train\(|\.train_blocking\(", src))
    return {"count": count, "train": training}


def _times(e: dict) -> str:
    return times_text(e)


def _exercise_cost(e: dict) -> str:
    x = e.get("exercises")
    if not x:
        return ""
    trains = (f", {x['train']} of them {'trains a model' if x['train'] == 1 else 'train models'} (minutes each)"
              if x["train"] else ", none trains a model")
    return f"; {x['count']} exercise(s){trains}"


def index_html(manifest: dict, build: Optional[dict] = None) -> str:
    rows = "\n".join(f'<li><a href="{e["html"]}">{html.escape(e.get("title", name))}</a> — {_times(e)}'
                     f'{_exercise_cost(e)}; {"passed" if e.get("passed") else "FAILED"}, '
                     f'started {e.get("started", "?")}'
                     f'{" — <b>out of date</b>: the notebook changed since" if e.get("stale") else ""}</li>'
                     for name, e in manifest.items())
    machines = html.escape("; ".join(sorted({e.get("machine", "") for e in manifest.values()} - {""})))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>gmreg-lab: the executed course</title>"
            f"<link rel='stylesheet' href='{STYLESHEET}'></head><body><h1>gmreg-lab: the executed course</h1>"
            f"<p>Every notebook run top to bottom in full mode by <code>{COMMAND}</code> (in the last whole build, or "
            f"re-made alone by <code>--only</code>, as its banner says): what you should see when "
            f"you run them yourself. Times are wall-clock on {machines or 'the machine named on each page'} (a "
            f"training cell says before it starts how long it will take on yours).</p>"
            + (f"<p>{build_text(build)}</p>" if build else "") + f"<ol>{rows}</ol>"
            f"</body></html>")


FIRST_RUN_KEYS = ("seconds", "training_seconds", "trained_runs", "started", "machine", "sha256", "passed")


def keep_first_run(entry: dict, old: Optional[dict]) -> dict:
    """A build that found a notebook's runs cached (all, or all but a few: a panel run stopped at its verdict is
    trained again) measures less than a first run: it keeps the last measured first run (``old``'s, or the one
    ``old`` kept) under ``"first_run"``, so the index still says what a first run costs. A build that trained as
    many runs as that first run did is the new first run."""
    if not old:
        return entry
    first = old.get("first_run") or ({k: old[k] for k in FIRST_RUN_KEYS if k in old} if old.get("trained_runs")
                                     else None)
    if not first or entry.get("trained_runs", 0) >= first.get("trained_runs", 0):
        return entry        # trained as much as the last first run did (or more): this build is the first run now
    return {**entry, "first_run": first}


def _record(out: Path, entries: dict, replace: bool = False) -> dict:
    """Merge ``entries`` into ``out/MANIFEST.json`` and rewrite the index, under a lock and atomically, so that two
    ``--only`` runs side by side (one per core) keep each other's pages; returns the whole manifest."""
    import fcntl

    manifest_file, scratch = out / "MANIFEST.json", out / ".executed"
    scratch.mkdir(parents=True, exist_ok=True)
    with open(scratch / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() and not replace else {}
        entries = {name: keep_first_run(e, manifest.get(name)) for name, e in entries.items()}
        manifest = dict(sorted({**manifest, **entries}.items()))
        try:
            build = json.loads((out / BUILD_FILE).read_text())
        except (OSError, ValueError):
            build = None
        files = {"MANIFEST.json": json.dumps(manifest, indent=2) + "\n", "index.html": index_html(manifest, build)}
        for name, text in files.items():
            tmp = scratch / f"{name}.{os.getpid()}"
            tmp.write_text(text)
            tmp.replace(out / name)
    return manifest


BUILD_FILE = "BUILD.json"     # the last whole build: its runs trained up front, each notebook, the total


def pretrain_recorded(out: Path, notebooks: list, *, jobs=None) -> dict:
    """Train up front the runs that ``out/MANIFEST.json`` records for ``notebooks`` (paths), in one worker per core
    (``course_plan.pretrain``); returns what it did, for ``BUILD.json``."""
    from .cache import runs_dir
    from .course_plan import plan_from_manifest, pretrain

    try:
        manifest = json.loads((Path(out) / "MANIFEST.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    plan = plan_from_manifest(manifest, [p.stem for p in notebooks])
    print(f"course: {len(plan)} run(s) recorded by earlier builds for these notebooks", flush=True)
    done = pretrain(plan, runs_dir(), jobs=jobs)
    done["planned"] = len(plan)
    print(f"course: trained {len(done['trained'])} run(s) up front in {done['seconds'] / 60:.1f} min"
          + (f"; failed (left to their notebooks): {', '.join(done['failed'])}" if done["failed"] else ""), flush=True)
    return done


def build_text(build: Optional[dict]) -> str:
    """The last whole build in words, for the index: the runs trained up front, the notebooks, the total."""
    if not build:
        return ""
    nbs = build.get("notebooks") or {}
    pre = build.get("pretrain")
    inside = sum(v.get("trained_runs", 0) for v in nbs.values())
    parts = []
    if pre:
        parts.append(f"{len(pre.get('trained', []))} run(s) trained up front in {pre.get('processes', 1)} processes, "
                     f"{pre['seconds'] / 60:.1f} min")
    parts.append(f"the {len(nbs)} notebooks {sum(v['seconds'] for v in nbs.values()) / 60:.1f} min"
                 + (f" (they trained {inside} run(s) themselves)" if inside else " (every run cached)"))
    failed = sorted(k for k, v in nbs.items() if v.get("passed") is False)
    if failed:
        parts.append(f"{', '.join(failed)} stopped at a failing check in it (their pages were re-made since, see "
                     f"their banners)")
    return (f"The last whole build (<code>{html.escape(build['command'])}</code>, started {build['started']}, on "
            f"{html.escape(build['machine'])}) took <b>{build['seconds'] / 60:.1f} min</b>: {'; '.join(parts)}. "
            f"A page re-made since by <code>--only</code> says so in its banner; each line below gives the first run "
            f"and the page's own build (\"that build\").")


def main(argv=None) -> int:
    import plotly

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "course"))
    ap.add_argument("--only", default=None, help="comma-separated notebook prefixes, e.g. 01,03 (default: all)")
    ap.add_argument("--timeout", type=int, default=7200, help="seconds one cell may take")
    ap.add_argument("--mark-stale", action="store_true",
                    help="run nothing: put an 'out of date' banner on every page whose notebook changed since")
    ap.add_argument("--refresh", action="store_true",
                    help="run nothing: give every page the offline maths, titles, links and shared stylesheet")
    ap.add_argument("--no-pretrain", action="store_true",
                    help="do not train the recorded runs up front: each notebook trains its runs when it reaches them")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes for the runs trained up front "
                    "(default: one per CPU core)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.mark_stale or a.refresh:
        if a.refresh:
            print(f"course: {len(refresh_pages(out))} page(s) refreshed")
        if a.mark_stale:
            stale = mark_stale(out)
            print(f"course: {len(stale)} page(s) marked out of date: {', '.join(stale) or 'none'}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "plotly.min.js")
    wanted = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
              if a.only is None or p.name[:2] in a.only.split(",")]
    t0, started = time.time(), dt.datetime.now().astimezone()
    build = {"command": " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])]), "machine": machine(),
             "started": started.isoformat(timespec="seconds"), "notebooks": {}}
    if not a.no_pretrain:
        build["pretrain"] = pretrain_recorded(out, wanted, jobs=a.jobs)
    for path in wanted:
        print(f"course: {path.name} ...", flush=True)
        entry = run_one(path, out, a.timeout, build["command"])
        manifest = _record(out, {path.stem: entry})
        build["notebooks"][path.stem] = {"seconds": entry["seconds"], "trained_runs": entry["trained_runs"],
                                         "passed": entry["passed"]}
        itself = f" (it trained {entry['trained_runs']} run(s) itself)" if entry["trained_runs"] else ""
        print(f"course: {path.name} {'passed' if entry['passed'] else 'FAILED'} in {entry['seconds'] / 60:.1f} min"
              f"{itself}", flush=True)
    build["seconds"] = round(time.time() - t0, 1)
    if a.only is None:       # the index states the last whole build: how long a first run of the course takes
        atomic_write_text(out / BUILD_FILE, json.dumps(build, indent=2) + "\n")
    print(f"course: the build took {build['seconds'] / 60:.1f} min", flush=True)
    manifest = _record(out, {})
    refresh_pages(out)
    shutil.rmtree(out / ".executed" / str(os.getpid()), ignore_errors=True)
    failed = [k for k, e in manifest.items() if not e["passed"]]
    if failed:
        print(f"course: FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

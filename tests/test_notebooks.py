"""The notebook series: committed clean, well-formed, and every notebook runs top to bottom in smoke mode.

Each notebook ends with a cell of assertions about what it showed, so running it is a real check. The executed copies
go to a temporary directory; the committed notebooks are never written.
"""

import ast
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
SERIES = ["01_adversarial_examples", "02_gradient_masking", "03_logit_distance", "04_regularized_training",
          "05_evaluation", "06_cifar10", "07_catastrophic_overfitting"]
NOTEBOOKS = [NB_DIR / f"{name}.ipynb" for name in SERIES]
WIDGET_CALL = re.compile(r"gl\.widgets\.(attack_explorer|training_panel|live_figure|landscape_explorer|"
                         r"snapshot_scrubber)\(")
SOLUTION = re.compile(r"<details><summary>Solution[^<]*</summary>\s*```python\n(.*?)```\s*</details>", re.S)


def solutions(nb) -> list:
    """The code of every exercise solution (a ```python block inside a <details> block of a markdown cell)."""
    return [m.group(1) for c in nb.cells if c.cell_type == "markdown" for m in SOLUTION.finditer(c.source)]
REMOVED_HELPERS = re.compile(r"\blab\.(sweep|train_until|masking_checklist)\b")
MAX_EXECUTED_BYTES = 3_000_000   # plotly outputs of the smoke runs are a few hundred kB; widget state would be MBs


def _ids(p):
    return p.stem


def test_the_series_is_complete():
    found = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == SERIES


def test_python3_kernel_runs_this_environment():
    # papermill, nbval and JupyterLab start the "python3" kernel: it must be this venv's python
    from jupyter_client.kernelspec import KernelSpecManager

    exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
    same = exe in ("python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]) \
        or Path(exe).resolve() == Path(sys.executable).resolve()
    assert same, f"the python3 kernelspec runs {exe}; run `{sys.executable} -m ipykernel install --sys-prefix`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_notebook_is_clean_and_well_formed(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{path.name}: commit notebooks with outputs cleared"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the committed notebook"
    intro = nb.cells[0]
    assert intro.cell_type == "markdown"
    for heading in ("What this teaches", "What it needs", "How long"):
        assert heading in intro.source, f"{path.name}: the introduction should say {heading!r}"
    params = code[0]
    assert "parameters" in params.metadata.get("tags", []), f"{path.name}: first code cell must be tagged parameters"
    assert 'SMOKE = os.environ.get("GMREG_SMOKE") == "1"' in params.source
    # plain values only: papermill injects its values *after* this cell, so nothing here may derive from SMOKE
    for node in ast.parse(params.source).body:
        if isinstance(node, ast.Assign) and node.targets[0].id != "SMOKE":
            ast.literal_eval(node.value)
        else:
            assert isinstance(node, (ast.Import, ast.Assign)), ast.dump(node)
    assert "import gmreg_lab as gl" in code[1].source
    last = code[-1]
    assert "assert " in last.source and 'print("all checks passed")' in last.source, \
        f"{path.name}: the last cell checks what the notebook showed"
    for c in code:
        if WIDGET_CALL.search(c.source):
            assert "nbval-ignore-output" in c.metadata.get("tags", []), \
                f"{path.name}: tag widget cells nbval-ignore-output:\n{c.source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_every_notebook_has_exercises_with_solutions_and_derivations(path):
    nb = nbformat.read(path, as_version=4)
    tasks = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("### Exercise")]
    assert len(tasks) >= 2 and len(solutions(nb)) == len(tasks), f"{path.name}: exercises with hidden solutions"
    if path.stem[:2] in ("01", "02", "03", "04", "07"):
        assert any("$$" in c.source for c in nb.cells if c.cell_type == "markdown"), f"{path.name}: a derivation"
    for c in nb.cells:   # no stray values printed by the set-up (e.g. a trailing torch.manual_seed(0))
        if c.cell_type == "code":
            assert not c.source.rstrip().endswith("manual_seed(0)"), f"{path.name}: noise in\n{c.source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebooks_use_gl_and_the_core_implementations(path):
    # one import (`gl.lab`, `gl.fixtures`, `gl.plots` are package attributes), and no second copy of core features:
    # eps sweeps are gl.evaluate.sweep, early checkpoints snapshots, the masking checklist gl.diagnostics.masking_report
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert "from gmreg_lab" not in c.source, f"{path.name}: use `import gmreg_lab as gl`:\n{c.source}"
        assert not REMOVED_HELPERS.search(c.source), f"{path.name}: a removed lab helper:\n{c.source}"


def _with_solutions(path: Path, dest: Path) -> int:
    """``path`` with every exercise solution appended as a cell printing "solution N ran"; returns how many."""
    src = nbformat.read(path, as_version=4)
    sols = solutions(src)
    for i, code in enumerate(sols, 1):
        src.cells.append(nbformat.v4.new_code_cell(code + f"\nprint('solution {i} ran')"))
    nbformat.write(src, dest)
    return len(sols)


@pytest.mark.slow
def test_nbval_runs_the_first_notebook_and_its_solutions_cell_by_cell(tmp_path):
    """``pytest --nbval`` on notebook 01 and its exercise solutions: a plain kernel (the smoke switch from the
    environment, no papermill parameters), every cell a test item. Notebook 01 runs only here; the others run once,
    under papermill, below."""
    pytest.importorskip("nbval")
    dest = tmp_path / NOTEBOOKS[0].name
    n = _with_solutions(NOTEBOOKS[0], dest)
    env = {**os.environ, "GMREG_SMOKE": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                        "--nbval-current-env", "--rootdir", str(tmp_path), str(dest)], cwd=NB_DIR, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    cells = sum(1 for c in nbformat.read(dest, as_version=4).cells if c.cell_type == "code")
    assert f"{cells} passed" in r.stdout and "failed" not in r.stdout and n >= 1, r.stdout[-2000:]


# longest first, so that two lanes finish together (smoke times of 2026-12-02)
PAPERMILL_ORDER = ["04_regularized_training", "02_gradient_masking", "05_evaluation", "06_cifar10", "03_logit_distance",
                   "07_catastrophic_overfitting"]


@pytest.fixture(scope="module")
def smoke_notebooks(tmp_path_factory):
    """Notebooks 02-07, each with its exercise solutions appended, run once under papermill in smoke mode, two at a
    time: one kernel per core with one thread each (smoke notebooks spend their time in the interpreter, so two
    one-thread kernels side by side finish sooner than one two-thread kernel after another). ``{path: (executed
    copy, error or None)}``; each notebook's test below checks its own."""
    pm = pytest.importorskip("papermill")
    out = tmp_path_factory.mktemp("smoke-notebooks")

    def run(path):
        withsol, dest = out / f"with_solutions_{path.name}", out / path.name
        _with_solutions(path, withsol)
        try:
            pm.execute_notebook(str(withsol), str(dest), parameters={"SMOKE": True}, kernel_name="python3",
                                cwd=str(path.parent), progress_bar=False, store_widget_state=False)
            return dest, None
        except Exception as e:   # reported by that notebook's test
            return dest, e

    todo = sorted(NOTEBOOKS[1:], key=lambda p: PAPERMILL_ORDER.index(p.stem))
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"        # read by each kernel when it starts
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
            return dict(zip(todo, pool.map(run, todo)))
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before


def test_the_papermill_order_lists_every_notebook_it_runs():
    assert sorted(PAPERMILL_ORDER) == sorted(p.stem for p in NOTEBOOKS[1:])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=_ids)
def test_notebook_runs_in_smoke_mode(path, smoke_notebooks):
    """The notebook ran, then every exercise solution of it in the same kernel (so solutions never rot). Notebook
    01 runs under nbval instead (above)."""
    out, error = smoke_notebooks[path]
    if error is not None:
        raise error
    n_cells = len(nbformat.read(path, as_version=4).cells)
    src = nbformat.read(out.parent / f"with_solutions_{path.name}", as_version=4)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    own = [c for c in nb.cells[:n_cells + 1] if c.cell_type == "code"]   # + 1: papermill's injected cell
    text = "".join(o.get("text", "") for o in own[-1].outputs if o.output_type == "stream")
    assert "all checks passed" in text
    ran = "".join(o.get("text", "") for c in nb.cells[n_cells + 1:] for o in c.get("outputs", []))
    assert all(f"solution {i} ran" in ran for i in range(1, len(solutions(src)) + 1)), ran[-2000:]
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "SMOKE = True" in injected[0].source
    # no bloated widget state: the executed notebook stays small and holds no saved widget models
    size = out.stat().st_size
    assert size < MAX_EXECUTED_BYTES, f"executed {path.name} is {size / 1e6:.1f} MB"
    state = nb.metadata.get("widgets", {})
    assert len(json.dumps(state)) < 10_000, f"executed {path.name} stores {len(json.dumps(state))} bytes of widgets"
    # figures render through plotly's mimetype (no CDN, no embedded plotly.js)
    mimes = {k for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) for k in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in mimes
    assert not any("cdn.plot.ly" in json.dumps(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)

"""The package stays easy to read: ruff-clean, no import circle, short functions, compute modules free of the
plotting / widget / runner layers."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "gmreg_lab"
COMPUTE = ("attacks", "config", "data", "diagnostics", "errors", "evaluate", "losses", "models", "runs", "runtime",
           "training", "paper", "landscape", "autoattack", "audit")
UPPER = ("plots", "widgets", "cli", "lab", "reproduce", "report_figures", "report_tables", "bench", "course", "suite",
         "jobs")
MAX_LINES = 60


def _imports(path: Path, top_level_only: bool) -> set:
    """Package modules that ``path`` imports (``from .x import``, ``from . import x``); with ``top_level_only``,
    only the imports that run when the module is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out |= {a.name for a in node.names}
    return out & {p.stem for p in PKG.glob("*.py")}


def test_no_import_circle():
    """Imports inside functions count too: a lazy import only hides a circle until that function runs."""
    graph = {p.stem: _imports(p, top_level_only=False) for p in PKG.glob("*.py") if p.stem != "__init__"}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import circle: " + " -> ".join(path + [m])
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            visit(n, path + [m])
        state[m] = "done"
    for m in sorted(graph):
        visit(m, [])


def test_compute_modules_never_import_the_upper_layers():
    for name in COMPUTE:
        bad = _imports(PKG / f"{name}.py", top_level_only=False) & set(UPPER)
        assert not bad, f"{name}.py imports {bad}: compute modules must not depend on plots/widgets/CLI/runners"


def test_functions_are_short():
    """No function over 60 lines, unless a `# long:` comment on its first line says why."""
    long = []
    for p in sorted(PKG.glob("*.py")):
        lines = p.read_text().splitlines()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES and "# long:" not in lines[node.lineno - 1]:
                    long.append(f"{p.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or (Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    r = subprocess.run([str(ruff), "check", "gmreg_lab", "tests", "benchmarks"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_method_list_lives_in_one_place():
    """config.METHODS is the list; the step table, the CLI's help and the training panel derive from it."""
    import gmreg_lab as gl
    from gmreg_lab.cli import TRAIN_FIELDS

    assert set(gl.training.STEPS) == set(gl.config.METHODS)
    assert next(h for f, _, h in TRAIN_FIELDS if f == "--method").startswith(", ".join(gl.config.METHODS))
    text = "\n".join(p.read_text() for p in PKG.glob("*.py") if p.stem != "config")
    assert '"fgsm_rs", "nfgsm", "gradalign")' not in text, "a second hand-written method list"

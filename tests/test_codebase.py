"""The package stays easy to read: ruff-clean, no import circle, short functions, and three layers, one folder
each, whose imports only go down: the science (``gmreg_lab/``), the runners (``gmreg_lab/runners/``), the views
(``gmreg_lab/views/``). The layer of a module is the folder it is in: no hand-written list to keep in step."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "gmreg_lab"
LAYERS = ("", "runners", "views")   # bottom to top: the package folder itself is the science
MAX_LINES = 60


def _modules(pkg: Path) -> dict:
    """Every module of the package at ``pkg``: dotted name -> file."""
    out = {}
    for p in pkg.rglob("*.py"):
        parts = p.relative_to(pkg.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, known: set, top_level_only: bool = False) -> set:
    """Package modules that module ``name`` (file ``path``) imports, relative imports resolved, absolute ones
    (``import gmreg_lab.views.plots``, ``from gmreg_lab.views import plots``) too; with ``top_level_only``, only those
    that run when the module is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            mod = f"{base}.{node.module}" if node.module else base
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            out |= subs or ({mod} & known)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= ({f"{node.module}.{a.name}" for a in node.names} & known) or ({node.module} & known)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names} & known
    return out - {name}


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS[1:]) else 0


ENTRY_POINTS = ("gmreg_lab", "gmreg_lab.__main__")   # the package's front door (lazy re-exports) and `python -m`


def layer_violations(pkg: Path) -> list:
    """``a -> b`` for every import of a module ``b`` from a higher layer than the importing module ``a``'s."""
    mods = _modules(pkg)
    return [f"{a} -> {b}" for a, p in sorted(mods.items()) if a not in ENTRY_POINTS
            for b in sorted(_imports(a, p, set(mods))) if layer(b) > layer(a)]


def test_no_import_circle():
    """Imports inside functions count too: a lazy import only hides a circle until that function runs. The
    package's ``__init__`` (which re-exports everything, lazily) is left out."""
    mods = _modules(PKG)
    graph = {m: _imports(m, p, set(mods)) - {"gmreg_lab", "gmreg_lab.runners", "gmreg_lab.views"}
             for m, p in mods.items() if m != "gmreg_lab"}
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


def test_imports_only_go_down_the_layers():
    """Science never imports a runner or a view, runners never import a view (imports inside functions count)."""
    assert layer_violations(PKG) == []


def test_the_layer_check_catches_an_import_that_goes_up(tmp_path):
    """The check above on a copy of the package with one science module importing a view, and one runner importing a
    view lazily, inside a function: both are reported."""
    copy = tmp_path / "gmreg_lab"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "losses.py").write_text((copy / "losses.py").read_text() + "\nfrom .views import plots  # noqa\n")
    (copy / "runners" / "jobs.py").write_text((copy / "runners" / "jobs.py").read_text()
                                              + "\n\ndef f():\n    from ..views.lab import recipe  # noqa\n")
    (copy / "models.py").write_text((copy / "models.py").read_text() + "\nimport gmreg_lab.runners.suite  # noqa\n")
    assert layer_violations(copy) == ["gmreg_lab.losses -> gmreg_lab.views.plots",
                                      "gmreg_lab.models -> gmreg_lab.runners.suite",
                                      "gmreg_lab.runners.jobs -> gmreg_lab.views.lab"]


def test_every_module_is_reachable_as_gl_name_from_its_folder():
    """``gl.<name>`` works for every module whichever folder holds it, and the package's table of homes is the
    folder layout itself (no module listed in the wrong folder, none missing)."""
    import gmreg_lab as gl

    on_disk = {p.stem: p.parent.name for p in PKG.glob("*/*.py") if p.stem != "__init__"}
    assert gl.HOMES == on_disk
    for p in PKG.rglob("*.py"):
        if p.stem not in ("__init__", "__main__"):
            assert getattr(gl, p.stem).__file__ == str(p), p


def test_functions_are_short():
    """No function over 60 lines, unless a `# long:` comment on its first line says why."""
    long = []
    for p in sorted(PKG.rglob("*.py")):
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
    from gmreg_lab.views.cli import TRAIN_FIELDS

    assert set(gl.training.STEPS) == set(gl.config.METHODS)
    assert next(h for f, _, h in TRAIN_FIELDS if f == "--method").startswith(", ".join(gl.config.METHODS))
    text = "\n".join(p.read_text() for p in PKG.rglob("*.py") if p.stem != "config")
    assert '"fgsm_rs", "nfgsm", "gradalign")' not in text, "a second hand-written method list"

"""Packaging: environment.yml (for conda users; conda cannot be installed here) names the same packages as pyproject,
and a wheel carries the package's data files."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


CONDA_NAMES = {"pytorch": "torch"}  # conda's name -> PyPI's name


def _name(req: str) -> str:
    name = re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")
    return CONDA_NAMES.get(name, name)


def test_environment_yml_matches_pyproject():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in pp["dependencies"]}
    for extra in pp["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    listed = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)", line)
        if m and m.group(1) not in ("pip", "python"):
            listed.add(_name(m.group(1)))
    listed.discard("-e")
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_console_script_is_declared():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pp["scripts"]["gmreg-lab"] == "gmreg_lab.views.cli:main"


def test_a_wheel_carries_the_recorded_curves(tmp_path):
    """Notebook 02 draws ``gmreg_lab/recorded/fgsm.json``: a non-editable install must ship it."""
    import subprocess
    import sys
    import zipfile

    import shutil

    src = tmp_path / "src"          # a copy: building in the checkout would leave a build/ folder there
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "results", "data", "course",
                                                              "build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("gmreg_lab-*.whl")
    assert "gmreg_lab/recorded/fgsm.json" in zipfile.ZipFile(wheel).namelist()

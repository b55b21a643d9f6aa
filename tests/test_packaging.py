"""environment.yml (for conda users; conda cannot be installed here) must name the same packages as pyproject."""

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

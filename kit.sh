#!/usr/bin/env bash
# gmreg-lab in one command.
#   ./kit.sh lab    set up .venv (first time only) and open JupyterLab on notebooks/
#   ./kit.sh test   set up .venv (first time only) and run the whole test suite (what CI runs)
#   ./kit.sh course train the runs the notebooks use (recorded by the last build) up front, one process per core,
#                   then run every notebook in full mode and write the executed, readable copies to course/
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=$VENV/bin/python

setup() {
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
  fi
  # torch first and pinned: 2.14.1 / 0.29.1 install from local disk on the project's machines.
  if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    echo "kit: installing torch and torchvision (about a minute)..."
    "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  fi
  local stamp=$VENV/.gmreg-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "kit: installing gmreg-lab with its notebook and test extras..."
    "$PY" -m pip install -q -e ".[notebooks,test]"
    # no "get official Jupyter news?" pop-up for a learner opening the course
    "$VENV/bin/jupyter" labextension disable "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1 || true
    touch "$stamp"
  fi
}

browser() {  # Debian's chromium for the real-browser notebook test (never `playwright install`)
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "kit: installing chromium for the browser test..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "kit: chromium could not be installed; the browser test will be skipped"
  fi
}

case "${1:-}" in
  lab)
    setup
    exec "$VENV/bin/jupyter" lab --notebook-dir=notebooks "${@:2}"
    ;;
  test)
    setup
    browser
    export GMREG_SMOKE=1   # notebooks run in smoke mode (tiny sizes) under papermill and nbval
    exec "$VENV/bin/pytest" "${@:2}"
    ;;
  course)
    setup
    exec "$PY" -m gmreg_lab.runners.course "${@:2}"
    ;;
  *)
    echo "usage: ./kit.sh lab | test [pytest args] | course [--only 01,03] [--no-pretrain] [--jobs N]" >&2
    exit 2
    ;;
esac

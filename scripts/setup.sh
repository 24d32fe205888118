#!/usr/bin/env bash
# Create .venv and install distill with its test dependencies. Safe to run again (fast when
# nothing changed). Torch: if none is installed yet, `torch==2.13.0` is asked for first; on
# machines that keep a CPU wheel of it on disk (pip find-links) pip takes that file instead
# of downloading a CUDA build. Elsewhere it is an ordinary PyPI install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
stamp="$VENV/.distill-installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && "$VENV/bin/python" -c "import distill, torch" 2>/dev/null; then
  exit 0
fi
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0" >&2
  pip_install "torch==${TORCH_VERSION:-2.13.0}"
fi
echo "setup: installing distill and its test dependencies" >&2
pip_install -e ".[dev]"
"$VENV/bin/python" -c "import distill, torch; print(f'setup: distill {distill.__version__}, torch {torch.__version__}')" >&2
touch "$stamp"

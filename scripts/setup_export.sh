#!/usr/bin/env bash
# Optional runtimes for `distill export` and its tests (run after scripts/setup.sh; safe to run again):
# the export + mobile extras into .venv (ExecuTorch declares no torch requirement, so torch stays as is),
# onnxruntime-web and playwright-core from npm into web/node_modules (no browser download), and
# Debian's chromium for the browser test when it is missing and apt-get can run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
stamp="$VENV/.distill-export-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the export and mobile extras" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev,export,mobile]" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$stamp"
fi
if command -v npm >/dev/null && { [ ! -d web/node_modules/onnxruntime-web ] || [ ! -d web/node_modules/playwright-core ]; }; then
  echo "setup: npm install --prefix web (onnxruntime-web, playwright-core)" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix web --no-audit --no-fund --loglevel=error
fi
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: apt-get install chromium" >&2
  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi

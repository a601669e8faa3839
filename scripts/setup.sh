#!/usr/bin/env bash
# Create .venv and install Protege with its pinned dependencies (offline-capable afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install -q --upgrade "pip>=24"
# torch is pinned in pyproject.toml so pip takes the local CPU wheel in the same resolve.
pip install -q -e '.[dev]'
echo "protege installed in $(pwd)/.venv" >&2

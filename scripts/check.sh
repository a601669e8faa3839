#!/usr/bin/env bash
# The whole test suite: lint, type check, unit and end-to-end tests, editor client checks.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
ruff check server distill_code indexing security tests bench
mypy
if [ -f editors/vscode/package.json ] && command -v npm >/dev/null; then
  # PROTEGE_NPM_INSTALLED: node_modules were installed beforehand (CI runs this file without a network).
  (cd editors/vscode && { [ -n "${PROTEGE_NPM_INSTALLED:-}" ] || npm ci --no-audit --no-fund --silent; } \
    && npm run --silent check)
fi
pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Installs what the end-to-end test needs (network required; ~5 minutes, most of it building
# code-server's native modules): Debian's Chromium and the headers code-server's modules build
# against (as root), Node 24 and playwright-core from the npm registry, then code-server with Node 24.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null || ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libkrb5-dev build-essential python3 >/dev/null
  else
    echo "e2e setup: needs chromium, libkrb5-dev and build-essential (apt-get install, as root)" >&2
    exit 1
  fi
fi
npm ci --no-audit --no-fund --silent
# code-server's install scripts check for Node 24 and build its native modules with it.
export PATH="$PWD/node_modules/.bin:$PATH"
node --version
(cd code-server && npm ci --no-audit --no-fund --silent)
code-server/node_modules/.bin/code-server --version | head -1

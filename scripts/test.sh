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
# The libFuzzer targets (clang, ASan + UBSan; only their libraries are built): each replays its
# seed corpus and fuzzes for a few seconds, so a parser regression fails here too.
# QPEFT_SKIP_FUZZ=1 skips this part; scripts/fuzz.sh runs long campaigns.
if [ "${QPEFT_SKIP_FUZZ:-0}" != "1" ]; then
  CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DQPEFT_FUZZ=ON \
    -DQPEFT_BUILD_TESTS=OFF -DQPEFT_BUILD_BENCH=OFF
  cmake --build build-fuzz -j"$jobs" --target fuzz_targets
  ctest --test-dir build-fuzz --output-on-failure -j"$jobs" -L fuzz
fi

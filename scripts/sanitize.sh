#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (issue 12), in
# build-asan/: any memory error, leak or undefined behaviour fails the test that hit it.
#   scripts/sanitize.sh            (CXX=clang++ scripts/sanitize.sh for clang's sanitizers)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${QPEFT_JOBS:-$(nproc 2>/dev/null || echo 2)}
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DQPEFT_SANITIZE=ON -DQPEFT_BUILD_BENCH=OFF
cmake --build build-asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Open MPI keeps its start-up state until exit; the data-parallel tests would report it as leaks.
export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp
ctest --test-dir build-asan --output-on-failure -j"$jobs"

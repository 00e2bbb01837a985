#!/usr/bin/env bash
# Fuzzing campaigns over every parser of files qpeft did not write (tests/fuzz, issue 12).
# Builds the libFuzzer targets with clang, ASan and UBSan in build-fuzz/, runs each target from
# its committed seed corpus for SECONDS (default 600) or QPEFT_FUZZ_RUNS executions (default
# unlimited; issue 12 asks for 10 minutes or 1M executions), whichever comes first, and prints
# per target the executions, the time, the coverage reached and the findings (crashes, leaks,
# timeouts, out-of-memory), which are kept in build-fuzz/fuzz/findings/<target>/. Exit status 1
# when anything was found.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 60 config chat_template
#   QPEFT_FUZZ_RUNS=1000000 scripts/fuzz.sh 600
# Reproduce a finding: build-fuzz/fuzz/fuzz_<target> build-fuzz/fuzz/findings/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
[ $# -gt 0 ] && shift
all=(safetensors bnb_checkpoint config adapter_config trainer_state tokenizer_json tokenizer_model chat_template
     data_formats gguf)
targets=("${@:-${all[@]}}")
jobs=${QPEFT_JOBS:-$(nproc 2>/dev/null || echo 2)}
runs=${QPEFT_FUZZ_RUNS:--1}
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DQPEFT_FUZZ=ON \
  -DQPEFT_BUILD_TESTS=OFF -DQPEFT_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}")
# Targets that read files write their input once per run: to memory where there is /dev/shm.
[ -d /dev/shm ] && [ -z "${TMPDIR:-}" ] && export TMPDIR=/dev/shm
found=0
printf '%-16s %12s %8s %10s %8s %9s  %s\n' target executions seconds exec/s cov features findings
for t in "${targets[@]}"; do
  work=build-fuzz/fuzz/work/$t findings=build-fuzz/fuzz/findings/$t log=build-fuzz/fuzz/$t.log
  mkdir -p "$work" "$findings"
  # A run stops at its first finding (crash, leak, timeout > 10 s, more than 2 GiB).
  start=$(date +%s)
  touch "$work/.campaign-start"  # findings of earlier campaigns stay, and are not counted
  build-fuzz/fuzz/fuzz_"$t" -max_total_time="$secs" -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/" "$work" "tests/fuzz/corpus/$t" \
    >"$log" 2>&1 || true
  took=$(( $(date +%s) - start ))
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  n=$(find "$findings" -type f -newer "$work/.campaign-start" | wc -l)
  [ "$n" -gt 0 ] && found=1
  printf '%-16s %12s %8s %10s %8s %9s  %s\n' "$t" "${execs:-0}" "$took" "$(( ${execs:-0} / (took > 0 ? took : 1) ))" \
    "${cov:-0}" "${ft:-0}" "$n"
done
echo "logs: build-fuzz/fuzz/<target>.log; findings: build-fuzz/fuzz/findings/<target>/"
exit $found

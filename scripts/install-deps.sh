#!/usr/bin/env bash
# Installs every Debian package qpeft's build, tests and benchmarks need (Debian 12).
# Safe to run again; uses sudo when not root.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS=(
  build-essential cmake ninja-build pkg-config
  libopenblas-dev liblapacke-dev
  libdnnl-dev  # oneDNN: the bf16 compute path (--compute-dtype bf16)
  libopenmpi-dev openmpi-bin  # data-parallel training under mpirun (and its tests)
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libsentencepiece-dev  # tokenizer.model checkpoints
  sentencepiece         # spm_train/spm_encode: build the test model and the reference ids
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev  # the libFuzzer targets (tests/fuzz) and clang's ASan/UBSan runtimes
  nodejs npm
  time  # GNU time: peak RSS in scripts/reproduce.sh
  unicode-data  # only to regenerate src/text/tokenizer_unicode_tables.cpp (scripts/gen_unicode_tables.py)
)
# The training corpus of the default model (scripts/build-corpus.sh installs these itself):
# QPEFT_DEPS_CORPUS=1 scripts/install-deps.sh
if [ "${QPEFT_DEPS_CORPUS:-0}" = "1" ]; then
  PKGS+=(r-base-core r-cran-janeaustenr fortunes fortunes-min)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (a newer Node on PATH): then skip them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "[install-deps] all Debian packages present"
fi

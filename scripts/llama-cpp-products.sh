#!/usr/bin/env bash
# Every quantized matrix product of one llama.cpp forward pass, recomputed by qpeft from
# llama.cpp's own inputs, element by element (docs/gguf.md, "Agreement"). A diagnostic, not a
# test: it builds tests/reference/llama_cpp_products.cpp against build/'s libraries and
# node-llama-cpp's prebuilt libllama/libggml, with llama.cpp's headers from the source bundle
# node-llama-cpp ships (cloned once into build/llama-cpp-src).
#   scripts/llama-cpp-products.sh MODEL.gguf [TOKENS] [CPU_VARIANT]
# CPU_VARIANT: one of llama.cpp's CPU builds (haswell: AVX2, zen4: AVX-512, ...) instead of the
# one this CPU loads; qpeft follows its lanes (QPEFT_LLAMA_CPP_LANES).
# Needs a release build in build/ and tests/reference/node_modules (the README's test command
# installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 MODEL.gguf [TOKENS]" >&2; exit 2; }
ref=tests/reference/node_modules
bins=$(ls -d "$ref"/@node-llama-cpp/linux-x64/bins/*/ 2>/dev/null | head -1)
[ -n "$bins" ] || { echo "$ref/@node-llama-cpp/linux-x64: not installed; run the README's test command first" >&2; exit 1; }
bins=$(realpath "$bins")
src=build/llama-cpp-src
[ -d "$src/include" ] || git clone -q "$ref/node-llama-cpp/llama/gitRelease.bundle" "$src"
g++ -O2 -std=c++20 -I"$src/include" -I"$src/ggml/include" -Isrc tests/reference/llama_cpp_products.cpp \
  -o build/llama_cpp_products build/libqpeft_models.a build/libqpeft_text.a build/libqpeft_quant.a build/libqpeft_io.a build/libqpeft_ops.a build/libqpeft_core.a \
  "$bins"/libllama*.so "$bins"/libggml.*.so "$bins"/libggml-base.so -Wl,-rpath,"$bins" \
  -lsentencepiece -lopenblas -ldnnl -lfmt -lgomp -lpthread
if [ -n "${3:-}" ]; then
  case "$3" in
    haswell|alderlake) lanes=8 ;;
    skylakex|cannonlake|cascadelake|cooperlake|icelake|sapphirerapids|zen4) lanes=16 ;;
    *) echo "$3: qpeft follows llama.cpp's AVX2 (haswell, alderlake) and AVX-512 builds only" >&2; exit 2 ;;
  esac
  QPEFT_LLAMA_CPP_LANES=$lanes exec build/llama_cpp_products "$1" "$bins" "${2:-20}" "$3"
fi
exec build/llama_cpp_products "$1" "$bins" ${2:+"$2"}

#!/usr/bin/env bash
# The README's first command: installs what is needed, builds qpeft, and fine-tunes the
# shipped base model (models/austen-tiny, pretrained by qpeft) with QLoRA on a real labelled
# task — sentiment of 3,000 review sentences from the npm package `sentiment` (MIT) — then
# prints the held-out accuracy before and after, and where the adapter was written.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs" --target qpeft_cli
Q=build/qpeft
MODEL=models/austen-tiny
OUT=runs/sentiment-qlora
# The labelled sentences, fetched from the npm registry and split deterministically.
mkdir -p runs/npm
[ -f runs/npm/node_modules/sentiment/test/fixtures/imdb.json ] ||
  npm install --prefix runs/npm --no-audit --no-fund --no-save sentiment@5.0.2
node scripts/prepare_sentiment.mjs runs/npm/node_modules/sentiment runs/sentiment
echo "== held-out accuracy of the base model (rank classification: ' negative' vs ' positive')"
before=$($Q eval --model "$MODEL" --data runs/sentiment/test.jsonl --metric choice --json)
echo "$before"
echo "== QLoRA fine-tuning (NF4 + double-quantized base, LoRA on all linear layers)"
rm -rf "$OUT"
$Q train --method qlora --model "$MODEL" --data runs/sentiment/train.jsonl --out "$OUT" \
  --steps 150 --batch 16 --seq-len 128 --lr 1e-3 --log-every 10 --metrics "$OUT.metrics.jsonl"
after=$($Q eval --model "$MODEL" --adapter "$OUT" --data runs/sentiment/test.jsonl --metric choice --json)
echo
echo "held-out accuracy before: $before"
echo "held-out accuracy after:  $after"
echo "adapter (PEFT format): $OUT/adapter_config.json, $OUT/adapter_model.safetensors"

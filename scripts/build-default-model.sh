#!/usr/bin/env bash
# Rebuilds qpeft's embedded default model (models/austen-tiny) from Debian packages, end to
# end and deterministically: corpus (scripts/build-corpus.sh), byte-level BPE tokenizer
# (qpeft train-tokenizer), a seeded random `tiny` Llama sized to that tokenizer, and full
# pretraining with qpeft itself. Needs a built build/qpeft (scripts/run-demo.sh builds it).
#   scripts/build-default-model.sh [STEPS] [LAYERS] [DEST]
#     STEPS: optimizer steps of 8 x 256 tokens (default 2000, about two epochs); LAYERS: decoder
#     layers (default 4, the shipped model); DEST: where the model goes (default models/austen-tiny;
#     docs/loftq.md's deeper test model is `scripts/build-default-model.sh 1000 12 runs/austen-deep`)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-2000}"
LAYERS="${2:-4}"
DEST="${3:-models/austen-tiny}"
Q=build/qpeft
W=runs/default-model
[ "$DEST" = models/austen-tiny ] || W="runs/build-$(basename "$DEST")"
[ -x "$Q" ] || { echo "build/qpeft not found: build first (scripts/run-demo.sh or cmake --build build)" >&2; exit 1; }
[ -f runs/corpus/train.txt ] || scripts/build-corpus.sh runs/corpus
mkdir -p "$W"
# One JSON line per paragraph; training packs them into --seq-len rows.
to_jsonl() { python3 -c 'import json,sys
text=open(sys.argv[1],encoding="utf-8").read()
for p in text.split("\n\n"):
    p=p.strip()
    if p: print(json.dumps({"text": p}, ensure_ascii=False))' "$1"; }
to_jsonl runs/corpus/train.txt > "$W/train.jsonl"
to_jsonl runs/corpus/validation.txt > "$W/validation.jsonl"
$Q train-tokenizer --files runs/corpus/train.txt --vocab-size 8192 --special-tokens "<s>,</s>,<pad>" \
  --out "$W/tokenizer/tokenizer.json" --config-out "$W/tokenizer/tokenizer_config.json" \
  --chat-template scripts/chat_template.jinja
rm -rf "$W/init"
$Q init-model --preset tiny --layers "$LAYERS" --tokenizer "$W/tokenizer" --dtype f32 --seed 0 --out "$W/init"
$Q train --method full --model "$W/init" --data "$W/train.jsonl" --eval-data "$W/validation.jsonl" \
  --out "$W/run" --steps "$STEPS" --batch 8 --seq-len 256 --lr 2e-3 --schedule cosine --warmup-ratio 0.03 \
  --weight-decay 0.1 --max-grad-norm 1.0 --seed 0 --save-every 200 --eval-every 400 --log-every 20 \
  --metrics "$W/metrics.jsonl" --save-dtype bf16
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
cp "$W/run/model/config.json" "$W/run/model/model.safetensors" "$W/run/model/tokenizer.json" \
   "$W/run/model/tokenizer_config.json" "$DEST.tmp/"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
$Q eval --model "$DEST" --data "$W/validation.jsonl" --json | tee "$W/validation_eval.json"
du -h "$DEST"/*

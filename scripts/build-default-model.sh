#!/usr/bin/env bash
# Rebuilds a base model that ships with qpeft, end to end and deterministically: corpus
# (scripts/build-corpus.sh), byte-level BPE tokenizer (qpeft train-tokenizer), a seeded random
# Llama sized to that tokenizer, and full pretraining with qpeft itself. Needs a built
# build/qpeft (scripts/run-demo.sh builds it).
#
#   scripts/build-default-model.sh [MODEL] [STEPS] [LAYERS] [DEST]
#     MODEL: prose-16m (default: 8 layers, hidden 384, grouped-query attention, tied embeddings,
#              on the large corpus: Austen, fortunes, State of the Union, Moby-Dick)
#            austen-tiny (4 layers, hidden 256, on Austen and fortunes; the test suite's model)
#     STEPS: optimizer steps (default 1800 of 8 x 512 tokens for prose-16m, 2000 of 8 x 256 for
#            austen-tiny); LAYERS: decoder layers (default the model's); DEST: where the model goes
#            (default models/MODEL). docs/loftq.md's deeper test model is
#            `scripts/build-default-model.sh austen-tiny 1000 12 runs/austen-deep`.
# Interrupted? Run the same command again: training resumes from its newest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=prose-16m
case "${1:-}" in prose-16m|austen-tiny) MODEL="$1"; shift ;; esac
Q=build/qpeft
[ -x "$Q" ] || { echo "build/qpeft not found: build first (scripts/run-demo.sh or cmake --build build)" >&2; exit 1; }
if [ "$MODEL" = prose-16m ]; then
  STEPS="${1:-1800}"; SEQ=512; LR=1.5e-3; EVAL_EVERY=450
  CORPUS=runs/corpus-large
  SHAPE=(--preset small --hidden-size 384 --intermediate-size 1024 --heads 6 --kv-heads 2 --tie-embeddings)
  [ -f "$CORPUS/train.txt" ] || QPEFT_CORPUS_LARGE=1 scripts/build-corpus.sh "$CORPUS"
else
  STEPS="${1:-2000}"; SEQ=256; LR=2e-3; EVAL_EVERY=400
  CORPUS=runs/corpus
  SHAPE=(--preset tiny)
  [ -f "$CORPUS/train.txt" ] || scripts/build-corpus.sh "$CORPUS"
fi
LAYERS="${2:-}"
DEST="${3:-models/$MODEL}"
[ -n "$LAYERS" ] && SHAPE+=(--layers "$LAYERS")
W="runs/build-$(basename "$DEST")"
mkdir -p "$W"
# One JSON line per paragraph; training packs them into --seq-len rows.
scripts/paragraphs_to_jsonl.py "$CORPUS/train.txt" > "$W/train.jsonl"
scripts/paragraphs_to_jsonl.py "$CORPUS/validation.txt" > "$W/validation.jsonl"
RESUME=()
if compgen -G "$W/run/checkpoint-*" > /dev/null; then
  RESUME=(--resume)
  echo "[build-default-model] resuming from the newest checkpoint in $W/run"
else
  $Q train-tokenizer --files "$CORPUS/train.txt" --vocab-size 8192 --special-tokens "<s>,</s>,<pad>" \
    --out "$W/tokenizer/tokenizer.json" --config-out "$W/tokenizer/tokenizer_config.json" \
    --chat-template scripts/chat_template.jinja
  rm -rf "$W/init"
  $Q init-model "${SHAPE[@]}" --tokenizer "$W/tokenizer" --dtype f32 --seed 0 --out "$W/init"
fi
START=$(date +%s)
$Q train --method full --model "$W/init" --data "$W/train.jsonl" --eval-data "$W/validation.jsonl" \
  --out "$W/run" --steps "$STEPS" --batch 8 --seq-len "$SEQ" --lr "$LR" --schedule cosine --warmup-ratio 0.03 \
  --weight-decay 0.1 --max-grad-norm 1.0 --seed 0 --save-every 200 --eval-every "$EVAL_EVERY" --log-every 20 \
  --metrics "$W/metrics.jsonl" --save-dtype bf16 "${RESUME[@]}"
echo "[build-default-model] pretraining took $(( $(date +%s) - START )) s"
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
cp "$W/run/model/config.json" "$W/run/model/model.safetensors" "$W/run/model/tokenizer.json" \
   "$W/run/model/tokenizer_config.json" "$DEST.tmp/"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
$Q eval --model "$DEST" --data "$W/validation.jsonl" --json | tee "$W/validation_eval.json"
du -h "$DEST"/*

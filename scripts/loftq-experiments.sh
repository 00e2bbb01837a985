#!/usr/bin/env bash
# The experiments of docs/loftq.md, reproducibly (run after a build; ~25 minutes on 2 cores):
#  1. perplexity of the shipped model on the validation sample at 16 bits and for nf4, nf3,
#     nf2, uniform2 and the 2.5-bit mix: plain quantization vs the LoftQ init (r 16, T = 1, 5);
#  2. fine-tuning at 2 and 2.5 bits, QLoRA (a fresh LoRA init on the plainly quantized base) vs
#     LoftQ (the LoftQ init, T = 1, on the very same base): the sentiment task (held-out accuracy,
#     seeds 42 and 1) and review-text continuation (held-out perplexity).
# Usage: scripts/loftq-experiments.sh [ppl|sentiment|text|all] [SENTIMENT_STEPS] [MODEL]
#   MODEL defaults to models/austen-tiny; the deeper test model of docs/loftq.md is built by
#   `scripts/build-default-model.sh austen-tiny 1000 12 runs/austen-deep` (its results go to runs/loftq-austen-deep).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
steps=${2:-300}
Q=build/qpeft
M=${3:-models/austen-tiny}
R=runs/loftq
[ "$M" = models/austen-tiny ] || R="runs/loftq-$(basename "$M")"
# The paper's 2.5-bit mix: the first floor(L·(2.5 − 2)/2) = floor(L/4) layers at 4 bits.
layers=$(grep -o '"num_hidden_layers": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
mix4=$((layers / 4))
VAL=tests/data/austen_validation_sample.jsonl
mkdir -p "$R"
field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/"; }

# Quantized bases and LoftQ inits for every format: $R/<name>_T<t>
declare -A SPEC=([nf4]="--quant nf4" [nf3]="--quant nf3" [nf2]="--quant nf2" [uniform2]="--quant uniform2"
                 [mix2.5]="--quant nf2 --layer-quant layers.0-$((mix4 - 1))=nf4")
init() {  # name iters
  [ -f "$R/$1_T$2/loftq_init/adapter_model.safetensors" ] ||
    $Q loftq --model $M --out "$R/$1_T$2" ${SPEC[$1]} --rank 16 --iters "$2" 2>&1 | tail -2 | head -1
}

if [ "$what" = ppl ] || [ "$what" = all ]; then
  echo "== perplexity on $VAL (r 16, alpha 16, block 64, no double quantization)"
  echo "format    plain     LoftQ T=1  LoftQ T=5"
  dense=$($Q eval --model $M --data $VAL --json | field perplexity)
  echo "bf16      $dense"
  for f in nf4 nf3 nf2 uniform2 mix2.5; do
    init $f 1 >/dev/null; init $f 5 >/dev/null
    plain=$($Q eval --model "$R/${f}_T1" --data $VAL --json | field perplexity)
    t1=$($Q eval --model "$R/${f}_T1" --adapter "$R/${f}_T1/loftq_init" --data $VAL --json | field perplexity)
    t5=$($Q eval --model "$R/${f}_T5" --adapter "$R/${f}_T5/loftq_init" --data $VAL --json | field perplexity)
    echo "$f  $plain  $t1  $t5"
  done
fi

if [ "$what" != ppl ]; then
  mkdir -p runs/npm
  [ -f runs/npm/node_modules/sentiment/test/fixtures/imdb.json ] ||
    npm install --prefix runs/npm --no-audit --no-fund --no-save sentiment@5.0.2
  node scripts/prepare_sentiment.mjs runs/npm/node_modules/sentiment runs/sentiment >/dev/null
fi

if [ "$what" = sentiment ] || [ "$what" = all ]; then
  echo "== sentiment, held-out accuracy (600 test sentences), the demo's recipe for $steps steps x 16"
  for f in nf2 mix2.5; do
    init $f 1 >/dev/null
    base=$($Q eval --model "$R/${f}_T1" --data runs/sentiment/test.jsonl --metric choice --json | field accuracy)
    echo "$f base (no adapter): $base"
    for seed in 42 1; do
      for how in qlora loftq; do
        out="$R/sent_${f}_${how}_s$seed"
        init_flag=""
        [ $how = loftq ] && init_flag="--init-adapter $R/${f}_T1/loftq_init"
        [ $how = qlora ] && init_flag="--targets all-linear --rank 16 --alpha 16"
        $Q train --model "$R/${f}_T1" $init_flag --data runs/sentiment/train_choice.jsonl --out "$out" \
          --choice-loss ln --dropout 0 --lr 3e-3 --schedule linear --warmup-ratio 0.06 --max-grad-norm 1 \
          --steps "$steps" --batch 16 --seq-len 128 --seed $seed --quiet
        acc=$($Q eval --model "$R/${f}_T1" --adapter "$out" --data runs/sentiment/test.jsonl --metric choice --json | field accuracy)
        echo "$f $how seed $seed: $acc"
      done
    done
  done
fi

if [ "$what" = text ] || [ "$what" = all ]; then
  echo "== review-text continuation: held-out perplexity (test_text.jsonl), 200 steps x 8 x 128 tokens, lr 1e-3"
  dense=$($Q eval --model $M --data runs/sentiment/test_text.jsonl --json | field perplexity)
  echo "bf16 base, no adapter: $dense"
  for f in nf2 mix2.5; do
    init $f 1 >/dev/null
    plain=$($Q eval --model "$R/${f}_T1" --data runs/sentiment/test_text.jsonl --json | field perplexity)
    echo "$f base, no adapter: $plain"
    init_ppl=$($Q eval --model "$R/${f}_T1" --adapter "$R/${f}_T1/loftq_init" --data runs/sentiment/test_text.jsonl --json | field perplexity)
    echo "$f base + LoftQ init, untrained: $init_ppl"
    for how in qlora loftq; do
      out="$R/text_${f}_${how}"
      init_flag="--targets all-linear --rank 16 --alpha 16"
      [ $how = loftq ] && init_flag="--init-adapter $R/${f}_T1/loftq_init"
      $Q train --model "$R/${f}_T1" $init_flag --data runs/sentiment/train_text.jsonl --out "$out" \
        --dropout 0 --lr 1e-3 --schedule linear --warmup-ratio 0.06 --steps 200 --batch 8 --seq-len 128 \
        --eval-data runs/sentiment/test_text.jsonl --quiet
      ppl=$($Q eval --model "$R/${f}_T1" --adapter "$out" --data runs/sentiment/test_text.jsonl --json | field perplexity)
      echo "$f $how: $ppl"
    done
  done
fi

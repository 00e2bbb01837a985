// The training loop behind `qpeft train`: LoRA or (IA)³ on a frozen base, AdamW, clipping,
// accumulation, schedules, periodic evaluation, atomic checkpoints and bit-identical resume.
// Multiple-choice data trains with T-Few's losses (L_LM + L_UL + L_LN, SPEC §5).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "models/llama.h"
#include "peft/ia3.h"
#include "peft/loftq.h"
#include "peft/lora.h"
#include "train/data.h"

namespace qpeft {

struct TrainOptions {
  std::string model_dir, data_path, eval_data_path, out_dir, metrics_path;
  // lora | qlora (NF4 + double-quantized frozen base) | loftq (LoftQ init in memory on the dense
  // base, then LoRA on the quantized base it produces; the base is written to OUT/base) |
  // ia3 ((IA)³ vectors; on a base quantized on load with quantize_base) | full
  std::string method = "lora";
  DType save_dtype = DType::BF16;  // full: dtype of OUT/model
  std::string quant = "nf4";     // qlora (and ia3 with quantize_base): base format (nf4, fp4, nf2, nf3)
  int64_t quant_block = 64;
  bool double_quant = true;
  bool quantize_base = false;    // ia3: quantize the frozen base on load as qlora does ("QIA3")
  DataOptions data;            // format, loss on prompt
  ChoiceLossWeights choice_loss;  // multiple-choice data: T-Few's loss terms (ops/loss.h)
  bool packing = true;         // pack short examples into --seq-len rows
  bool resume = false;
  LoraConfig lora;
  Ia3Config ia3;  // ia3: targets and feed-forward modules
  // lora/qlora: start from this PEFT LoRA adapter (e.g. OUT/loftq_init of `qpeft loftq`)
  // instead of a fresh init; its r, alpha, rsLoRA and targets replace the flags'.
  std::string init_adapter;
  LoftqOptions loftq;  // loftq: quantization plan, T, SVD (lora and quant come from the fields above)
  int64_t steps = 100, batch = 4, seq_len = 256, grad_accum = 1;
  double lr = 2e-4, weight_decay = 0.0, max_grad_norm = 1.0;
  double warmup_ratio = 0.0;
  int64_t warmup_steps = -1;  // overrides warmup_ratio when >= 0
  std::string schedule = "constant";
  // adamw, paged_adamw, adamw8bit, paged_adamw8bit, adafactor (train/optimizer.h); --method ia3
  // defaults to adafactor, as T-Few trains (IA)³ (cmd_train).
  std::string optimizer = "adamw";
  uint64_t seed = 42;
  int64_t save_every = 0;   // 0: only the final checkpoint
  int64_t eval_every = 0;   // 0: only at the end (when eval data is given)
  int64_t keep_checkpoints = 2;
  int64_t log_every = 1;
  bool grad_checkpoint = false;
  // Keep the base's stored matrices in the file's mapping instead of copying them into
  // memory (LoadOptions::in_memory): less resident memory, but pages the kernel drops
  // between steps are read back from disk.
  bool mmap = false;
  // The products with the frozen base: f32, or bf16 with f32 accumulation (ops/linear.h;
  // falls back to f32 where the CPU or the build lacks it, said once on stderr).
  DType compute_dtype = DType::F32;
  bool quiet = false;
};

struct LossStats {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;    // predicted (counted) tokens
  int64_t examples = 0;
};

struct EvalResult : LossStats {
  // Per adapter the examples name (Example::adapter; kBaseAdapter for none): its examples alone.
  std::map<int32_t, LossStats> adapters;
};

struct TrainResult {
  int64_t steps = 0;
  double first_loss = 0, last_loss = 0;
  double tokens_per_second = 0;
  std::string adapter_dir;  // the adapter (lora, qlora, loftq, ia3) or OUT/model (full)
};

TrainResult train(const TrainOptions& opt);

// What --resume reads from checkpoint-N/trainer_state.json: checked for type and range, and
// for the settings (seed, batch, grad_accum, seq_len) that must match `opt`.
struct TrainerStateFile {
  int64_t step = 0, optimizer_steps = 0;
  double last_loss = 0;
};
TrainerStateFile parse_trainer_state(const std::string& text, const std::string& path, const TrainOptions& opt);

// Token-weighted mean loss over every example (batched in file order, no gradients), each
// example under its own adapter (Example::adapter, for adapters loaded together).
EvalResult evaluate(LlamaModel& model, const std::vector<Example>& data, int64_t batch, int64_t seq_len);

// Reads a JSON-lines data file in any supported format, multiple choice included, tokenizing
// text with the model directory's tokenizer.
Dataset load_dataset(const std::string& path, const std::string& model_dir, int64_t vocab_size,
                     const DataOptions& opt = {});

// "lm,ul,ln" or any subset: the T-Few loss terms to use (weight 1 each); false if unknown.
bool parse_choice_loss_terms(const std::string& s, ChoiceLossWeights* out);

// Reads a JSON-lines data file in any supported format, tokenizing text with the model
// directory's tokenizer (pre-tokenized data needs none). Multiple-choice data is refused here.
std::vector<Example> load_examples(const std::string& path, const std::string& model_dir, int64_t vocab_size,
                                   const DataOptions& opt = {});

}  // namespace qpeft

// The LoftQ flags shared by `qpeft loftq` and `qpeft train --method loftq`.
#pragma once
#include <CLI/CLI.hpp>

#include <string>

#include "peft/loftq.h"

namespace qpeft::cli {

struct LoftqFlags {
  std::string quant = "nf4", layer_quant, targets = "all-linear", svd = "auto", rank_pattern, alpha_pattern;
  int64_t block_size = 64, rank = 16;
  double alpha = 0;  // 0: = rank (scaling 1, PEFT's reference setting)
  bool double_quant = false, rslora = false, quiet = false;
  int iters = 1, power_iters = 4;
  uint64_t seed = 0x5eed;
};

// for_train: train has its own --rank/--alpha/--targets/... and --quant/--quant-block; only the
// LoftQ-specific flags are added there.
void add_loftq_options(CLI::App* cmd, LoftqFlags* f, bool for_train);
// Validated options (format names, patterns, SVD method); errors name the flag.
LoftqOptions loftq_options(const LoftqFlags& f, CLI::App* cmd);
// Prints the plan now and a progress line per layer (stderr) as apply_loftq runs.
void add_loftq_progress(LoftqOptions* opt);
// apply_loftq with a progress line per layer on stderr (unless quiet).
LoftqSummary run_loftq(LlamaModel& model, const LoftqOptions& opt, bool quiet);

}  // namespace qpeft::cli

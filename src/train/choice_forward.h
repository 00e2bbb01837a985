// The forward of a multiple-choice training batch (T-Few's losses), run by run.
#pragma once
#include <cstdint>

#include "models/llama.h"
#include "ops/autograd.h"
#include "ops/loss.h"
#include "train/data.h"

namespace qpeft {

// Positions a separate run must save to be worth its own forward (length_runs' run_overhead).
constexpr int64_t kChoiceRunOverhead = 128;

// Per-token log-probabilities of cb's rows for choice_losses, with their layout: the rows are
// cut by length_runs and each run is computed at its own length, so a batch is not padded to
// its longest email. The same losses as one padded forward, up to rounding. Dropout masks
// number each run's rows from g.batch_share().first_row + the run's first row.
Var choice_batch_logprobs(Graph& g, LlamaModel& model, const ChoiceBatch& cb, ChoiceTokens* layout,
                          int64_t run_overhead = kChoiceRunOverhead);

}  // namespace qpeft

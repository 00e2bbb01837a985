#include "train/choice_forward.h"

#include <vector>

#include "ops/elementwise.h"
#include "train/data_parallel.h"

namespace qpeft {

Var choice_batch_logprobs(Graph& g, LlamaModel& model, const ChoiceBatch& cb, ChoiceTokens* layout,
                          int64_t run_overhead) {
  const std::vector<RowRun> runs = length_runs(cb.rows, run_overhead);
  *layout = choice_layout(cb, runs);
  const Graph::BatchShare whole = g.batch_share();
  std::vector<Var> parts;
  for (const RowRun& run : runs) {
    const Batch b = slice_rows(cb.rows, run.begin, run.end, run.T);
    g.set_batch_share({whole.first_row + run.begin, b.B});
    parts.push_back(model.label_logprobs(g, b.ids, b.labels, b.B, b.T));
  }
  g.set_batch_share(whole);
  return parts.size() == 1 ? parts[0] : concat(g, parts);
}

}  // namespace qpeft

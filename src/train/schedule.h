// Learning-rate schedules as Hugging Face transformers defines them (LambdaLR factors).
#pragma once
#include <cstdint>
#include <string>

namespace qpeft {

struct LrSchedule {
  std::string kind = "constant";  // constant | linear | cosine
  double base_lr = 2e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  // Learning rate for optimizer step `step` (0-based): linear warmup from 0, then the kind's decay.
  double at(int64_t step) const;
};

void validate_schedule_kind(const std::string& kind);

}  // namespace qpeft

#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qpeft {

void validate_schedule_kind(const std::string& kind) {
  QP_CHECK(kind == "constant" || kind == "linear" || kind == "cosine",
           "--schedule '{}' is not known (choose constant, linear or cosine)", kind);
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return base_lr * double(step) / double(std::max<int64_t>(1, warmup_steps));
  const double progress = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  if (kind == "linear") return base_lr * std::max(0.0, 1.0 - progress);
  if (kind == "cosine") return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return base_lr;
}

}  // namespace qpeft

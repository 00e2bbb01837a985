// Adafactor (Shazeer & Stern, 2018) as Hugging Face transformers implements it
// (transformers/optimization.py, class Adafactor), with the settings T-Few trains (IA)³ with:
// scale_parameter=False, relative_step=False, warmup_init=False, beta1=None (no first moment),
// lr = the schedule's, eps = (1e-30, 1e-3), clip_threshold = 1, decay_rate = -0.8.
// scale_parameter=False leaves lr unscaled by RMS(p), so eps2 is never used.
//
// One step of parameter p (gradient g, its own step count t, all tensors f32), as transformers
// does it; the Python-double scalars are rounded to float where ATen does:
//   t += 1;  beta2t = 1 - t^decay_rate                          (double)
//   u = g·g + eps1                                                (f32; eps1 as float)
//   p with >= 2 dims, shape [..., R, C] (factored):
//     row = row·beta2t + (1 - beta2t)·mean_C(u)      row: [..., R]   (mul_, add_ with alpha)
//     col = col·beta2t + (1 - beta2t)·mean_R(u)      col: [..., C]
//     update = (rsqrt(row / mean_R(row))[..., :, None] · rsqrt(col)[..., None, :]) · g
//   otherwise (0-d and 1-d; unfactored):
//     v = v·beta2t + (1 - beta2t)·u;   update = rsqrt(v) · g
//   update = update / max(1, RMS(update) / clip_threshold),  RMS(x) = ||x||_2 / sqrt(numel)
//   update = update · lr
//   if wd != 0: p = p + (-wd·lr)·p          (decay before the update, as transformers does)
//   p = p - update
// rsqrt is 1 / sqrt (ATen's CPU kernel divides; it is not the approximate instruction). A
// parameter without a gradient is skipped and its step count does not advance (per-parameter
// state["step"] as in transformers).
//
// Differences from a torch CPU run, all in the last bits: ATen sums the means and the norm
// pairwise in float and uses FMA for add_(x, alpha) in its vectorised loops; we sum in double
// (rounded to float once, then divided by the count in float, as mean = sum / n does) and do
// not contract a·b + c.
//
// Checkpoint state (state_tensors / load_state), restored bit-exactly:
//   factored:   "exp_avg_sq_row.<param>"  f32 shape[:-1]
//               "exp_avg_sq_col.<param>"  f32 shape[:-2] + shape[-1:]
//   unfactored: "exp_avg_sq.<param>"      f32 param shape
//   always:     "step.<param>"            i64 [] (that parameter's step count)
#pragma once
#include <vector>

#include "train/optimizer.h"

namespace qpeft {

struct AdafactorConfig {
  double eps1 = 1e-30;          // eps[0]: added to g² (eps[1] is unused with scale_parameter=False)
  double clip_threshold = 1.0;  // RMS of the update is clipped to this
  double decay_rate = -0.8;     // beta2t = 1 - t^decay_rate
  double weight_decay = 0.0;    // p -= wd·lr·p before the update
};

class Adafactor final : public Optimizer {
 public:
  Adafactor(NamedParams params, AdafactorConfig cfg);
  void step(double lr) override;
  int64_t steps() const override { return steps_; }
  const NamedParams& params() const override { return params_; }
  std::vector<std::pair<std::string, Tensor>> state_tensors() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) override;
  // The second-moment tensors (row + col for factored parameters), without the step counters.
  size_t state_bytes() const override;
  const char* name() const override { return "adafactor"; }

  bool factored(size_t k) const { return state_.at(k).factored; }
  int64_t param_steps(size_t k) const;  // parameter k's own step count

 private:
  struct State {
    bool factored = false;
    int64_t batch = 1, rows = 1, cols = 1;  // factored: shape viewed as [batch, rows, cols]
    Tensor row, col;                        // factored: f32 [..., R] and [..., C]
    Tensor v;                               // unfactored: f32, param shape
    Tensor step;                            // i64 []
  };
  void step_factored(State& s, float* w, const float* g, double lr, double beta2t);
  void step_unfactored(State& s, float* w, const float* g, int64_t n, double lr, double beta2t);

  NamedParams params_;
  AdafactorConfig cfg_;
  std::vector<State> state_;
  int64_t steps_ = 0;
};

}  // namespace qpeft

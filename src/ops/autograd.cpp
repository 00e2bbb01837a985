#include "ops/autograd.h"

#include <algorithm>

#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"

namespace qpeft {

Var::Var(Tensor value, bool requires_grad, std::string name) : node_(std::make_shared<VarNode>()) {
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
  node_->name = std::move(name);
}

namespace {

// Below this many elements a pass over a gradient is not worth waking the threads for (64 KiB).
constexpr int64_t kParallelMin = int64_t(1) << 14;

// d[n] += s[n]
void add_into(float* d, const float* s, int64_t n) {
  if (n < kParallelMin) {
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
    return;
  }
  pool().parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) d[i] += s[i];
  });
}

}  // namespace

void Var::accumulate_grad(const Tensor& g) const {
  QP_CHECK(g.shape() == value().shape(), "[autograd] gradient {} does not match {} of '{}'", g.describe(),
           value().describe(), name());
  if (!node_->grad.defined()) {
    node_->grad = g.to(DType::F32);  // a copy: g may be shared with another input's gradient
    return;
  }
  add_into(node_->grad.f32(), g.f32(), g.numel());
}

void Var::adopt_grad(const Tensor& g) const {
  QP_CHECK(g.shape() == value().shape() && g.dtype() == DType::F32, "[autograd] gradient {} does not match {} of '{}'",
           g.describe(), value().describe(), name());
  if (!node_->grad.defined()) {
    node_->grad = g;  // shares the storage
    return;
  }
  add_into(node_->grad.f32(), g.f32(), g.numel());
}

float* Var::grad_buffer() const {
  if (!node_->grad.defined()) {
    // Both threads fill: a gradient the size of an activation is several MiB.
    node_->grad = Tensor::empty(value().shape());
    float* d = node_->grad.f32();
    const int64_t n = node_->grad.numel();
    if (n < kParallelMin) {
      std::fill(d, d + n, 0.0f);
    } else {
      pool().parallel_for(n, [&](int64_t i0, int64_t i1) { std::fill(d + i0, d + i1, 0.0f); });
    }
  }
  return node_->grad.f32();
}

float* Var::grad_for_update(bool* accumulate) const {
  *accumulate = node_->grad.defined();
  if (!*accumulate) node_->grad = Tensor::empty(value().shape());
  return node_->grad.f32();
}

bool Graph::needs_grad(std::initializer_list<const Var*> inputs) const {
  if (!grad_enabled_) return false;
  for (const Var* v : inputs)
    if (v && v->requires_grad()) return true;
  return false;
}

void Graph::record(std::function<void()> backward_rule) {
  if (grad_enabled_) rules_.push_back(std::move(backward_rule));
}

void Graph::backward(const Var& loss) {
  QP_CHECK(loss.value().numel() == 1, "[backward] loss must be a single value, got {}", loss.value().describe());
  backward(loss, Tensor::full(loss.shape(), 1.0f));
}

void Graph::backward(const Var& out, const Tensor& dout) {
  QP_CHECK(grad_enabled_, "[backward] this graph was built without gradients");
  QP_CHECK(out.requires_grad(), "[backward] the output does not depend on any trainable parameter");
  profile::Scope prof("backward (other)");
  out.accumulate_grad(dout);
  while (!rules_.empty()) {
    auto rule = std::move(rules_.back());
    rules_.pop_back();
    rule();
  }
}

}  // namespace qpeft

namespace qpeft {
Var checkpoint(Graph& g, const Var& x, std::function<Var(Graph&, const Var&)> fn) {
  if (!g.grad_enabled()) return fn(g, x);
  const uint64_t sub_seed = g.seed() ^ (0x9e3779b97f4a7c15ull * (g.next_stream() + 1));
  const bool training = g.training();
  Tensor y;
  {
    Graph sub(false, sub_seed, training);
    sub.set_batch_share(g.batch_share());
    y = fn(sub, x).value();
  }
  Var out = g.make_output(y, true);
  g.record([x, out, fn, sub_seed, training, share = g.batch_share()] {
    if (!out.has_grad()) return;
    Graph sub(true, sub_seed, training);
    sub.set_batch_share(share);
    Var xin(x.value(), x.requires_grad());
    Var yy = fn(sub, xin);
    if (!yy.requires_grad()) return;
    sub.backward(yy, out.grad());
    if (x.requires_grad() && xin.has_grad()) x.accumulate_grad(xin.grad());
  });
  return out;
}
}  // namespace qpeft

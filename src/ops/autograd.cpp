#include "ops/autograd.h"

#include "core/error.h"

namespace qpeft {

Var::Var(Tensor value, bool requires_grad, std::string name) : node_(std::make_shared<VarNode>()) {
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
  node_->name = std::move(name);
}

void Var::accumulate_grad(const Tensor& g) const {
  QP_CHECK(g.shape() == value().shape(), "[autograd] gradient {} does not match {} of '{}'", g.describe(),
           value().describe(), name());
  if (!node_->grad.defined()) {
    node_->grad = g.to(DType::F32);  // a copy: g may be shared with another input's gradient
    return;
  }
  float* d = node_->grad.f32();
  const float* s = g.f32();
  for (int64_t i = 0; i < g.numel(); ++i) d[i] += s[i];
}

float* Var::grad_buffer() const {
  if (!node_->grad.defined()) node_->grad = Tensor::zeros(value().shape());
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
  out.accumulate_grad(dout);
  while (!rules_.empty()) {
    auto rule = std::move(rules_.back());
    rules_.pop_back();
    rule();
  }
}

}  // namespace qpeft

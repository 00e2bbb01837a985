// Reverse-mode autograd as a tape. Each op computes its forward value and, when any input
// needs a gradient, records its backward rule (a closure over exactly what it needs) on the
// Graph. Graph::backward runs the rules in reverse and frees each one after it ran.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace qpeft {

struct VarNode {
  Tensor value;
  Tensor grad;  // f32, same shape as value; undefined until a gradient arrives
  bool requires_grad = false;
  std::string name;
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false, std::string name = {});

  bool defined() const { return node_ != nullptr; }
  const Tensor& value() const { return node_->value; }
  Tensor& mutable_value() const { return node_->value; }
  const Tensor& grad() const { return node_->grad; }
  bool has_grad() const { return node_->grad.defined(); }
  bool requires_grad() const { return node_ && node_->requires_grad; }
  const std::string& name() const { return node_->name; }
  const Shape& shape() const { return node_->value.shape(); }

  // grad += g (g is f32 with the value's shape); copies g on first use.
  void accumulate_grad(const Tensor& g) const;
  // grad += g, sharing g's storage on first use instead of copying it. For a backward rule that
  // hands its output's gradient on once it has read it: nothing reads that gradient afterwards.
  void adopt_grad(const Tensor& g) const;
  // Returns the grad buffer, zero-filled on first use, for kernels that add into it.
  float* grad_buffer() const;
  // Returns the grad buffer for a kernel that can either add or write: *accumulate is true
  // when it holds a gradient already (add to it), false when it is new and uninitialised
  // (write every element). Saves zeroing, then reading, an activation-sized buffer.
  float* grad_for_update(bool* accumulate) const;
  void zero_grad() const { node_->grad = Tensor(); }

 private:
  std::shared_ptr<VarNode> node_;
};

class Graph {
 public:
  explicit Graph(bool grad_enabled = true, uint64_t seed = 0, bool training = false)
      : grad_enabled_(grad_enabled), training_(training), seed_(seed) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  bool grad_enabled() const { return grad_enabled_; }
  bool training() const { return training_; }  // dropout active
  uint64_t seed() const { return seed_; }
  // A fresh stream id per random op, in op order: same program, same seed, same bits.
  uint64_t next_stream() { return stream_++; }
  // This graph computes rows [first_row, first_row + rows) of a larger batch (a data-parallel
  // share): random ops number their elements as in the whole batch, so each row draws the
  // same dropout mask whichever rank computes it. Tensors with the batch as leading dimension.
  struct BatchShare {
    int64_t first_row = 0, rows = 0;  // rows 0: the whole batch
  };
  void set_batch_share(BatchShare s) { share_ = s; }
  BatchShare batch_share() const { return share_; }
  // Index of element 0 of a [rows, ...] tensor of `numel` elements within the whole batch's.
  uint64_t element_offset(int64_t numel) const {
    return share_.rows > 0 ? uint64_t(share_.first_row) * uint64_t(numel / share_.rows) : 0;
  }

  // True if an op over these inputs must record a backward rule.
  bool needs_grad(std::initializer_list<const Var*> inputs) const;
  // Output Var of an op: requires_grad iff needs_grad(inputs).
  Var make_output(Tensor value, bool requires_grad) const { return Var(std::move(value), requires_grad); }
  void record(std::function<void()> backward_rule);

  // Seeds d(loss)/d(loss) = 1 (loss must be a single element) and runs every rule in reverse.
  void backward(const Var& loss);
  // Seeds loss's gradient with dloss (same shape) and runs every rule in reverse.
  void backward(const Var& out, const Tensor& dout);
  size_t num_rules() const { return rules_.size(); }

 private:
  bool grad_enabled_;
  bool training_;
  uint64_t seed_;
  uint64_t stream_ = 0;
  BatchShare share_;
  std::vector<std::function<void()>> rules_;
};

}  // namespace qpeft

namespace qpeft {
// Gradient checkpointing: runs fn(x) without recording, keeping only x; backward reruns fn
// on a fresh tape (same dropout streams) and backpropagates through it. Parameters used
// inside fn receive their gradients as usual.
Var checkpoint(Graph& g, const Var& x, std::function<Var(Graph&, const Var&)> fn);
}  // namespace qpeft

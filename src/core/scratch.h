// Per-thread scratch buffers that outlive the call: pool threads are long-lived, so large
// temporaries (decoded weight panels, logits chunks) are not mapped and faulted in again on
// every call. Each Tag is its own buffer, so nested users never share one.
//   struct PanelTag; float* p = thread_scratch<PanelTag>(rows * cols);
#pragma once
#include <cstddef>
#include <vector>

namespace qpeft {

// At least `floats` floats, valid until this thread's next call with the same Tag.
template <class Tag>
float* thread_scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) {
    buf = std::vector<float>();  // release before growing: peak memory holds one copy
    buf.resize(floats);
  }
  return buf.data();
}

}  // namespace qpeft

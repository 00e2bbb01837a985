// Per-thread scratch buffers that outlive the call: pool threads are long-lived, so large
// temporaries (decoded weight panels, logits chunks) are not mapped and faulted in again on
// every call. Each Tag is its own buffer, so nested users never share one.
//   struct PanelTag; float* p = thread_scratch<PanelTag>(rows * cols);
//   uint16_t* b = thread_scratch<Bf16Tag, uint16_t>(n);
#pragma once
#include <cstddef>
#include <vector>

namespace qpeft {

// At least n values, valid until this thread's next call with the same Tag and T.
template <class Tag, class T = float>
T* thread_scratch(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) {
    buf = std::vector<T>();  // release before growing: peak memory holds one copy
    buf.resize(n);
  }
  return buf.data();
}

}  // namespace qpeft

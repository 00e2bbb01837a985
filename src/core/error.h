// Errors: every user-facing failure is a qpeft::Error whose message says what went wrong,
// where (file, tensor, config key) and what to do. Bad input never aborts.
#pragma once
#include <fmt/core.h>
#include <stdexcept>
#include <string>

namespace qpeft {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace qpeft

// Checked in release builds too: use for anything a file, flag or caller can get wrong.
#define QP_CHECK(cond, ...)                   \
  do {                                        \
    if (!(cond)) ::qpeft::fail(__VA_ARGS__);  \
  } while (0)

// Shared by the libFuzzer targets: inputs as files (for parsers that take a path), and the one
// rule every target checks — a parser may refuse input only with qpeft::Error.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/error.h"

namespace qpeft::fuzz {

inline std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Writes the input to a per-process scratch file named `name` (the loaders pick the format by
// the name) and returns its path.
inline std::string as_file(const uint8_t* data, size_t size, const std::string& name) {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string d = std::string(t && *t ? t : "/tmp") + "/qpeft-fuzz-" + std::to_string(::getpid());
    std::string cmd = "mkdir -p '" + d + "'";
    if (std::system(cmd.c_str()) != 0) std::abort();
    return d;
  }();
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

// Runs fn; qpeft::Error is the expected way to refuse input. Anything else escapes and
// libFuzzer reports it as a crash (an uncaught exception aborts).
template <class F>
void refuse_only_with_error(F&& fn) {
  try {
    fn();
  } catch (const qpeft::Error&) {
  }
}

}  // namespace qpeft::fuzz

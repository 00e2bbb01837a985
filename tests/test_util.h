// Shared helpers for tests: temp dirs, running the CLI, small data files.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.h"

namespace qpeft::testing {

// A fresh directory under the test temp dir, removed at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    path_ = (std::filesystem::path(::testing::TempDir()) / ("qpeft_" + name + "_" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& f) const { return path_ + "/" + f; }

 private:
  std::string path_;
};

struct RunResult {
  int status;
  std::string output;  // stdout + stderr
};

// Runs a shell command line; captures what it writes to stdout (redirect stderr yourself).
inline RunResult run_shell(const std::string& cmd) {
  RunResult r{0, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs the qpeft CLI with args (a shell-quoted string); captures stdout and stderr.
inline RunResult run_cli(const std::string& args) { return run_shell(std::string(QPEFT_CLI_PATH) + " " + args + " 2>&1"); }

// A failed command's output is exactly one line, "qpeft: error: …", containing must_contain;
// the exit status is 1 (a user error, not an internal one).
inline void expect_one_line_error(const RunResult& r, const std::string& must_contain) {
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(r.output.rfind("qpeft: error: ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(must_contain), std::string::npos) << "missing '" << must_contain << "' in: " << r.output;
}

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Pre-tokenized JSON lines: n examples, each a short pattern repeated (learnable).
inline std::string repetitive_jsonl(int n, int len, int vocab, int seed) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    out += "{\"input_ids\": [";
    for (int t = 0; t < len; ++t) out += (t ? "," : "") + std::to_string(3 + (seed + i + (t % 4) * 7) % (vocab - 3));
    out += "]}\n";
  }
  return out;
}

// What fn throws as qpeft::Error, or "(no error)".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const qpeft::Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline std::string golden_dir(const char* variant) { return std::string(QPEFT_TEST_DATA) + "/golden/" + variant; }

}  // namespace qpeft::testing

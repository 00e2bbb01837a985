// Small flag parsers shared by the subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace qpeft::cli {

// A finite number in [lo, hi]. CLI::Range lets nan through (every comparison with it is
// false) and prints its bounds in full (DBL_MAX as 309 digits); this prints them as %g.
inline CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        if (!std::isfinite(v) || v < lo || v > hi) return fmt::format("{} is not a finite number in [{:g}, {:g}]", s, lo, hi);
        return {};
      },
      fmt::format("FINITE in [{:g}, {:g}]", lo, hi));
}

// A whole number of at least `lo` (steps, ranks, batches, counts). CLI::PositiveNumber and
// CLI::NonNegativeNumber print DBL_MAX in full when they refuse a value.
inline CLI::Validator count_at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        int64_t v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a whole number";
        if (v < lo) return fmt::format("{} must be at least {}", s, lo);
        return {};
      },
      fmt::format("INT >= {}", lo));
}

// Formats a quantized checkpoint is written in (init-model, quantize): bitsandbytes' nf4 and fp4,
// qpeft's nf2/nf3/uniform2..4.
inline std::vector<std::string> stored_quant_formats() {
  return {"nf4", "fp4", "nf2", "nf3", "uniform2", "uniform3", "uniform4"};
}

// Formats a frozen base weight can be quantized to in memory (--quant, --base-quant): the stored
// ones and int8 (blockwise absmax in --quant-block blocks: 8-bit codes like bitsandbytes'
// blockwise int8, not LLM.int8()'s vector-wise scheme with fp16 outliers).
inline std::vector<std::string> frozen_quant_formats(std::vector<std::string> extra_first = {}) {
  for (std::string& f : stored_quant_formats()) extra_first.push_back(std::move(f));
  extra_first.push_back("int8");
  return extra_first;
}

// --threads: 0 (all cores) up to this many.
inline const CLI::Range kThreadsRange(0, 1024);

// "a,b,,c" -> {"a", "b", "c"}
inline std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// "q_proj=16,down_proj=8" -> [(name, value)] in the order given (PEFT tries pattern keys in
// order); a repeated name keeps its first position and takes the last value. Errors name the
// flag and the entry.
template <class T>
std::vector<std::pair<std::string, T>> parse_module_pattern(const std::string& s, const char* flag) {
  std::vector<std::pair<std::string, T>> out;
  for (const auto& kv : split_csv(s)) {
    auto eq = kv.find('=');
    QP_CHECK(eq != std::string::npos && eq > 0, "{} entry '{}' must look like NAME=VALUE", flag, kv);
    T value{};
    try {
      value = T(std::stod(kv.substr(eq + 1)));
    } catch (const std::exception&) {
      qpeft::fail("{} entry '{}': '{}' is not a number", flag, kv, kv.substr(eq + 1));
    }
    const std::string key = kv.substr(0, eq);
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == key; });
    if (it != out.end()) it->second = value;
    else out.emplace_back(key, value);
  }
  return out;
}

}  // namespace qpeft::cli

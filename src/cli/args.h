// Small flag parsers shared by the subcommands.
#pragma once
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace qpeft::cli {

// "a,b,,c" -> {"a", "b", "c"}
inline std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// "q_proj=16,down_proj=8" -> map; errors name the flag and the entry.
template <class T>
std::map<std::string, T> parse_module_pattern(const std::string& s, const char* flag) {
  std::map<std::string, T> out;
  for (const auto& kv : split_csv(s)) {
    auto eq = kv.find('=');
    QP_CHECK(eq != std::string::npos && eq > 0, "{} entry '{}' must look like NAME=VALUE", flag, kv);
    try {
      out[kv.substr(0, eq)] = T(std::stod(kv.substr(eq + 1)));
    } catch (const std::exception&) {
      qpeft::fail("{} entry '{}': '{}' is not a number", flag, kv, kv.substr(eq + 1));
    }
  }
  return out;
}

}  // namespace qpeft::cli

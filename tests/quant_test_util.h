// Helpers for the quant tests: a tiny safetensors reader for the fixtures (F32 tensors only)
// and shaped inputs.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"

namespace qpeft::testing {

struct F32Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

inline std::map<std::string, F32Tensor> load_f32_safetensors(const std::string& path) {
  auto f = MappedFile::open(path);
  QP_CHECK(f->size() >= 8, "{} too small", path);
  uint64_t hlen;
  std::memcpy(&hlen, f->data(), 8);
  auto header = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(f->data()) + 8, hlen));
  const uint8_t* base = f->data() + 8 + hlen;
  std::map<std::string, F32Tensor> out;
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    QP_CHECK(v["dtype"] == "F32", "{}: {} is not F32", path, name);
    F32Tensor t;
    t.shape = v["shape"].get<std::vector<int64_t>>();
    auto off = v["data_offsets"].get<std::vector<uint64_t>>();
    t.data.resize((off[1] - off[0]) / 4);
    std::memcpy(t.data.data(), base + off[0], off[1] - off[0]);
    out[name] = std::move(t);
  }
  return out;
}

inline std::string test_data(const std::string& rel) { return std::string(QPEFT_TEST_DATA) + "/" + rel; }

inline std::vector<float> gaussian(int64_t n, uint64_t seed, float sd = 1.0f) {
  Rng r(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(r.normal()) * sd;
  return v;
}

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace qpeft::testing

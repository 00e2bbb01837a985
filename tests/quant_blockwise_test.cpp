#include <gtest/gtest.h>

#include <cmath>

#include "quant/blockwise.h"
#include "quant_test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

TEST(QuantFixture, ProbeScales) {
  auto fx = load_f32_safetensors(test_data("loftq/loftq_C.safetensors"));
  const auto& W = fx.at("W").data;
  for (const char* nm : {"q2_uniform_scale", "q4_uniform_scale", "q4_normal_scale"}) {
    const auto& s = fx.at(nm).data;
    int diff = 0;
    ScaleRule rule = std::string(nm).find("uniform") != std::string::npos ? ScaleRule::MeanStd : ScaleRule::Absmax;
    for (size_t b = 0; b < s.size(); ++b) {
      float ours = block_scale(W.data() + b * 64, 64, rule);
      if (ours != s[b]) {
        if (diff < 5) printf("%s[%zu]: ours %.9g fixture %.9g\n", nm, b, ours, s[b]);
        diff++;
      }
    }
    printf("%s: %d / %zu differ\n", nm, diff, s.size());
  }
}

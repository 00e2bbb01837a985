// The small Llama shape the quantized-model and LoftQ tests generate: hidden 128, MLP 256,
// 4 query / 2 key-value heads of 32, vocab 96.
#pragma once
#include "models/config.h"

namespace qpeft::testing {

inline ModelConfig small_test_config(int layers = 2) {
  ModelConfig c;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_layers = layers;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.vocab_size = 96;
  c.rope.head_dim = 32;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.source = "test";
  return c;
}

}  // namespace qpeft::testing

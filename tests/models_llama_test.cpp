#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "models/checkpoint.h"
#include "io/safetensors.h"
#include "models/gguf_model.h"
#include "peft/adapter_io.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

TEST(ModelConfig, PresetsHaveTheReferenceShapes) {
  EXPECT_NEAR(double(ModelConfig::preset("7b").num_parameters()), 6.738e9, 0.001e9);    // Llama-2-7B
  EXPECT_NEAR(double(ModelConfig::preset("1b").num_parameters()), 1.236e9, 0.001e9);    // Llama-3.2-1B
  ModelConfig c = ModelConfig::preset("1b");
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.scaling_type, "llama3");
  // to_json round-trips through the parser.
  ModelConfig back = ModelConfig::parse(c.to_json(), "roundtrip");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_THROW(ModelConfig::preset("3b"), Error);
}

TEST(ModelConfig, RejectsWhatItCannotRun) {
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      ModelConfig::parse(json, "cfg.json");
      ADD_FAILURE() << "accepted: " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    }
  };
  const std::string base = R"("hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100)";
  expect_error("{\"model_type\": \"falcon\", " + base + "}", "falcon");
  expect_error("{\"model_type\": \"llama\", \"hidden_size\": 64}", "intermediate_size");
  expect_error("{\"model_type\": \"llama\", \"num_key_value_heads\": 3, " + base + "}", "num_key_value_heads");
  expect_error("{\"model_type\": \"llama\", \"hidden_act\": \"gelu\", " + base + "}", "gelu");
  expect_error("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}, " + base + "}", "yarn");
  expect_error("not json", "not valid JSON");
  ModelConfig m = ModelConfig::parse("{\"model_type\": \"mistral\", \"sliding_window\": 4096, " + base + "}", "m");
  EXPECT_EQ(m.sliding_window, 4096);
  ModelConfig q = ModelConfig::parse("{\"model_type\": \"qwen2\", " + base + "}", "q");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
}

TEST(Llama, GradientCheckpointingGivesIdenticalGradients) {
  auto run = [](bool ckpt) {
    auto model = load_model(golden_dir("llama"));
    load_lora_adapter(*model, golden_dir("llama") + "/adapter_init");
    model->set_grad_checkpointing(ckpt);
    std::vector<int32_t> ids(32), labels(32);
    for (int i = 0; i < 32; ++i) ids[i] = labels[i] = (i * 11 + 3) % 96;
    Graph g(true, 5, true);
    LossResult r = model->loss(g, ids, labels, 2, 16);
    g.backward(r.loss);
    std::vector<std::vector<float>> grads;
    for (auto& [k, p] : adapter_params(*model)) grads.push_back(p.grad().to_vector());
    return std::make_pair(double(r.loss.value().f32()[0]), grads);
  };
  auto plain = run(false), ckpt = run(true);
  EXPECT_EQ(plain.first, ckpt.first);
  ASSERT_EQ(plain.second.size(), ckpt.second.size());
  for (size_t i = 0; i < plain.second.size(); ++i) EXPECT_EQ(plain.second[i], ckpt.second[i]) << i;
}

TEST(Llama, Bf16CheckpointStaysBf16AndMatchesF32Closely) {
  TempDir tmp("bf16");
  ModelConfig cfg = ModelConfig::load(golden_dir("llama"));
  write_random_model(cfg, DType::BF16, 9, tmp / "bf16");
  auto m = load_model(tmp / "bf16");
  auto* dense = dynamic_cast<const DenseWeight*>(m->layers()[0].q_proj.weight.get());
  ASSERT_NE(dense, nullptr);
  EXPECT_EQ(dense->tensor().dtype(), DType::BF16);  // no f32 copy of the base
  std::vector<int32_t> ids = {1, 5, 9, 13, 17, 21, 25, 29};
  Tensor a = m->logits(ids, 1, 8);
  SaveOptions opt;
  opt.dtype = DType::F32;
  opt.matrix = [](const WeightSlot& s) -> Tensor {
    return decode_to_f32(**s.frozen);
  };
  save_model(*m, tmp / "f32", opt);
  Tensor b = load_model(tmp / "f32")->logits(ids, 1, 8);
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a.f32()[i], b.f32()[i], 1e-5);
}

namespace {

// Every byte of the files under path (a file or a directory) set to zero, in place, so that a
// model still reading their mapping sees zero weights.
void zero_files_in_place(const std::filesystem::path& path) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& e : std::filesystem::directory_iterator(path))
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
  } else {
    files.push_back(path);
  }
  for (const auto& f : files) {
    const std::string zeros(size_t(std::filesystem::file_size(f)), '\0');
    std::fstream out(f, std::ios::in | std::ios::out | std::ios::binary);
    out.write(zeros.data(), std::streamsize(zeros.size()));
  }
}

}  // namespace

// LoadOptions::in_memory (how `train` loads): the matrices kept as stored are copies, so the
// logits equal those of the mapped load bit for bit and do not change when the files are
// overwritten afterwards, while a mapped model's do. Dense bf16, bitsandbytes NF4 and GGUF
// (bf16, and q8_0 with q/k rows permuted) files; tied embeddings, since an untied embedding
// table stays mapped.
TEST(Llama, InMemoryLoadKeepsNoViewOfTheFiles) {
  TempDir tmp("in_memory");
  ModelConfig cfg = ModelConfig::load(golden_dir("llama"));
  cfg.tie_word_embeddings = true;
  write_random_model(cfg, DType::BF16, 9, tmp / "bf16");
  {
    SaveOptions nf4;
    nf4.quant = QuantizeOptions{"nf4", 64, true};
    save_model(*load_model(tmp / "bf16"), tmp / "nf4", nf4);
  }
  // GGUF export needs a tokenizer: the shipped model's, on a tied random model of its shape.
  const std::string austen = std::string(QPEFT_TEST_DATA) + "/../../models/austen-tiny";
  ModelConfig tied = ModelConfig::load(austen);
  tied.tie_word_embeddings = true;
  write_random_model(tied, DType::BF16, 3, tmp / "tied");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(austen + "/" + f, tmp / ("tied/" + std::string(f)));
  for (const char* dtype : {"bf16", "q8_0"}) {
    GgufExportOptions g;
    g.dtype = dtype;
    export_gguf_model(*load_model(tmp / "tied"), tmp / "tied", tmp / (std::string(dtype) + ".gguf"), g);
  }
  const std::vector<int32_t> ids = {1, 5, 9, 13, 17, 21, 25, 29};
  for (const char* name : {"bf16", "nf4", "bf16.gguf", "q8_0.gguf"}) {
    SCOPED_TRACE(name);
    const std::string path = tmp / name;
    LoadOptions in_memory;
    in_memory.in_memory = true;
    auto copied = load_model(path, in_memory);
    auto mapped = load_model(path);
    if (std::string(name) == "bf16") {
      auto* w = dynamic_cast<const DenseWeight*>(copied->layers()[0].q_proj.weight.get());
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->tensor().dtype(), DType::BF16);  // copied as stored, not widened
    }
    const Tensor before = copied->logits(ids, 1, 8);
    const Tensor mapped_before = mapped->logits(ids, 1, 8);
    ASSERT_EQ(std::memcmp(before.raw(), mapped_before.raw(), before.nbytes()), 0);
    zero_files_in_place(path);
    const Tensor after = copied->logits(ids, 1, 8);
    EXPECT_EQ(std::memcmp(before.raw(), after.raw(), before.nbytes()), 0);
    const Tensor mapped_after = mapped->logits(ids, 1, 8);
    EXPECT_NE(std::memcmp(before.raw(), mapped_after.raw(), before.nbytes()), 0) << "the mapped model should see the zeros";
  }
}

// An untied embedding table stays a view of the mapping (a step reads only the looked-up
// rows); the head and the layers are copies.
TEST(Llama, InMemoryLoadLeavesAnUntiedEmbeddingMapped) {
  TempDir tmp("in_memory_untied");
  ModelConfig cfg = ModelConfig::load(golden_dir("llama"));
  ASSERT_FALSE(cfg.tie_word_embeddings);
  write_random_model(cfg, DType::BF16, 9, tmp / "m");
  TensorStore store = TensorStore::open_dir(tmp / "m");
  store.set_in_memory(true);
  const SafetensorsFile& file = *store.files()[0];
  EXPECT_FALSE(file.is_view(store.get("lm_head.weight")));
  EXPECT_TRUE(file.is_view(store.get_mapped("model.embed_tokens.weight")));
  EXPECT_TRUE(read_only_in_part(cfg, "model.embed_tokens.weight"));
  EXPECT_FALSE(read_only_in_part(cfg, "lm_head.weight"));
  cfg.tie_word_embeddings = true;
  EXPECT_FALSE(read_only_in_part(cfg, "model.embed_tokens.weight"));
}

TEST(Llama, FullFineTuningGradientsMatchFiniteDifferences) {
  for (const char* v : {"llama", "qwen2"}) {  // untied head + GQA; tied head + biases
    auto model = load_model(golden_dir(v));
    auto params = model->make_fully_trainable();
    std::vector<int32_t> ids(24);
    for (int i = 0; i < 24; ++i) ids[i] = (i * 13 + 7) % int(model->config().vocab_size);
    auto loss_of = [&] {
      Graph g(false);
      return double(model->loss(g, ids, ids, 2, 12).loss.value().f32()[0]);
    };
    {
      Graph g;
      LossResult r = model->loss(g, ids, ids, 2, 12);
      g.backward(r.loss);
    }
    int checked = 0;
    for (auto& [name, p] : params) {
      ASSERT_TRUE(p.has_grad()) << v << " " << name << " got no gradient";
      // The largest-gradient element of each tensor: well above finite-difference noise.
      const float* gr = p.grad().f32();
      int64_t best = 0;
      for (int64_t i = 1; i < p.value().numel(); ++i)
        if (std::fabs(gr[i]) > std::fabs(gr[best])) best = i;
      float* x = p.value().f32();
      const float orig = x[best], eps = 1e-2f;
      x[best] = orig + eps;
      const double up = loss_of();
      x[best] = orig - eps;
      const double down = loss_of();
      x[best] = orig;
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(gr[best], fd, 2e-4 + 0.03 * std::fabs(fd)) << v << " " << name;
      ++checked;
    }
    EXPECT_EQ(checked, int(params.size()));
  }
}

// Quantized models: quantize on load, bitsandbytes checkpoints written by `qpeft quantize` /
// `init-model --quant`, merging an adapter into a quantized base, and the CLI end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "io/bnb_checkpoint.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "small_config.h"
#include "test_util.h"
#include "tensor_compare.h"

using namespace qpeft;
using namespace qpeft::testing;
using qpeft::testing::RunResult;
using qpeft::testing::run_cli;

namespace {


const std::vector<int32_t> kIds = {1, 5, 17, 33, 60, 2, 9, 95, 40, 41, 42, 7};

double rel_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector(), y = b.to_vector();
  double d = 0, n = 0;
  for (size_t i = 0; i < x.size(); ++i) d += (x[i] - y[i]) * double(x[i] - y[i]), n += double(y[i]) * y[i];
  return std::sqrt(d / n);
}

class QuantizedModel : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = ::testing::TempDir() + "qpeft_qm_" + std::to_string(::getpid()) + "_" + info->name();
    make_dirs(dir_);
  }
  void TearDown() override { remove_all(dir_); }
  std::string path(const std::string& f) const { return dir_ + "/" + f; }
  // `qpeft quantize` as a library call: load dense (mapped), save with quantization.
  void quantize_dir(const std::string& src, const std::string& dst, const QuantizeOptions& q) {
    auto m = load_model(src);
    SaveOptions opt;
    opt.dtype = DType::BF16;
    opt.quant = q;
    save_model(*m, dst, opt);
  }
  std::string dir_;
};

int count_quantized(LlamaModel& m) {
  int n = 0;
  m.visit_linears([&](Linear& l) { n += dynamic_cast<const QuantizedWeight*>(l.weight.get()) != nullptr; });
  return n;
}

TEST_F(QuantizedModel, QuantizeOnLoadIsCloseToDenseAndEqualsTheQuantizedCheckpoint) {
  write_random_model(qpeft::testing::small_test_config(), DType::BF16, 11, path("dense"));
  auto dense = load_model(path("dense"));
  const Tensor ref = dense->logits(kIds, 2, 6);

  LoadOptions lo;
  lo.quantize.format = "nf4";  // QLoRA: NF4, double quantization, block 64
  auto q = load_model(path("dense"), lo);
  EXPECT_EQ(count_quantized(*q), 14);
  EXPECT_TRUE(dynamic_cast<const DenseWeight*>(q->embed_tokens().get()));
  EXPECT_TRUE(dynamic_cast<const DenseWeight*>(q->lm_head().get()));
  const Tensor lq = q->logits(kIds, 2, 6);
  const double err4 = rel_diff(lq, ref);
  EXPECT_GT(err4, 0.0);
  // Each NF4 weight is off by ~10% (relative Frobenius); in this random model the layers' outputs
  // dominate the residual stream, so the logits carry the compounded error of 5 matrices (~18%).
  EXPECT_LT(err4, 0.25) << "NF4 logits error";

  lo.quantize = {"nf2", 64, false};
  const double err2 = rel_diff(load_model(path("dense"), lo)->logits(kIds, 2, 6), ref);
  EXPECT_GT(err2, 2 * err4) << "NF2 should be much worse than NF4";
  std::printf("logits relative error: nf4+dq %.4f, nf2 %.4f\n", err4, err2);

  // The checkpoint `qpeft quantize` writes loads to exactly the same model.
  quantize_dir(path("dense"), path("q"), {"nf4", 64, true});
  auto from_file = load_model(path("q"));
  EXPECT_EQ(count_quantized(*from_file), 14);
  EXPECT_TRUE(same_bits(from_file->logits(kIds, 2, 6), lq));
  const ModelConfig qc = ModelConfig::load(path("q"));
  EXPECT_EQ(qc.quantization.quant_method, "bitsandbytes");
  EXPECT_EQ(qc.quantization.quant_type, "nf4");
  EXPECT_TRUE(qc.quantization.double_quant && qc.quantization.load_in_4bit);
  EXPECT_EQ(qc.quantization.compute_dtype, "bfloat16");
  // The norms and embeddings are copied bit for bit.
  TensorStore a = TensorStore::open_dir(path("dense")), b = TensorStore::open_dir(path("q"));
  for (const char* n : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"})
    EXPECT_TRUE(same_bits(a.get(n), b.get(n))) << n;
  EXPECT_FALSE(b.has("model.embed_tokens.weight.absmax"));
}

TEST_F(QuantizedModel, InitModelQuantEqualsQuantizingTheDenseModel) {
  for (const QuantizeOptions& q : {QuantizeOptions{"nf4", 64, true}, QuantizeOptions{"fp4", 128, false},
                                   QuantizeOptions{"nf3", 64, false}}) {
    SCOPED_TRACE(q.format);
    write_random_model(qpeft::testing::small_test_config(), DType::BF16, 5, path("dense"));
    quantize_dir(path("dense"), path("q"), q);
    write_random_model(qpeft::testing::small_test_config(), DType::BF16, 5, path("init_q"), q);
    EXPECT_EQ(read_text_file(path("q/model.safetensors")), read_text_file(path("init_q/model.safetensors")));
    EXPECT_EQ(read_text_file(path("q/config.json")), read_text_file(path("init_q/config.json")));
  }
  EXPECT_EQ(ModelConfig::load(path("init_q")).quantization.quant_method, "qpeft");  // nf3 is not bitsandbytes'
}

TEST_F(QuantizedModel, SavingALoadedQuantizedModelReproducesItsFiles) {
  write_random_model(qpeft::testing::small_test_config(), DType::BF16, 2, path("q"), {"nf4", 64, true});
  auto m = load_model(path("q"));
  SaveOptions opt;  // bf16, weights as loaded
  save_model(*m, path("again"), opt);
  EXPECT_EQ(read_text_file(path("q/model.safetensors")), read_text_file(path("again/model.safetensors")));
  EXPECT_EQ(read_text_file(path("q/config.json")), read_text_file(path("again/config.json")));
}

// A random adapter on every linear layer, saved as PEFT files.
void make_adapter(LlamaModel& m, const std::string& dir) {
  LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  lc.target_modules = {"all-linear"};
  inject_lora(m, lc, 9);
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (auto& [key, p] : adapter_params(m))
    if (key.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.value().numel(); ++i) p.value().f32()[i] = nd(rng);
  save_lora_adapter(m, lc, dir);
}

TEST_F(QuantizedModel, MergeIntoQuantizedBase) {
  write_random_model(qpeft::testing::small_test_config(), DType::BF16, 3, path("q"), {"nf4", 64, true});
  auto base = load_model(path("q"));
  make_adapter(*base, path("adapter"));
  const Tensor with_adapter = base->logits(kIds, 2, 6);

  // Exact merge, written dense: the quantization_config goes away.
  SaveOptions opt;
  opt.dtype = DType::F32;
  opt.matrix = [](const WeightSlot& s) -> Tensor {
    return s.linear ? merged_weight(*s.linear) : std::dynamic_pointer_cast<const DenseWeight>(*s.frozen)->tensor();
  };
  save_model(*base, path("merged"), opt);
  auto merged = load_model(path("merged"));
  EXPECT_EQ(count_quantized(*merged), 0);
  EXPECT_FALSE(merged->config().quantization.present());
  EXPECT_LT(rel_diff(merged->logits(kIds, 2, 6), with_adapter), 1e-5);

  // Requantized in the base's format: loadable, quantized again, close.
  opt.dtype = DType::BF16;
  opt.requantize = true;
  int seen = 0;
  double worst = 0;
  opt.on_quantized = [&](const WeightSlot& s, const QuantizedWeight& q, const Tensor& exact) {
    ++seen;
    EXPECT_EQ(q.format(), QuantFormat::NF4);
    EXPECT_TRUE(q.double_quant());
    worst = std::max(worst, rel_diff(q.dequantize(), exact));
  };
  save_model(*base, path("requant"), opt);
  EXPECT_EQ(seen, 14);
  EXPECT_GT(worst, 0.01);
  EXPECT_LT(worst, 0.15);
  std::printf("requantized merged weights: max relative error %.4f\n", worst);
  auto rq = load_model(path("requant"));
  EXPECT_EQ(count_quantized(*rq), 14);
  EXPECT_EQ(rq->config().quantization.quant_type, "nf4");
  EXPECT_LT(rel_diff(rq->logits(kIds, 2, 6), with_adapter), 0.2);
}

TEST(QuantizationConfigJson, RoundTripsAndRefusesWhatWeCannotRead) {
  const std::string base =
      R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
          "num_attention_heads": 2, "vocab_size": 50, "quantization_config": )";
  const std::string q = R"({"quant_method": "bitsandbytes", "_load_in_4bit": true, "_load_in_8bit": false,
      "llm_int8_threshold": 6.0, "llm_int8_skip_modules": ["lm_head", "mlp.gate"], "llm_int8_enable_fp32_cpu_offload": false,
      "llm_int8_has_fp16_weight": false, "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": false,
      "bnb_4bit_compute_dtype": "float16", "bnb_4bit_quant_storage": "uint8", "load_in_4bit": true,
      "load_in_8bit": false, "some_future_key": 42})";
  ModelConfig c = ModelConfig::parse(base + q + "}", "test");
  EXPECT_EQ(c.quantization.quant_method, "bitsandbytes");
  EXPECT_EQ(c.quantization.quant_type, "fp4");
  EXPECT_FALSE(c.quantization.double_quant);
  EXPECT_EQ(c.quantization.compute_dtype, "float16");
  EXPECT_EQ(c.quantization.skip_modules, (std::vector<std::string>{"lm_head", "mlp.gate"}));
  const auto again = nlohmann::json::parse(c.to_json());
  EXPECT_EQ(again["quantization_config"], nlohmann::json::parse(q));  // every key, unknown ones too
  ModelConfig c2 = ModelConfig::parse(c.to_json(), "again");
  EXPECT_EQ(c2.quantization.quant_type, "fp4");

  // What transformers writes for QLoRA's settings: exactly BitsAndBytesConfig.to_dict()'s keys.
  ModelConfig d = c;
  d.quantization = QuantizationConfig::bnb_4bit("nf4", true);
  auto j = nlohmann::json::parse(d.to_json())["quantization_config"];
  EXPECT_EQ(j, nlohmann::json::parse(R"({"quant_method": "bitsandbytes", "_load_in_8bit": false, "_load_in_4bit": true,
      "llm_int8_threshold": 6.0, "llm_int8_skip_modules": null, "llm_int8_enable_fp32_cpu_offload": false,
      "llm_int8_has_fp16_weight": false, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true,
      "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8", "load_in_4bit": true,
      "load_in_8bit": false})"));

  auto refuses = [&](const std::string& qc, const std::string& words) {
    try {
      ModelConfig::parse(base + qc + "}", "cfg.json");
      ADD_FAILURE() << "accepted " << qc;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    }
  };
  refuses(R"({"quant_method": "bitsandbytes", "load_in_8bit": true})", "LLM.int8");
  refuses(R"({"quant_method": "gptq", "bits": 4})", "quant_method 'gptq'");
  refuses(R"({"quant_method": "bitsandbytes", "llm_int8_skip_modules": "lm_head"})", "llm_int8_skip_modules");
}

TEST_F(QuantizedModel, CliQuantizeInitModelAndMerge) {
  const std::string d = path("dense"), q = path("q"), iq = path("iq");
  ASSERT_EQ(run_cli("init-model --preset tiny --seed 4 --out " + d).status, 0);
  write_file_atomic(d + "/tokenizer_config.json", "{}\n");
  RunResult r = run_cli("quantize --model " + d + " --out " + q + " --quant nf4 --block-size 64 --double-quant");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("4.127 bits/param"), std::string::npos) << r.output;
  EXPECT_TRUE(file_exists(q + "/tokenizer_config.json"));
  r = run_cli("init-model --preset tiny --seed 4 --quant nf4 --double-quant --out " + iq);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_text_file(q + "/model.safetensors"), read_text_file(iq + "/model.safetensors"));

  // Refusals: quantizing a quantized model, requantizing onto a dense base, a bad block size.
  r = run_cli("quantize --model " + q + " --out " + path("qq"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("already quantized"), std::string::npos) << r.output;
  r = run_cli("quantize --model " + d + " --out " + path("qq") + " --block-size 48");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("48"), std::string::npos) << r.output;

  {
    auto m = load_model(q);
    make_adapter(*m, path("adapter"));
  }
  r = run_cli("merge --model " + q + " --adapter " + path("adapter") + " --out " + path("m16"));
  ASSERT_EQ(r.status, 0) << r.output;
  const ModelConfig mc = ModelConfig::load(path("m16"));
  EXPECT_FALSE(mc.quantization.present());
  EXPECT_EQ(mc.torch_dtype, "bfloat16");
  EXPECT_EQ(TensorStore::open_dir(path("m16")).dtype_of("model.layers.0.mlp.up_proj.weight"), DType::BF16);
  auto merged = load_model(path("m16"));
  EXPECT_EQ(count_quantized(*merged), 0);

  r = run_cli("merge --model " + q + " --adapter " + path("adapter") + " --out " + path("mq") + " --requantize");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: requantizing"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("|Q(W)-W|/|W| max"), std::string::npos) << r.output;
  auto rq = load_model(path("mq"));
  EXPECT_EQ(count_quantized(*rq), 28);
  EXPECT_EQ(rq->config().quantization.quant_type, "nf4");

  r = run_cli("merge --model " + d + " --adapter " + path("adapter") + " --out " + path("bad") + " --requantize");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("not quantized"), std::string::npos) << r.output;
}

}  // namespace

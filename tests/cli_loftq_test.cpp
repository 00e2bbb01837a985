// qpeft loftq / train --init-adapter / eval / merge / dequantize end to end through the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "quant/quantized_weight.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

// A key of the JSON object on the output's last line (stderr notes may come first).
double json_number(const std::string& out, const char* key) {
  const size_t end = out.find_last_not_of('\n');
  const auto j = nlohmann::json::parse(out.substr(out.rfind('\n', end) + 1));
  return j.at(key).get<double>();
}

}  // namespace

TEST(CliLoftq, InitTrainEvalMergeDequantize) {
  TempDir tmp("cli_loftq");
  ASSERT_EQ(run_cli("init-model --preset tiny --seed 4 --init-std 0.1 --out " + tmp / "dense").status, 0);
  write_file(tmp / "data.jsonl", repetitive_jsonl(16, 24, 256, 1));
  // Mixed precision: the first layer nf4, the rest nf2; T = 2.
  RunResult r = run_cli("loftq --model " + tmp / "dense" + " --out " + tmp / "lq" +
                        " --quant nf2 --layer-quant layers.0=nf4 --rank 8 --alpha 16 --iters 2 --threads 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("bits/param on average"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[1/"), std::string::npos) << r.output;  // progress per layer
  const auto cfg = nlohmann::json::parse(read_file(tmp / "lq/loftq_init/adapter_config.json"));
  EXPECT_EQ(cfg.at("peft_type"), "LORA");
  EXPECT_EQ(cfg.at("r"), 8);
  EXPECT_EQ(cfg.at("lora_alpha"), 16.0);
  EXPECT_FALSE(cfg.contains("use_rslora")) << "written only when true";
  EXPECT_EQ(cfg.at("target_modules").size(), 7u);
  {
    auto st = SafetensorsFile::open(tmp / "lq/loftq_init/adapter_model.safetensors");
    EXPECT_EQ(st->metadata().at("qpeft.init"), "loftq");
    EXPECT_EQ(st->metadata().at("qpeft.loftq_iters"), "2");
    EXPECT_TRUE(st->has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    auto m = load_model(tmp / "lq");
    std::map<std::string, int> formats;
    m->visit_linears([&](Linear& l) {
      auto* q = dynamic_cast<const QuantizedWeight*>(l.weight.get());
      ASSERT_TRUE(q) << l.name;
      EXPECT_EQ(q->original_dtype(), DType::BF16) << l.name;  // T = 2 quantizes an f32 residual of a bf16 weight
      formats[fmt::format("{}:{}", l.layer == 0 ? "first" : "rest", quant_format_name(q->format()))]++;
    });
    EXPECT_EQ(formats["first:nf4"], 7);
    EXPECT_EQ(formats["rest:nf2"], 7 * (m->config().num_layers - 1));
  }
  const std::string data = " --data " + tmp / "data.jsonl";
  // Before training: the LoftQ init's logits are closer to the dense model's than the quantized
  // base's alone (--base-quant auto loads the stored quantized base).
  {
    const std::vector<int32_t> ids = {1, 5, 17, 33, 60, 2, 9, 95, 40, 41, 42, 7};
    const Tensor ref = load_model(tmp / "dense")->logits(ids, 1, 12);
    auto err = [&](LlamaModel& m) {
      const Tensor l = m.logits(ids, 1, 12);
      double d = 0;
      for (int64_t i = 0; i < l.numel(); ++i) d += std::pow(double(l.f32()[i]) - ref.f32()[i], 2);
      return std::sqrt(d);
    };
    const double e_plain = err(*load_model(tmp / "lq"));
    const double e_init = err(*load_model_with_adapter(tmp / "lq", tmp / "lq/loftq_init", "auto", nullptr));
    EXPECT_LT(e_init * 1.03, e_plain) << e_init << " vs " << e_plain;
  }
  r = run_cli("eval --model " + tmp / "lq" + data + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const double plain_loss = json_number(r.output, "loss");
  r = run_cli("eval --model " + tmp / "lq" + " --adapter " + tmp / "lq/loftq_init" + data + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const double init_loss = json_number(r.output, "loss");

  // Train from the init on the packed base; interrupted at step 4 and resumed: same bits.
  const std::string train = "train --model " + tmp / "lq" + " --init-adapter " + tmp / "lq/loftq_init" + data +
                            " --steps 8 --batch 2 --seq-len 24 --lr 1e-2 --save-every 4 --threads 2 --quiet";
  r = run_cli(train + " --out " + tmp / "run");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli("eval --model " + tmp / "lq" + " --adapter " + tmp / "run" + data + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const double trained_loss = json_number(r.output, "loss");
  EXPECT_LT(trained_loss, init_loss);
  ASSERT_EQ(run_cli(train + " --out " + tmp / "run2").status, 0);
  std::filesystem::remove_all(tmp / "run2/checkpoint-8");
  std::filesystem::remove(tmp / "run2/adapter_model.safetensors");
  r = run_cli(train + " --out " + tmp / "run2 --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(tmp / "run/adapter_model.safetensors"), read_file(tmp / "run2/adapter_model.safetensors"));
  // The trained adapter on the dense model: refused with what to do.
  r = run_cli("eval --model " + tmp / "dense" + " --adapter " + tmp / "run" + data);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("initialised by LoftQ"), std::string::npos) << r.output;

  // Merge into the quantized base (bf16 out) computes what eval measured.
  r = run_cli("merge --model " + tmp / "lq" + " --adapter " + tmp / "run" + " --out " + tmp / "merged --dtype f32");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli("eval --model " + tmp / "merged" + data + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NEAR(json_number(r.output, "loss"), trained_loss, 1e-4);

  // dequantize: a dense checkpoint holding exactly the decoded weights.
  r = run_cli("dequantize --model " + tmp / "lq" + " --out " + tmp / "deq --dtype f32");
  ASSERT_EQ(r.status, 0) << r.output;
  auto q = load_model(tmp / "lq"), d = load_model(tmp / "deq");
  EXPECT_EQ(ModelConfig::load(tmp / "deq").quantization.present(), false);
  std::vector<Tensor> qw, dw;
  q->visit_linears([&](Linear& l) { qw.push_back(decode_to_f32(*l.weight)); });
  d->visit_linears([&](Linear& l) {
    EXPECT_TRUE(dynamic_cast<const DenseWeight*>(l.weight.get())) << l.name;
    dw.push_back(decode_to_f32(*l.weight));
  });
  ASSERT_EQ(qw.size(), dw.size());
  for (size_t i = 0; i < qw.size(); ++i) EXPECT_EQ(std::memcmp(qw[i].raw(), dw[i].raw(), qw[i].nbytes()), 0) << i;
  r = run_cli("eval --model " + tmp / "deq" + data + " --json");
  EXPECT_NEAR(json_number(r.output, "loss"), plain_loss, 1e-4);
  EXPECT_TRUE(file_exists(tmp / "deq/tokenizer.json") || !file_exists(tmp / "lq/tokenizer.json"));
}

TEST(CliLoftq, MethodLoftqTrainsAndWritesItsBase) {
  TempDir tmp("cli_loftq_method");
  ASSERT_EQ(run_cli("init-model --preset tiny --seed 2 --init-std 0.1 --out " + tmp / "dense").status, 0);
  write_file(tmp / "data.jsonl", repetitive_jsonl(16, 24, 256, 2));
  RunResult r = run_cli("train --method loftq --quant uniform2 --model " + tmp / "dense" + " --data " +
                        tmp / "data.jsonl" + " --out " + tmp / "out --steps 6 --batch 2 --seq-len 24 --lr 1e-2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("loftq: uniform2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--model " + tmp / "out/base"), std::string::npos) << r.output;
  r = run_cli("eval --model " + tmp / "out/base --adapter " + tmp / "out --data " + tmp / "data.jsonl");
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST(CliLoftq, OneLineErrorsNameTheFlag) {
  TempDir tmp("cli_loftq_err");
  ASSERT_EQ(run_cli("init-model --preset tiny --seed 4 --out " + tmp / "dense").status, 0);
  ASSERT_EQ(run_cli("init-model --preset tiny --seed 4 --quant nf4 --out " + tmp / "q").status, 0);
  const std::string base = "loftq --model " + tmp / "dense" + " --out " + tmp / "o";
  struct Case {
    std::string args, want;
  };
  for (const Case& c : {Case{base + " --quant nf2 --rank 100000", "rank 100000 is above min(out, in)"},
                        Case{base + " --quant nf2 --block-size 48", "--block-size"},
                        Case{base + " --quant nf2 --block-size 4096", "does not divide the row length"},
                        Case{base + " --quant nf5", "--quant"},
                        Case{base + " --quant nf2 --layer-quant layers.0=nf7", "unknown format 'nf7'"},
                        Case{"loftq --model " + tmp / "q" + " --out " + tmp / "o --quant nf2", "already quantized"},
                        Case{"train --model " + tmp / "dense --data x --out y --layer-quant '*=nf2'",
                             "belong to --method loftq"}}) {
    SCOPED_TRACE(c.args);
    RunResult r = run_cli(c.args);
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.output.find(c.want), std::string::npos) << r.output;
    // One line (CLI11's own flag errors add its "Run with --help" line).
    const size_t lines = std::count(r.output.begin(), r.output.end(), '\n');
    EXPECT_EQ(lines - (r.output.find("Run with --help") != std::string::npos), 1u) << r.output;
  }
  EXPECT_FALSE(file_exists(tmp / "o/config.json"));
}

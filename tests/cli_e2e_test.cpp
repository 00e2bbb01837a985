// End-to-end tests of the command line: the contract in issue #2 (spellings, exit codes,
// one-line errors) on real files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace qpeft::testing;
namespace fs = std::filesystem;

namespace {

}  // namespace

TEST(Cli, InitTrainEvalMergeEndToEnd) {
  TempDir tmp("cli_e2e");
  RunResult init = run_cli("init-model --preset tiny --dtype f32 --seed 3 --out " + (tmp / "tiny"));
  ASSERT_EQ(init.status, 0) << init.output;
  EXPECT_TRUE(fs::exists(tmp / "tiny/config.json") && fs::exists(tmp / "tiny/model.safetensors"));

  write_file(tmp / "data.jsonl", repetitive_jsonl(8, 24, 32000, 5));
  RunResult tr = run_cli("train --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl") + " --out " +
                         (tmp / "run") + " --rank 4 --alpha 8 --targets all-linear --steps 3 --batch 2 --seq-len 24 "
                         "--lr 1e-2 --threads 2 --metrics " + (tmp / "m.jsonl"));
  ASSERT_EQ(tr.status, 0) << tr.output;
  EXPECT_NE(tr.output.find("step 3/3"), std::string::npos) << tr.output;
  EXPECT_NE(tr.output.find("tok/s"), std::string::npos);
  EXPECT_NE(tr.output.find("ETA"), std::string::npos);
  // One JSON object per optimizer step with step and loss.
  std::istringstream metrics(read_file(tmp / "m.jsonl"));
  std::string line;
  int steps = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["step"].get<int>(), ++steps);
    EXPECT_TRUE(j["loss"].is_number());
  }
  EXPECT_EQ(steps, 3);
  // The curves of that run: one panel each for loss and lr, three points per line.
  RunResult plot = run_cli("plot --metrics " + (tmp / "m.jsonl") + " --out " + (tmp / "curves.svg"));
  ASSERT_EQ(plot.status, 0) << plot.output;
  EXPECT_NE(plot.output.find("(loss, lr)"), std::string::npos) << plot.output;
  const std::string svg = read_file(tmp / "curves.svg");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_GT(std::count(svg.begin(), svg.end(), '\n'), 10);
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++polylines;
  EXPECT_EQ(polylines, 2u);
  expect_one_line_error(run_cli("plot --metrics " + (tmp / "m.jsonl") + " --keys eval_accuracy --out " +
                                (tmp / "x.svg")),
                        "--keys: \"eval_accuracy\" is not in");
  EXPECT_FALSE(fs::exists(tmp / "x.svg"));
  expect_one_line_error(run_cli("plot --out " + (tmp / "x.svg")), "give exactly one of --metrics and --bars");
  write_file(tmp / "r.tsv", "LoRA\t0.91\t0.01\nQLoRA\t0.9\t0.02\n");
  RunResult bars = run_cli("plot --bars " + (tmp / "r.tsv") + " --out " + (tmp / "bars.svg"));
  ASSERT_EQ(bars.status, 0) << bars.output;
  EXPECT_NE(read_file(tmp / "bars.svg").find(">0.9 ± 0.02</text>"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "run/adapter_config.json") && fs::exists(tmp / "run/adapter_model.safetensors"));
  // Training from the file's mapping instead of an in-memory copy gives the same bits.
  RunResult mapped = run_cli("train --mmap --quiet --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl") +
                             " --out " + (tmp / "run_mmap") + " --rank 4 --alpha 8 --targets all-linear --steps 3 "
                             "--batch 2 --seq-len 24 --lr 1e-2 --threads 2");
  ASSERT_EQ(mapped.status, 0) << mapped.output;
  EXPECT_EQ(read_file(tmp / "run_mmap/adapter_model.safetensors"), read_file(tmp / "run/adapter_model.safetensors"));

  RunResult ev = run_cli("eval --json --model " + (tmp / "tiny") + " --adapter " + (tmp / "run") + " --data " +
                         (tmp / "data.jsonl"));
  ASSERT_EQ(ev.status, 0) << ev.output;
  auto evj = nlohmann::json::parse(ev.output);
  EXPECT_GT(evj["tokens"].get<int>(), 0);
  EXPECT_NEAR(evj["perplexity"].get<double>(), std::exp(evj["loss"].get<double>()), 1e-6 * evj["perplexity"].get<double>());

  RunResult mg = run_cli("merge --model " + (tmp / "tiny") + " --adapter " + (tmp / "run") + " --out " + (tmp / "merged"));
  ASSERT_EQ(mg.status, 0) << mg.output;
  RunResult ev2 = run_cli("eval --json --model " + (tmp / "merged") + " --data " + (tmp / "data.jsonl"));
  ASSERT_EQ(ev2.status, 0) << ev2.output;
  EXPECT_NEAR(nlohmann::json::parse(ev2.output)["loss"].get<double>(), evj["loss"].get<double>(), 1e-4);
  RunResult ev_base = run_cli("eval --json --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl"));
  EXPECT_GT(nlohmann::json::parse(ev_base.output)["loss"].get<double>(), evj["loss"].get<double>() + 1e-3);

  // A QLoRA adapter is evaluated on the base quantized as it was trained, unless told otherwise.
  RunResult ql = run_cli("train --method qlora --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl") +
                         " --out " + (tmp / "qrun") + " --rank 4 --steps 2 --batch 2 --seq-len 24 --lr 1e-2 --quiet");
  ASSERT_EQ(ql.status, 0) << ql.output;
  auto last_line_json = [](const std::string& out) {
    const size_t end = out.find_last_not_of('\n');
    return nlohmann::json::parse(out.substr(out.rfind('\n', end) + 1));
  };
  RunResult qe = run_cli("eval --json --model " + (tmp / "tiny") + " --adapter " + (tmp / "qrun") + " --data " +
                         (tmp / "data.jsonl"));
  ASSERT_EQ(qe.status, 0) << qe.output;
  EXPECT_NE(qe.output.find("quantized on load to nf4 (block 64, double quantization), as the adapter was trained"),
            std::string::npos) << qe.output;
  RunResult qn = run_cli("eval --json --base-quant none --model " + (tmp / "tiny") + " --adapter " + (tmp / "qrun") +
                         " --data " + (tmp / "data.jsonl"));
  ASSERT_EQ(qn.status, 0) << qn.output;
  EXPECT_EQ(qn.output.find("quantized on load"), std::string::npos) << qn.output;
  EXPECT_NE(last_line_json(qe.output)["loss"].get<double>(), last_line_json(qn.output)["loss"].get<double>());
  // int8 (blockwise absmax) on the same adapter: quantized as asked, and closer to the stored
  // weights than NF4 is.
  RunResult q8 = run_cli("eval --json --base-quant int8 --model " + (tmp / "tiny") + " --adapter " + (tmp / "qrun") +
                         " --data " + (tmp / "data.jsonl"));
  ASSERT_EQ(q8.status, 0) << q8.output;
  EXPECT_NE(q8.output.find("quantized on load to int8 (block 64"), std::string::npos) << q8.output;
  const double stored_loss = last_line_json(qn.output)["loss"].get<double>();
  EXPECT_LT(std::abs(last_line_json(q8.output)["loss"].get<double>() - stored_loss),
            std::abs(last_line_json(qe.output)["loss"].get<double>() - stored_loss));
  // A QLoRA adapter trained on an int8 base records it, and eval finds it again.
  RunResult t8 = run_cli("train --method qlora --quant int8 --double-quant false --model " + (tmp / "tiny") +
                         " --data " + (tmp / "data.jsonl") + " --out " + (tmp / "q8run") +
                         " --rank 4 --steps 2 --batch 2 --seq-len 24 --lr 1e-2 --quiet");
  ASSERT_EQ(t8.status, 0) << t8.output;
  RunResult e8 = run_cli("eval --json --model " + (tmp / "tiny") + " --adapter " + (tmp / "q8run") + " --data " +
                         (tmp / "data.jsonl"));
  ASSERT_EQ(e8.status, 0) << e8.output;
  EXPECT_NE(e8.output.find("quantized on load to int8 (block 64), as the adapter was trained"), std::string::npos)
      << e8.output;
  // merge --base-quant auto writes the model eval measured: deq(NF4(W)) + s·B·A.
  RunResult qm = run_cli("merge --base-quant auto --dtype f32 --model " + (tmp / "tiny") + " --adapter " +
                         (tmp / "qrun") + " --out " + (tmp / "qmerged"));
  ASSERT_EQ(qm.status, 0) << qm.output;
  RunResult qme = run_cli("eval --json --model " + (tmp / "qmerged") + " --data " + (tmp / "data.jsonl"));
  ASSERT_EQ(qme.status, 0) << qme.output;
  EXPECT_NEAR(last_line_json(qme.output)["loss"].get<double>(), last_line_json(qe.output)["loss"].get<double>(), 1e-4);
}

TEST(Cli, BadInputsGiveOneLineErrors) {
  TempDir tmp("cli_errors");
  const std::string golden = golden_dir("llama");
  write_file(tmp / "data.jsonl", repetitive_jsonl(2, 8, 96, 1));
  auto train_on = [&](const std::string& model) {
    return run_cli("train --model " + model + " --data " + (tmp / "data.jsonl") + " --out " + (tmp / "out") + " --steps 1");
  };
  expect_one_line_error(train_on(tmp / "missing"), "missing");

  // A truncated safetensors file.
  fs::create_directories(tmp / "trunc");
  fs::copy_file(golden + "/config.json", tmp / "trunc/config.json");
  const std::string st = read_file(golden + "/model.safetensors");
  write_file(tmp / "trunc/model.safetensors", st.substr(0, st.size() / 2));
  expect_one_line_error(train_on(tmp / "trunc"), "model.safetensors");

  // An unsupported architecture.
  fs::create_directories(tmp / "gpt2");
  write_file(tmp / "gpt2/config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 8}");
  fs::copy_file(golden + "/model.safetensors", tmp / "gpt2/model.safetensors");
  expect_one_line_error(train_on(tmp / "gpt2"), "model_type 'gpt2' is not supported");

  // config.json promising a shape the file does not have.
  fs::create_directories(tmp / "shape");
  std::string cfg = read_file(golden + "/config.json");
  cfg.replace(cfg.find("\"intermediate_size\": 160"), 24, "\"intermediate_size\": 161");
  write_file(tmp / "shape/config.json", cfg);
  fs::copy_file(golden + "/model.safetensors", tmp / "shape/model.safetensors");
  expect_one_line_error(train_on(tmp / "shape"), "gate_proj.weight");

  // A checkpoint missing a tensor: more layers in config.json than in the file.
  fs::create_directories(tmp / "layers");
  cfg = read_file(golden + "/config.json");
  cfg.replace(cfg.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 3");
  write_file(tmp / "layers/config.json", cfg);
  fs::copy_file(golden + "/model.safetensors", tmp / "layers/model.safetensors");
  expect_one_line_error(train_on(tmp / "layers"), "model.layers.2");

  // A malformed data line names file:line.
  write_file(tmp / "bad.jsonl", "{\"input_ids\": [1, 2]}\n{oops}\n");
  expect_one_line_error(run_cli("eval --model " + golden + " --data " + (tmp / "bad.jsonl")), "bad.jsonl:2");

  // Usage errors exit non-zero too.
  EXPECT_NE(run_cli("train --model " + golden).status, 0);
  EXPECT_NE(run_cli("init-model --preset huge --out " + (tmp / "x")).status, 0);
}

// --method ia3: PEFT IA3 files, T-Few defaults, eval / merge of the adapter, QIA3 (--quant), and
// --resume bit-identical.
TEST(Cli, Ia3TrainEvalMergeResumeEndToEnd) {
  TempDir tmp("cli_ia3");
  ASSERT_EQ(run_cli("init-model --preset tiny --dtype f32 --seed 3 --out " + (tmp / "tiny")).status, 0);
  write_file(tmp / "data.jsonl", repetitive_jsonl(8, 24, 32000, 5));
  const std::string common = " --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl") +
                             " --steps 4 --batch 2 --seq-len 24 --lr 5e-2 --threads 2 --method ia3";
  RunResult tr = run_cli("train" + common + " --out " + (tmp / "run") + " --save-every 2");
  ASSERT_EQ(tr.status, 0) << tr.output;
  EXPECT_NE(tr.output.find("(IA)³"), std::string::npos) << tr.output;
  EXPECT_NE(tr.output.find("step 4/4"), std::string::npos) << tr.output;
  // Trainable parameters: exactly the vectors (k_proj, v_proj outputs and down_proj inputs).
  auto cfg = nlohmann::json::parse(read_file(tmp / "tiny/config.json"));
  const int64_t layers = cfg["num_hidden_layers"].get<int64_t>();
  const int64_t head_dim = cfg.contains("head_dim") ? cfg["head_dim"].get<int64_t>()
                                                    : cfg["hidden_size"].get<int64_t>() / cfg["num_attention_heads"].get<int64_t>();
  const int64_t kv = cfg["num_key_value_heads"].get<int64_t>() * head_dim;
  const int64_t vectors = layers * (2 * kv + cfg["intermediate_size"].get<int64_t>());
  EXPECT_NE(tr.output.find(std::to_string(vectors) + " trainable parameters"), std::string::npos) << tr.output;
  auto ac = nlohmann::json::parse(read_file(tmp / "run/adapter_config.json"));
  EXPECT_EQ(ac["peft_type"], "IA3");
  EXPECT_EQ(ac["feedforward_modules"], nlohmann::json({"down_proj"}));

  // T-Few's recipe where no flag says otherwise: batch 8, lr 3e-3, linear decay after 6% warmup
  // (of 3 steps: 1); 1000 steps unless --steps.
  RunResult dflt = run_cli("train --method ia3 --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl") +
                           " --out " + (tmp / "dflt") + " --steps 3 --seq-len 24 --threads 2 --metrics " +
                           (tmp / "m.jsonl"));
  ASSERT_EQ(dflt.status, 0) << dflt.output;
  EXPECT_NE(dflt.output.find("3 steps x 8 x 1"), std::string::npos) << dflt.output;
  std::istringstream metrics(read_file(tmp / "m.jsonl"));
  std::vector<double> lrs;
  for (std::string line; std::getline(metrics, line);) lrs.push_back(nlohmann::json::parse(line)["lr"].get<double>());
  ASSERT_EQ(lrs.size(), 3u);
  EXPECT_DOUBLE_EQ(lrs[0], 0.0);
  EXPECT_DOUBLE_EQ(lrs[1], 3e-3);
  EXPECT_DOUBLE_EQ(lrs[2], 1.5e-3);

  RunResult ev = run_cli("eval --json --model " + (tmp / "tiny") + " --adapter " + (tmp / "run") + " --data " +
                         (tmp / "data.jsonl"));
  ASSERT_EQ(ev.status, 0) << ev.output;
  const double loss = nlohmann::json::parse(ev.output)["loss"].get<double>();
  RunResult ev_base = run_cli("eval --json --model " + (tmp / "tiny") + " --data " + (tmp / "data.jsonl"));
  EXPECT_GT(nlohmann::json::parse(ev_base.output)["loss"].get<double>(), loss + 1e-3);
  RunResult mg = run_cli("merge --model " + (tmp / "tiny") + " --adapter " + (tmp / "run") + " --out " + (tmp / "merged"));
  ASSERT_EQ(mg.status, 0) << mg.output;
  RunResult ev2 = run_cli("eval --json --model " + (tmp / "merged") + " --data " + (tmp / "data.jsonl"));
  ASSERT_EQ(ev2.status, 0) << ev2.output;
  EXPECT_NEAR(nlohmann::json::parse(ev2.output)["loss"].get<double>(), loss, 1e-4);

  // Resume: drop the last checkpoint and the final files, continue from checkpoint-2.
  fs::remove_all(tmp / "run/checkpoint-4");
  const std::string final_bytes = read_file(tmp / "run/adapter_model.safetensors");
  fs::remove(tmp / "run/adapter_model.safetensors");
  RunResult rs = run_cli("train" + common + " --out " + (tmp / "run") + " --save-every 2 --resume");
  ASSERT_EQ(rs.status, 0) << rs.output;
  EXPECT_NE(rs.output.find("resuming from"), std::string::npos) << rs.output;
  EXPECT_EQ(read_file(tmp / "run/adapter_model.safetensors"), final_bytes);

  // QIA3: the base quantized on load; eval (auto) quantizes it again; merge writes bf16 or requantizes.
  RunResult q = run_cli("train" + common + " --quant nf4 --quiet --out " + (tmp / "q"));
  ASSERT_EQ(q.status, 0) << q.output;
  RunResult qe = run_cli("eval --json --model " + (tmp / "tiny") + " --adapter " + (tmp / "q") + " --data " +
                         (tmp / "data.jsonl"));
  ASSERT_EQ(qe.status, 0) << qe.output;
  EXPECT_NE(qe.output.find("quantized on load to nf4"), std::string::npos) << qe.output;
  RunResult qm = run_cli("merge --base-quant auto --requantize --model " + (tmp / "tiny") + " --adapter " + (tmp / "q") +
                         " --out " + (tmp / "qmerged"));
  ASSERT_EQ(qm.status, 0) << qm.output;
  EXPECT_NE(qm.output.find("requantized"), std::string::npos) << qm.output;
  EXPECT_TRUE(nlohmann::json::parse(read_file(tmp / "qmerged/config.json")).contains("quantization_config"));

  // LoRA flags and a feed-forward module outside the targets are one-line errors.
  expect_one_line_error(run_cli("train" + common + " --out " + (tmp / "x") + " --rank 4"), "--rank");
  expect_one_line_error(run_cli("train" + common + " --out " + (tmp / "x") + " --targets k_proj --feedforward-modules "
                                "down_proj"), "subset");
}

TEST(Cli, InitModelShapeFlags) {
  TempDir tmp("cli_init_shape");
  RunResult init = run_cli("init-model --preset tiny --hidden-size 96 --intermediate-size 160 --heads 6 --kv-heads 2 "
                           "--layers 2 --tie-embeddings --dtype f32 --seed 1 --out " + (tmp / "m"));
  ASSERT_EQ(init.status, 0) << init.output;
  auto cfg = nlohmann::json::parse(read_file(tmp / "m/config.json"));
  EXPECT_EQ(cfg["hidden_size"], 96);
  EXPECT_EQ(cfg["intermediate_size"], 160);
  EXPECT_EQ(cfg["num_attention_heads"], 6);
  EXPECT_EQ(cfg["num_key_value_heads"], 2);
  EXPECT_EQ(cfg["head_dim"], 16);
  EXPECT_EQ(cfg["num_hidden_layers"], 2);
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  // The model it wrote loads and trains a step.
  write_file(tmp / "data.jsonl", repetitive_jsonl(2, 8, 96, 1));
  RunResult tr = run_cli("train --method full --model " + (tmp / "m") + " --data " + (tmp / "data.jsonl") +
                         " --out " + (tmp / "run") + " --steps 1 --batch 1 --seq-len 16");
  EXPECT_EQ(tr.status, 0) << tr.output;
  expect_one_line_error(run_cli("init-model --preset tiny --heads 5 --out " + (tmp / "bad")), "--heads 5");
  expect_one_line_error(run_cli("init-model --preset tiny --heads 4 --kv-heads 3 --out " + (tmp / "bad")), "--kv-heads 3");
}

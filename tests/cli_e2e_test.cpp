// End-to-end tests of the command line: the contract in issue #2 (spellings, exit codes,
// one-line errors) on real files.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace qpeft::testing;
namespace fs = std::filesystem;

namespace {

void expect_one_line_error(const RunResult& r, const std::string& must_contain) {
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("qpeft: error: ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(must_contain), std::string::npos) << "missing '" << must_contain << "' in: " << r.output;
}

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
  EXPECT_TRUE(fs::exists(tmp / "run/adapter_config.json") && fs::exists(tmp / "run/adapter_model.safetensors"));

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

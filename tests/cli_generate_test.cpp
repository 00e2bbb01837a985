// `qpeft generate` and `qpeft eval --metric choice` end to end, on the golden llama with a
// hand-written 96-id tokenizer (gen_fixtures.h), against the library's own results.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "models/generate.h"
#include "peft/adapter_io.h"
#include "gen_fixtures.h"
#include "test_util.h"

using namespace qpeft::testing;

namespace {

// What the CLI should print on stdout: the generated text without the EOS, then a newline.
std::string expected_text(const std::string& dir, const std::vector<int32_t>& prompt, qpeft::GenerateOptions opt,
                          const std::string& adapter = "") {
  auto model = qpeft::load_model(dir);
  if (!adapter.empty()) qpeft::load_lora_adapter(*model, adapter);
  qpeft::Tokenizer tok = qpeft::Tokenizer::load(dir);
  opt.eos_ids = qpeft::eos_token_ids(model->config(), dir, &tok);
  qpeft::GenerateResult r = qpeft::generate(*model, prompt, opt);
  std::vector<int32_t> ids = r.tokens;
  if (r.stopped_on_eos) ids.pop_back();
  return tok.decode(ids, true) + "\n";
}

}  // namespace

TEST(CliGenerate, GreedyChatAndSampledOutputMatchTheLibrary) {
  TempDir tmp("cli_gen");
  const std::string dir = tmp / "model";
  gen_fixtures::make_model_dir(dir);
  qpeft::Tokenizer tok = qpeft::Tokenizer::load(dir);

  // Greedy: stdout is the text, stderr (after it) the speed line.
  qpeft::GenerateOptions opt;
  opt.max_new_tokens = 16;
  std::string want = expected_text(dir, tok.encode("the cat sat on", true), opt);
  RunResult r = run_cli("generate --model " + dir + " --prompt 'the cat sat on' --max-new-tokens 16 --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.substr(0, want.size()), want) << r.output;
  EXPECT_NE(r.output.find("tok/s", want.size()), std::string::npos) << r.output;
  // With an adapter: the library's text with the same adapter.
  want = expected_text(dir, tok.encode("the cat sat on", true), opt, golden_dir("llama") + "/adapter_init");
  r = run_cli("generate --model " + dir + " --adapter " + golden_dir("llama") +
              "/adapter_init --prompt 'the cat sat on' --max-new-tokens 16 --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.substr(0, want.size()), want) << r.output;

  // --chat: the template renders BOS itself and ends with the generation prompt.
  auto tmpl = qpeft::ChatTemplate::from_tokenizer(tok);
  std::string rendered = tmpl.render({{"user", "hello there"}}, true, tok.bos_token(), tok.eos_token());
  EXPECT_EQ(rendered, "<s>user: hello there\nassistant:");
  want = expected_text(dir, tok.encode(rendered, false), opt);
  r = run_cli("generate --chat --model " + dir + " --prompt 'hello there' --max-new-tokens 16 --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.substr(0, want.size()), want) << r.output;

  // Sampling: same seed, same text; the library agrees.
  opt.temperature = 1.2;
  opt.top_k = 30;
  opt.top_p = 0.9;
  opt.seed = 5;
  opt.max_new_tokens = 24;
  want = expected_text(dir, tok.encode("A", true), opt);
  const std::string args = "generate --model " + dir +
                           " --prompt A --max-new-tokens 24 --temperature 1.2 --top-k 30 --top-p 0.9 --seed 5 --threads 2";
  r = run_cli(args);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.substr(0, want.size()), want) << r.output;
  EXPECT_EQ(run_cli(args).output.substr(0, want.size()), want);
}

TEST(CliGenerate, ErrorsAreOneLine) {
  TempDir tmp("cli_gen_err");
  // The golden directory has weights but no tokenizer.
  expect_one_line_error(run_cli("generate --model " + golden_dir("llama") + " --prompt hi"), "tokenizer");
  const std::string dir = tmp / "model";
  gen_fixtures::make_model_dir(dir);
  RunResult r = run_cli("generate --model " + dir + " --prompt hi --top-p 0");
  EXPECT_NE(r.status, 0) << r.output;
  qpeft::testing::write_file(dir + "/tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  expect_one_line_error(run_cli("generate --chat --model " + dir + " --prompt hi"), "chat_template");
}

TEST(CliEvalChoice, AccuracyMatchesTheLibrary) {
  TempDir tmp("cli_choice");
  const std::string dir = tmp / "model";
  gen_fixtures::make_model_dir(dir);
  write_file(tmp / "mc.jsonl",
             R"({"prompt": "the cat sat on the", "choices": [" mat", " dog", " then"], "answer": 0}
{"prompt": "one two three", "choices": [" four", " five and more", " x"], "answer": 1}
{"prompt": "Question: what is 2+2? Answer:", "choices": [" 4", " 22", " four"], "answer": 0}
{"prompt": "caf\u00e9 au", "choices": [" lait", " the"], "answer": 1}
)");
  auto model = qpeft::load_model(dir);
  auto data = qpeft::load_choice_examples(tmp / "mc.jsonl", dir, 96);
  ASSERT_EQ(data.size(), 4u);
  for (auto how : {qpeft::ChoiceScore::kMean, qpeft::ChoiceScore::kSum}) {
    qpeft::ChoiceEvalResult want = qpeft::evaluate_choices(*model, data, how);
    const char* name = how == qpeft::ChoiceScore::kMean ? "mean" : "sum";
    RunResult r = run_cli("eval --metric choice --choice-score " + std::string(name) + " --json --model " + dir +
                          " --data " + (tmp / "mc.jsonl") + " --threads 2");
    ASSERT_EQ(r.status, 0) << r.output;
    auto j = nlohmann::json::parse(r.output);
    EXPECT_EQ(j["correct"].get<int64_t>(), want.correct) << name;
    EXPECT_EQ(j["total"].get<int64_t>(), 4);
    EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), want.accuracy);
  }
  RunResult r = run_cli("eval --metric choice --model " + dir + " --data " + (tmp / "mc.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("accuracy ", 0), 0u) << r.output;
  // Choice data needs the tokenizer; choice data under --metric loss points to --metric choice.
  expect_one_line_error(run_cli("eval --metric choice --model " + golden_dir("llama") + " --data " + (tmp / "mc.jsonl")),
                        "tokenizer");
  expect_one_line_error(run_cli("eval --model " + dir + " --data " + (tmp / "mc.jsonl")), "--metric choice");
}

TEST(CliTrainChoice, MultipleChoiceDataTrainsWithTheChosenTFewTerms) {
  TempDir tmp("cli_train_choice");
  const std::string dir = tmp / "model";
  gen_fixtures::make_model_dir(dir);
  write_file(tmp / "mc.jsonl",
             R"({"prompt": "the cat sat on the", "choices": [" mat", " dog"], "answer": 0}
{"prompt": "one two three", "choices": [" four", " then"], "answer": 0}
{"prompt": "caf\u00e9 au", "choices": [" the", " lait"], "answer": 1}
)");
  const std::string base = "train --model " + dir + " --data " + (tmp / "mc.jsonl") + " --out " + (tmp / "out") +
                           " --steps 2 --batch 2 --seq-len 32 --threads 2 --eval-data " + (tmp / "mc.jsonl");
  RunResult r = run_cli(base + " --choice-loss ln --metrics " + (tmp / "m.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("3 multiple-choice examples (T-Few losses ln)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(ln "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("(lm "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eval at step 2: accuracy"), std::string::npos) << r.output;
  EXPECT_NE(read_file(tmp / "m.jsonl").find("\"eval_accuracy\""), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(tmp / "out/adapter_model.safetensors"));
  expect_one_line_error(run_cli(base + " --choice-loss lm,nope"), "--choice-loss");
}

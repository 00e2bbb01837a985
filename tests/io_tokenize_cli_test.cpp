// `qpeft tokenize` end to end through the built CLI (QPEFT_CLI_PATH).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "core/file.h"
#include "io/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace {

struct CliRun {
  int code;
  std::string out;
};

CliRun run(const std::string& args) {
  std::string cmd = std::string(QPEFT_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

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
  CliRun r = run("tokenize --tokenizer " + dir_ + " --text 'ab ab'");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, plain + "\n");
  r = run("tokenize --tokenizer " + dir_ + "/tokenizer.json --text 'ab ab' --json");
  EXPECT_EQ(r.out, js + "\n");
  r = run("tokenize --tokenizer " + dir_ + " --text 'ab ab' --json --add-special");
  EXPECT_EQ(r.out, "[1," + js.substr(1) + "\n");
}

TEST_F(TokenizeCli, FileBytesExactlyAndDecode) {
  std::string text = "a\xC3\xA7 ab\n\n";
  qpeft::write_file_atomic(dir_ + "/in.txt", text);
  CliRun r = run("tokenize --tokenizer " + dir_ + " --file " + dir_ + "/in.txt --json");
  ASSERT_EQ(r.code, 0) << r.out;
  qpeft::write_file_atomic(dir_ + "/ids.json", r.out);
  CliRun d = run("tokenize --tokenizer " + dir_ + " --file " + dir_ + "/ids.json --decode");
  EXPECT_EQ(d.code, 0) << d.out;
  EXPECT_EQ(d.out, text);
  CliRun dj = run("tokenize --tokenizer " + dir_ + " --text '[1, 264]' --decode --json --skip-special");
  EXPECT_EQ(dj.out, "\"ab\"\n");
  CliRun ds = run("tokenize --tokenizer " + dir_ + " --text '260 261 259 262' --decode");
  EXPECT_EQ(ds.out, "ab c");
}

TEST_F(TokenizeCli, ErrorsAreOneLineWithExitCode1) {
  CliRun r = run("tokenize --tokenizer " + dir_ + "/missing.json --text x");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out.rfind("qpeft: error: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("missing.json: no such file"), std::string::npos) << r.out;
  r = run("tokenize --tokenizer " + dir_ + " --text '[1, \"x\"]' --decode");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("element 1 (\"x\") is not a token id"), std::string::npos) << r.out;
  r = run("tokenize --tokenizer " + dir_ + " --text '5 99999999' --decode");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("token id 99999999 (position 1) is outside the vocabulary"), std::string::npos) << r.out;
  r = run("tokenize --tokenizer " + dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("exactly one of --text and --file"), std::string::npos) << r.out;
  r = run("tokenize --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("separated by single spaces"), std::string::npos) << r.out;
}

}  // namespace

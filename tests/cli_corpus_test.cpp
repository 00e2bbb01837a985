// The State of the Union and Moby-Dick part of the corpus (scripts/corpus-stdlib.mjs, issue 15)
// and the main job's SpamAssassin splits (scripts/prepare_spam.mjs): deterministic (two runs
// give the same bytes, and the bytes docs/corpus.md records), held-out documents kept out of
// training, and a clear error for a missing source. Reads the npm tarballs
// scripts/fetch-reference-data.sh unpacks into tests/reference/datasets.
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <string>

#include "core/file.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

const std::string kRoot = std::string(QPEFT_TEST_DATA) + "/../..";
const std::string kDatasets = kRoot + "/tests/reference/datasets";

// docs/corpus.md, "The State of the Union and Moby-Dick".
const char* kTrainSha256 = "5bdd03e5fed5fca1b62ba69d0770677501ddc32808c9ca2be7bf1e9a9942c011";
const char* kValidationSha256 = "ceb4231555f9779aa8bce36206161a635cc01404396df6b327b5444b221b9a94";

std::string sha256_of(const std::string& path) {
  const RunResult r = run_shell("sha256sum '" + path + "'");
  EXPECT_EQ(r.status, 0) << r.output;
  return r.output.substr(0, 64);
}

RunResult extract(const std::string& out) {
  return run_shell("node '" + kRoot + "/scripts/corpus-stdlib.mjs' '" + kDatasets + "/datasets-sotu' '" + kDatasets +
                   "/datasets-moby-dick' '" + out + "' 2>&1");
}

// The heading lines: addresses ("State of the Union Address, YEAR, NAME") and chapters.
std::set<std::string> headings(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("State of the Union Address, ", 0) == 0 || line.rfind("CHAPTER ", 0) == 0) out.insert(line);
  return out;
}

class CliCorpus : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!file_exists(kDatasets + "/datasets-sotu/package.json") || !file_exists(kDatasets + "/datasets-moby-dick/package.json"))
      GTEST_SKIP() << "tests/reference/datasets is not fetched: run scripts/fetch-reference-data.sh (needs npm)";
    if (run_shell("node --version > /dev/null 2>&1").status != 0) GTEST_SKIP() << "node is not installed";
    tmp_ = std::make_unique<TempDir>("cli_corpus");
  }
  std::unique_ptr<TempDir> tmp_;
};

}  // namespace

TEST_F(CliCorpus, StateOfTheUnionAndMobyDickAreDeterministicWithDisjointSplits) {
  const std::string a = *tmp_ / "a", b = *tmp_ / "b";
  const RunResult ra = extract(a), rb = extract(b);
  ASSERT_EQ(ra.status, 0) << ra.output;
  ASSERT_EQ(rb.status, 0) << rb.output;
  EXPECT_NE(ra.output.find("233 addresses, 135 chapters: 354 documents for training, 17 held out"), std::string::npos)
      << ra.output;
  for (const char* f : {"/train.txt", "/validation.txt"}) EXPECT_EQ(read_file(a + f), read_file(b + f)) << f;
  EXPECT_EQ(sha256_of(a + "/train.txt"), kTrainSha256);
  EXPECT_EQ(sha256_of(a + "/validation.txt"), kValidationSha256);

  const std::string train = read_file(a + "/train.txt"), validation = read_file(a + "/validation.txt");
  EXPECT_EQ(train.rfind("State of the Union Address, 1790, George Washington\n\nFellow-Citizens of the Senate", 0), 0u);
  EXPECT_NE(train.find("CHAPTER 1. Loomings.\n\nCall me Ishmael."), std::string::npos);
  EXPECT_NE(validation.find("CHAPTER 20. All Astir."), std::string::npos);
  const std::set<std::string> in_train = headings(train), held_out = headings(validation);
  EXPECT_EQ(in_train.size(), 222u + 135u - 6u);
  EXPECT_EQ(held_out.size(), 11u + 6u);
  for (const std::string& h : held_out) EXPECT_EQ(in_train.count(h), 0u) << h;
  // Lines stay readable: an address is cut into paragraphs of whole sentences.
  std::istringstream in(train);
  size_t longest = 0;
  for (std::string line; std::getline(in, line);) longest = std::max(longest, line.size());
  EXPECT_LT(longest, 20000u);
}

TEST_F(CliCorpus, AMissingSourceIsAClearError) {
  const RunResult r = run_shell("node '" + kRoot + "/scripts/corpus-stdlib.mjs' '" + std::string(*tmp_ / "nowhere") + "' '" +
                                kDatasets + "/datasets-moby-dick' '" + std::string(*tmp_ / "out") + "' 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("nowhere"), std::string::npos) << r.output;
}

// docs/corpus.md, "The main job's labelled emails".
TEST_F(CliCorpus, SpamAssassinSplitsAreDeterministicBalancedAndDisjoint) {
  if (!file_exists(kDatasets + "/datasets-spam-assassin/package.json"))
    GTEST_SKIP() << "tests/reference/datasets has no datasets-spam-assassin: run scripts/fetch-reference-data.sh";
  const std::string a = *tmp_ / "spam_a", b = *tmp_ / "spam_b";
  const auto prepare = [&](const std::string& out) {
    return run_shell("node '" + kRoot + "/scripts/prepare_spam.mjs' '" + kDatasets + "/datasets-spam-assassin' '" + out +
                     "' 2>&1");
  };
  const RunResult ra = prepare(a), rb = prepare(b);
  ASSERT_EQ(ra.status, 0) << ra.output;
  ASSERT_EQ(rb.status, 0) << rb.output;
  EXPECT_NE(ra.output.find("4100 ham, 1742 spam -> train 2400, validation 400, test 600"), std::string::npos) << ra.output;
  const std::pair<const char*, const char*> expected[] = {
      {"/train_choice.jsonl", "13ca68082a61645e2925704f694989e6d43de19921c5f55c33f2f623ef8577f4"},
      {"/validation.jsonl", "47f507a761e408afd9addabb5ba52f2c9bf9725c616e8e1b6b7116e388c0c731"},
      {"/test.jsonl", "b787d7f717cf286958bad563dd6283b96a88fa210489cb47cbec488b85bf87ce"}};
  std::set<std::string> seen;
  // Every raw email has Received: headers; only a forwarded message's body may still quote some.
  int64_t with_received = 0;
  for (const auto& [file, sha] : expected) {
    EXPECT_EQ(read_file(a + file), read_file(b + file)) << file;
    EXPECT_EQ(sha256_of(a + file), sha) << file;
    std::istringstream in(read_file(a + file));
    int64_t rows = 0, spam = 0;
    for (std::string line; std::getline(in, line); ++rows) {
      const size_t answer = line.rfind("\"answer\":");
      ASSERT_NE(answer, std::string::npos) << line;
      spam += line[answer + 9] == '1';
      const std::string prompt = line.substr(0, line.find("\",\"choices\""));
      EXPECT_TRUE(seen.insert(prompt).second) << file << ": an email in two splits (or twice): " << prompt.substr(0, 120);
      with_received += line.find("Received: from") != std::string::npos;
    }
    EXPECT_EQ(2 * spam, rows) << file << ": not balanced";
  }
  EXPECT_EQ(seen.size(), 3400u);
  EXPECT_LE(with_received, 5) << "the headers, which give the label away, are not dropped";
  // The same emails as plain text (the language-modelling task of docs/results.md), line for line.
  const std::pair<const char*, const char*> text_files[] = {
      {"/train_text.jsonl", "8ff5e691a9c73ba3d35aa309b2c201e5dae6173d49a62c9ce595aeed239945ea"},
      {"/validation_text.jsonl", "8b43a4d0307bb1114fb367eb640617b58f3ee1fe28e5e8d830a91eaa59830885"},
      {"/test_text.jsonl", "42f469a4f5c1f03831e5d3f42d20d5cc56b845c1ac1ab3d7449496b4327dddef"}};
  for (const auto& [file, sha] : text_files) {
    EXPECT_EQ(read_file(a + file), read_file(b + file)) << file;
    EXPECT_EQ(sha256_of(a + file), sha) << file;
  }
  std::istringstream choice_rows(read_file(a + "/test.jsonl")), text_rows(read_file(a + "/test_text.jsonl"));
  std::string choice_line, text_line;
  ASSERT_TRUE(std::getline(choice_rows, choice_line) && std::getline(text_rows, text_line));
  const std::string text = text_line.substr(9, text_line.size() - 11);  // {"text":"..."}
  EXPECT_EQ(choice_line.rfind("{\"prompt\":\"" + text + "\\nSpam or ham:\"", 0), 0u) << choice_line << "\n" << text_line;
}

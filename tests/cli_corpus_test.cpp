// The State of the Union and Moby-Dick part of the corpus (scripts/corpus-stdlib.mjs, issue 15):
// deterministic (two runs give the same bytes, and the bytes docs/corpus.md records), held-out
// documents kept out of training, and a clear error for a missing source. Reads the npm
// tarballs scripts/fetch-reference-data.sh unpacks into tests/reference/datasets.
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

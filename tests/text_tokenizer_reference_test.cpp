// qpeft's tokenizer against the JavaScript reference implementations, id for id, on the
// corpus in tests/data/tokenizer_corpus. The references are produced at test time by
// tests/reference/gen_reference.mjs; run scripts/fetch-reference-data.sh first (CI does),
// otherwise these tests are skipped.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/file.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {

using json = nlohmann::json;

const std::string kRefDir = std::string(QPEFT_TEST_DATA) + "/../reference";
const std::string kOutDir = kRefDir + "/out";

long mtime(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 ? long(st.st_mtime) : 0;
}

// Generates (or reuses, when newer than its inputs) the reference file. Returns "" on
// success, else why the tests must be skipped.
std::string ensure_reference() {
  if (!qpeft::dir_exists(kRefDir + "/node_modules/@huggingface/tokenizers"))
    return "tests/reference/node_modules is not installed: run scripts/fetch-reference-data.sh (needs npm)";
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not on PATH";
  std::string ref = kOutDir + "/reference.json";
  long newest = std::max(mtime(kRefDir + "/gen_reference.mjs"), mtime(kRefDir + "/node_modules/.package-lock.json"));
  newest = std::max(newest, mtime(std::string(QPEFT_TEST_DATA) + "/tokenizer_corpus"));
  for (const char* f : {"features", "gemma", "mistral_instruct", "phi3", "smollm2_chatml", "tinyllama_zephyr"})
    newest = std::max(newest, mtime(std::string(QPEFT_TEST_DATA) + "/chat_templates/" + f + ".jinja"));
  for (const char* f : {"basic", "code", "digits", "doc_long", "edge", "emoji", "nfc", "scripts", "special", "whitespace"})
    newest = std::max(newest, mtime(std::string(QPEFT_TEST_DATA) + "/tokenizer_corpus/" + f + ".txt"));
  if (mtime(ref) > newest) return "";
  std::string cmd = "node '" + kRefDir + "/gen_reference.mjs' '" + kOutDir + "'";
  if (std::system(cmd.c_str()) != 0) return "FAILED: " + cmd;
  return "";
}

const json& reference() {
  static json j = json::parse(qpeft::read_text_file(kOutDir + "/reference.json"));
  return j;
}

std::string show(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 40; ++i) s += (i ? " " : "") + std::to_string(v[i]);
  return s + (v.size() > 40 ? " ..." : "");
}

class TokenizerReference : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why = ensure_reference();
    if (why.rfind("FAILED", 0) == 0) FAIL() << why;
    if (!why.empty()) GTEST_SKIP() << why;
  }
};

TEST_P(TokenizerReference, IdsMatchExactly) {
  const json& fam = reference()["families"][GetParam()];
  auto tok = qpeft::Tokenizer::load(fam["dir"].get<std::string>());
  int agree = 0, total = 0;
  for (const auto& c : fam["cases"]) {
    std::string text = c["text"];
    auto want = c["ids"].get<std::vector<int32_t>>();
    auto got = tok.encode(text, false);
    ++total;
    if (got == want) {
      ++agree;
    } else {
      ADD_FAILURE() << GetParam() << " " << c["file"].get<std::string>() << "#" << c["index"].get<int>() << " "
                    << json(text.substr(0, 80)).dump() << "\n  want " << show(want) << "\n  got  " << show(got);
    }
    auto want_sp = c["ids_special"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, true), want_sp) << GetParam() << " add_special " << c["file"].get<std::string>() << "#" << c["index"].get<int>();
  }
  std::printf("[ reference ] %s: %d/%d corpus strings agree id-exactly with @huggingface/tokenizers\n", GetParam().c_str(), agree, total);
}

TEST_P(TokenizerReference, DecodeMatches) {
  const json& fam = reference()["families"][GetParam()];
  auto tok = qpeft::Tokenizer::load(fam["dir"].get<std::string>());
  for (const auto& c : fam["cases"]) {
    auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << GetParam() << " " << c["file"].get<std::string>() << "#" << c["index"].get<int>();
    auto ids_sp = c["ids_special"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids_sp, true), c["decoded_skip"].get<std::string>()) << GetParam() << " skip_special " << c["file"].get<std::string>() << "#" << c["index"].get<int>();
  }
}

TEST_P(TokenizerReference, CrossCheckImplementationsAgree) {
  // The second JS implementation (gpt-3-encoder / transformers.js) must agree with the first:
  // otherwise the reference itself is in doubt.
  EXPECT_EQ(reference()["families"][GetParam()]["alt_disagreements"].get<int>(), 0);
}

INSTANTIATE_TEST_SUITE_P(Families, TokenizerReference, ::testing::Values("gpt2", "llama3", "qwen3", "mistral"));

}  // namespace

namespace {

// Chat templates rendered byte for byte like @huggingface/jinja (errors where it raises).
TEST(ChatTemplateReference, RendersExactly) {
  std::string why = ensure_reference();
  if (why.rfind("FAILED", 0) == 0) FAIL() << why;
  if (!why.empty()) GTEST_SKIP() << why;
  int agree = 0, total = 0;
  for (const auto& t : reference()["chat"]) {
    std::string name = t["name"];
    std::string source = t["file"].is_string() ? qpeft::read_text_file(t["file"].get<std::string>())
                                               : qpeft::Tokenizer::load(t["dir"].get<std::string>()).chat_template();
    auto tmpl = qpeft::ChatTemplate::parse(source, name);
    for (const auto& r : t["renders"]) {
      ++total;
      std::string got, error;
      try {
        got = tmpl.render_json(r["context"].dump());
      } catch (const qpeft::Error& e) {
        error = e.what();
      }
      if (r["error"].is_string()) {
        EXPECT_NE(error.find(r["error"].get<std::string>()), std::string::npos) << name << " should raise: " << r["error"] << "\ngot: " << error;
        agree += !error.empty();
      } else {
        EXPECT_EQ(got, r["rendered"].get<std::string>()) << name << " context " << r["context"].dump() << "\n" << error;
        agree += got == r["rendered"].get<std::string>();
      }
    }
  }
  std::printf("[ reference ] chat templates: %d/%d renderings agree byte for byte with @huggingface/jinja\n", agree, total);
}

}  // namespace

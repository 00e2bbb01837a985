// Tokenizer unit tests on small hand-built tokenizers: byte fallback, added-token flags,
// invalid UTF-8, megabyte inputs, NFC, and the error messages for malformed files.
// (Exactness on real vocabularies: io_tokenizer_reference_test.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "text/tokenizer.h"
#include "text/tokenizer_unicode.h"
#include "tokenizer_fixtures.h"
#include "test_util.h"

using qpeft::Tokenizer;
using json = nlohmann::json;

namespace {

using qpeft::testing::error_of;

}  // namespace

TEST(TokenizerSpm, MergesByRankAndMetaspace) {
  Tokenizer t = Tokenizer::from_json(test_fixtures::tiny_spm_json().dump(), test_fixtures::tiny_spm_config());
  // "ab ab" -> "▁ab▁ab": merges ▁+a, then ▁a+b.
  auto ids = t.encode("ab ab");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(t.id_to_token(ids[0]), "\xE2\x96\x81" "ab");
  EXPECT_EQ(t.decode(ids), "ab ab");
  EXPECT_EQ(t.encode("ab", true).front(), t.bos_id());
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
}

TEST(TokenizerSpm, ByteFallbackRoundTrips) {
  Tokenizer t = Tokenizer::from_json(test_fixtures::tiny_spm_json().dump(), test_fixtures::tiny_spm_config());
  auto ids = t.encode("a\xC3\xA7");  // "aç": ç is not in the vocabulary
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(t.id_to_token(ids[1]), "<0xC3>");
  EXPECT_EQ(t.id_to_token(ids[2]), "<0xA7>");
  EXPECT_EQ(t.decode(ids), "a\xC3\xA7");
  // A lone byte token decodes to U+FFFD, as HF's ByteFallback decoder does.
  EXPECT_EQ(t.decode({ids[1]}), "\xEF\xBF\xBD");
}

TEST(TokenizerAddedTokens, SpecialTokensAreNeverSplitAndHonorStripFlags) {
  json j = test_fixtures::tiny_bytelevel_json();
  j["added_tokens"].push_back({{"id", 1000}, {"content", "<mask>"}, {"special", true}, {"lstrip", true}, {"rstrip", false}, {"normalized", false}, {"single_word", false}});
  j["added_tokens"].push_back({{"id", 1001}, {"content", "<sep>"}, {"special", true}, {"lstrip", false}, {"rstrip", true}, {"normalized", false}, {"single_word", false}});
  j["added_tokens"].push_back({{"id", 1002}, {"content", "cat"}, {"special", false}, {"single_word", true}, {"normalized", true}});
  Tokenizer t = Tokenizer::from_json(j.dump());
  auto a = t.encode("a  <mask>");  // lstrip eats the two spaces
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[1], 1000);
  EXPECT_EQ(t.decode(a), "a<mask>");
  auto b = t.encode("<sep>  a");  // rstrip eats them on the right
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0], 1001);
  // single_word: "cat" alone is the added token, inside "cats" it is not.
  auto c = t.encode("cat");
  EXPECT_EQ(c, std::vector<int32_t>{1002});
  auto d = t.encode("cats");
  EXPECT_TRUE(std::find(d.begin(), d.end(), 1002) == d.end());
  EXPECT_EQ(t.decode(t.encode("x<mask>y<sep>z"), true), "xyz");
  EXPECT_TRUE(t.is_special(1000));
  EXPECT_FALSE(t.is_special(1002));
}

TEST(TokenizerByteLevel, InvalidUtf8IsTokenizedByteByByte) {
  Tokenizer t = Tokenizer::from_json(test_fixtures::tiny_bytelevel_json().dump());
  std::string bad = "ok \xFF\xFE\xC3 \xE2\x82 end\x80";
  std::vector<int32_t> ids;
  ASSERT_NO_THROW(ids = t.encode(bad));
  EXPECT_EQ(t.decode(ids), qpeft::unicode::to_valid_utf8(bad));
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  ids = t.encode(all);
  EXPECT_EQ(ids.size(), 256u);  // tiny vocab has no merges across these bytes
}

TEST(TokenizerByteLevel, MegabyteInputsAreFast) {
  Tokenizer t = Tokenizer::from_json(test_fixtures::tiny_bytelevel_json().dump());
  for (std::string s : {std::string(1 << 20, 'a'), std::string(1 << 20, ' '), std::string(1 << 20, '1')}) {
    auto t0 = std::chrono::steady_clock::now();
    auto ids = t.encode(s);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(sec, 5.0) << "1 MiB of '" << s[0] << "' took " << sec << " s";
    EXPECT_EQ(t.decode(ids), s);
  }
}

TEST(TokenizerBatch, EncodeBatchEqualsEncodeOfEachTextAtAnyThreadCount) {
  Tokenizer t = Tokenizer::from_json(test_fixtures::tiny_bytelevel_json().dump());
  std::vector<std::string> texts = {"", "ab ab", std::string(5000, 'a'), "ok \xFF\xFE end", "x y z", " a  b ", "1234"};
  for (int i = 0; i < 40; ++i) texts.push_back(std::string(size_t(i * 37 % 101), char('a' + i % 7)) + " " + std::to_string(i));
  std::vector<std::string_view> views(texts.begin(), texts.end());
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts) want.push_back(t.encode(s, true));
  for (int threads : {1, 2, 3}) {
    qpeft::set_num_threads(threads);
    EXPECT_EQ(t.encode_batch(views, true), want) << threads << " threads";
  }
  qpeft::set_num_threads(2);  // what test_main sets
  EXPECT_TRUE(t.encode_batch({}).empty());
}

TEST(Unicode, NfcComposesAndReorders) {
  using qpeft::unicode::nfc;
  EXPECT_EQ(nfc("cafe\xCC\x81"), "caf\xC3\xA9");                  // e + acute -> é
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul L V T -> 각
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                      // Angstrom sign -> Å
  // a + dot below (ccc 220) + circumflex (230), in either order -> ậ
  EXPECT_EQ(nfc("a\xCC\xA3\xCC\x82"), "\xE1\xBA\xAD");
  EXPECT_EQ(nfc("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");
  EXPECT_EQ(nfc("\xE0\xA5\x98"), "\xE0\xA4\x95\xE0\xA4\xBC");      // excluded composite stays decomposed
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc("x\xFFy"), "x\xFFy");  // invalid bytes pass through
}

TEST(Unicode, ClassesAndLossyUtf8) {
  using namespace qpeft::unicode;
  EXPECT_EQ(char_class('a'), kLetter);
  EXPECT_EQ(char_class(0x4E2D), kLetter);  // 中
  EXPECT_EQ(char_class(0x0663), kNumber);  // Arabic-Indic 3
  EXPECT_EQ(char_class(0x00B2), kNumber);  // superscript 2 (No)
  EXPECT_EQ(char_class(0x3000), kSpace);
  EXPECT_EQ(char_class(0x0085), kSpace);   // NEL is White_Space (as in Rust's \s)
  EXPECT_EQ(char_class(0xFEFF), kOther);   // BOM is not
  EXPECT_EQ(to_valid_utf8("a\xE2\x82" "b"), "a\xEF\xBF\xBD" "b");  // one U+FFFD per maximal subpart
  EXPECT_EQ(to_valid_utf8("\xFF\xFF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST(TokenizerErrors, MalformedFilesSayWhatAndWhere) {
  EXPECT_NE(error_of([] { Tokenizer::from_json("{not json", "", "x/tokenizer.json"); }).find("x/tokenizer.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([] { Tokenizer::from_json("{}"); }).find("no \"model\" key"), std::string::npos);
  json j = test_fixtures::tiny_bytelevel_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(error_of([&] { Tokenizer::from_json(j.dump()); }).find("normalizer: normalizer type \"Lowercase\" is not supported"), std::string::npos);
  j = test_fixtures::tiny_bytelevel_json();
  j["model"]["merges"].push_back("zz qq");
  EXPECT_NE(error_of([&] { Tokenizer::from_json(j.dump()); }).find("model.merges["), std::string::npos);
  j = test_fixtures::tiny_bytelevel_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_NE(error_of([&] { Tokenizer::from_json(j.dump()); }).find("unsupported Split regex"), std::string::npos);
  j = test_fixtures::tiny_bytelevel_json();
  j["model"]["vocab"]["bad"] = "x";
  EXPECT_NE(error_of([&] { Tokenizer::from_json(j.dump()); }).find("model.vocab[\"bad\"]"), std::string::npos);
  EXPECT_NE(error_of([] { Tokenizer::load("/nonexistent/dir"); }).find("no such file"), std::string::npos);
  Tokenizer t = Tokenizer::from_json(test_fixtures::tiny_bytelevel_json().dump());
  EXPECT_NE(error_of([&] { t.decode({0, 999999}); }).find("token id 999999 (position 1) is outside"), std::string::npos);
}

TEST(TokenizerLoad, FromModelDirectoryWithConfig) {
  std::string dir = testing::TempDir() + "/qpeft_tok_dir_" + std::to_string(getpid());
  qpeft::make_dirs(dir);
  qpeft::write_file_atomic(dir + "/tokenizer.json", test_fixtures::tiny_spm_json().dump());
  qpeft::write_file_atomic(dir + "/tokenizer_config.json", test_fixtures::tiny_spm_config());
  Tokenizer t = Tokenizer::load(dir);
  EXPECT_EQ(t.bos_token(), "<s>");
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.token_to_id("<unk>"), 0);
  EXPECT_EQ(t.token_to_id("nope"), -1);
  EXPECT_EQ(t.chat_template(), "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}");
  qpeft::remove_all(dir);
}

// model.vocab and model.merges are read by a SAX handler straight into the model: the same
// answers and errors as from the DOM, for every shape they can take.
TEST(TokenizerLoad, VocabAndMergesShapes) {
  json j = test_fixtures::tiny_bytelevel_json();
  Tokenizer want = Tokenizer::from_json(j.dump());
  const std::string text = "aaaa 11 aa  ";
  json pairs = json::array();
  for (const auto& m : j["model"]["merges"]) {
    std::string s = m;
    pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  json k = j;
  k["model"]["merges"] = pairs;  // [["a", "b"], ...] as newer tokenizer.json files write them
  EXPECT_EQ(Tokenizer::from_json(k.dump()).encode(text), want.encode(text));
  k = j;  // key order: merges before vocab, "model" before the pre-tokenizer
  std::string dumped = "{\"model\": {\"merges\": " + j["model"]["merges"].dump() + ", \"vocab\": " + j["model"]["vocab"].dump() +
                       ", \"type\": \"BPE\"}, \"pre_tokenizer\": " + j["pre_tokenizer"].dump() + ", \"decoder\": " + j["decoder"].dump() + "}";
  EXPECT_EQ(Tokenizer::from_json(dumped).encode(text), want.encode(text));
  // A "vocab" key elsewhere is ordinary JSON.
  k = j;
  k["decoder"]["vocab"] = {{"x", 1}};
  k["extra"] = {{"model", {{"vocab", json::array({1, 2})}}}};
  EXPECT_EQ(Tokenizer::from_json(k.dump()).encode(text), want.encode(text));

  auto err = [](const json& bad) { return error_of([&] { Tokenizer::from_json(bad.dump()); }); };
  k = j;
  k["model"]["vocab"] = json::array({1, 2});
  EXPECT_NE(err(k).find("model.vocab: expected an object"), std::string::npos) << err(k);
  k = j;
  k["model"].erase("vocab");
  EXPECT_NE(err(k).find("missing key \"vocab\""), std::string::npos) << err(k);
  for (json v : {json(-1), json(1.5), json(nullptr), json::object({{"id", 3}}), json::array({3}), json(int64_t(1) << 40)}) {
    k = j;
    k["model"]["vocab"]["weird"] = v;
    EXPECT_NE(err(k).find("model.vocab[\"weird\"]: expected a token id in [0, 4194304)"), std::string::npos) << v.dump() << ": " << err(k);
  }
  k = j;
  k["model"]["merges"] = "a a";
  EXPECT_NE(err(k).find("model.merges: expected an array"), std::string::npos) << err(k);
  for (json m : {json("a"), json("a a a"), json(7), json::array({"a"}), json::array({"a", "a", "a"}), json::array({"a", 1}),
                 json::array({json::array({"a"}), "a"}), json::object({{"a", "a"}})}) {
    k = j;
    k["model"]["merges"].push_back(m);
    EXPECT_NE(err(k).find("model.merges[4]: expected \"left right\""), std::string::npos) << m.dump() << ": " << err(k);
  }
  k = j;
  k["model"]["merges"].push_back(json::array({"a", "zz"}));
  EXPECT_NE(err(k).find("model.merges[4]: merge \"a\" + \"zz\": zz is not in the vocabulary"), std::string::npos) << err(k);
  EXPECT_NE(error_of([] { Tokenizer::from_json("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a a\""); }).find("not valid JSON"), std::string::npos);
}

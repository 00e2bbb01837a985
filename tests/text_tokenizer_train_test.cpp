// Byte-level BPE training (text/tokenizer_train.h) and `qpeft train-tokenizer`: merge order on
// hand-made corpora (including HF tokenizers' own trainer test), determinism, vocabulary
// size, round trips, and id-exact agreement with @huggingface/tokenizers on what it wrote.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "text/tokenizer.h"
#include "text/tokenizer_train.h"
#include "text/tokenizer_unicode.h"
#include "test_util.h"

using qpeft::BpeTrainer;
using qpeft::BpeTrainOptions;
using qpeft::Tokenizer;
using qpeft::TrainedBpe;
using json = nlohmann::json;

namespace {

const std::string kCorpusDir = std::string(QPEFT_TEST_DATA) + "/tokenizer_corpus";
const char* kCorpusFiles[] = {"basic", "code", "digits", "doc_long", "edge", "emoji", "nfc", "scripts", "special", "whitespace"};

// The committed tokenizer corpus, each file as it is.
std::vector<std::string> corpus_files() {
  std::vector<std::string> out;
  for (const char* f : kCorpusFiles) out.push_back(qpeft::read_text_file(kCorpusDir + "/" + f + ".txt"));
  return out;
}

// The corpus strings (files cut at "\n@@@@\n" lines, as gen_reference.mjs does).
std::vector<std::string> corpus_strings() {
  std::vector<std::string> out;
  for (const std::string& text : corpus_files()) {
    for (size_t i = 0;;) {
      size_t j = text.find("\n@@@@\n", i);
      out.push_back(text.substr(i, j == std::string::npos ? std::string::npos : j - i));
      if (j == std::string::npos) break;
      i = j + 6;
    }
  }
  return out;
}

TrainedBpe train_on(const std::vector<std::string>& texts, BpeTrainOptions o) {
  BpeTrainer t(std::move(o));
  for (const auto& s : texts) t.feed(s);
  return t.train();
}

TrainedBpe train_corpus(int32_t vocab, qpeft::BpeSplit split = qpeft::BpeSplit::kLlama3) {
  BpeTrainOptions o;
  o.vocab_size = vocab;
  o.special_tokens = {"<s>", "</s>", "<pad>"};
  o.split = split;
  return train_on(corpus_files(), o);
}

std::string repeat_lines(const std::vector<std::pair<std::string, int>>& words) {
  std::string s;
  for (const auto& [w, n] : words)
    for (int i = 0; i < n; ++i) s += w + "\n";
  return s;
}

std::vector<std::string> merge_strings(const TrainedBpe& b) {
  std::vector<std::string> out;
  for (const auto& [pair, merged] : b.merges) {
    EXPECT_EQ(b.tokens[size_t(merged)], b.tokens[size_t(pair.first)] + b.tokens[size_t(pair.second)]);
    out.push_back(b.tokens[size_t(pair.first)] + " " + b.tokens[size_t(pair.second)]);
  }
  return out;
}

using qpeft::testing::error_of;

// Random valid UTF-8: ASCII, controls, Latin-1, CJK, emoji and other planes.
std::string random_text(std::mt19937& rng, size_t n_chars) {
  static const std::pair<uint32_t, uint32_t> ranges[] = {
      {0x20, 0x7E}, {0x00, 0x1F}, {0x7F, 0xFF}, {0x100, 0x24F}, {0x370, 0x3FF}, {0x400, 0x4FF}, {0x600, 0x6FF},
      {0x900, 0x97F}, {0x3040, 0x30FF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1F6FF}, {0xE000, 0xF8FF}, {0x10000, 0x10FFFF}};
  std::string s;
  for (size_t i = 0; i < n_chars; ++i) {
    auto [lo, hi] = ranges[rng() % std::size(ranges)];
    uint32_t cp = lo + rng() % (hi - lo + 1);
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    if (rng() % 4 == 0) cp = " \n\t'"[rng() % 4];
    qpeft::unicode::append_utf8(s, cp);
  }
  return s;
}

}  // namespace

// HF tokenizers' own BpeTrainer test (trainer.rs test_train): min_frequency 2 gives exactly
// the merges "r e", "a re", "i s" ("a re" before "i s": equal counts, smaller ids first).
TEST(BpeTrain, MatchesHfTrainerUnitTest) {
  std::string text = repeat_lines({{"roses", 1}, {"are", 2}, {"red", 1}, {"voilets", 1}, {"blue", 1}, {"BERT", 1},
                                   {"is", 2}, {"big", 1}, {"and", 1}, {"so", 1}, {"GPT-2", 1}});
  BpeTrainOptions o;
  o.min_frequency = 2;
  o.vocab_size = 30000;
  TrainedBpe b = train_on({text}, o);
  EXPECT_EQ(merge_strings(b), (std::vector<std::string>{"r e", "a re", "i s"}));
  EXPECT_EQ(b.vocab_size(), 256 + 3);
}

// The classic example (HF course): u+g (20), then u+n (16), then h+ug (15).
TEST(BpeTrain, MostFrequentPairFirst) {
  std::string text = repeat_lines({{"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}});
  BpeTrainOptions o;
  o.vocab_size = 256 + 3;
  o.special_tokens = {"<s>"};
  TrainedBpe b = train_on({text}, o);
  EXPECT_EQ(merge_strings(b), (std::vector<std::string>{"u g", "u n"}));  // 1 + 256 + 2 = 259
  o.vocab_size = 1000;
  b = train_on({text}, o);
  auto m = merge_strings(b);
  ASSERT_GE(m.size(), 3u);
  EXPECT_EQ(m[2], "h ug");
  // Ids: specials, then the bytes by code point of their alphabet character, then merges.
  EXPECT_EQ(b.tokens[0], "<s>");
  EXPECT_EQ(b.tokens[1], "!");  // '!' (0x21) is the smallest printable byte
  EXPECT_EQ(b.tokens[257], "ug");
  EXPECT_EQ(b.merges[0].second, 257);
}

TEST(BpeTrain, TiesGoToSmallerIdsAndOverlapsMergeLeftToRight) {
  BpeTrainOptions o;
  o.vocab_size = 257;
  EXPECT_EQ(merge_strings(train_on({"cd\nab\n"}, o)), std::vector<std::string>{"a b"});
  // "aaaa": a+a merges left to right into aa aa (the pair count of a a drops by one for
  // the overlap), then aa+aa.
  o.vocab_size = 1000;
  EXPECT_EQ(merge_strings(train_on({"aaaa"}, o)), (std::vector<std::string>{"a a", "aa aa"}));
}

TEST(BpeTrain, VocabSizeAndMinFrequency) {
  for (int32_t v : {259, 300, 777}) {
    TrainedBpe b = train_corpus(v);
    EXPECT_EQ(b.vocab_size(), v);
    EXPECT_EQ(b.merges.size(), size_t(v - 259));
  }
  BpeTrainOptions o;
  o.vocab_size = 5000;
  o.min_frequency = 1000000;
  EXPECT_EQ(train_on(corpus_files(), o).vocab_size(), 256);
  o.min_frequency = 20;
  TrainedBpe b = train_on(corpus_files(), o);
  EXPECT_GT(b.vocab_size(), 256);
  EXPECT_LT(b.vocab_size(), 5000);
  // Too small for the specials and bytes; a clear error.
  o.vocab_size = 257;
  o.special_tokens = {"<s>", "</s>"};
  EXPECT_NE(error_of([&] { train_on({"x"}, o); }).find("at least 258"), std::string::npos);
  o.vocab_size = 1000;
  o.special_tokens = {"<s>", "<s>"};
  EXPECT_NE(error_of([&] { train_on({"x"}, o); }).find("given twice"), std::string::npos);
}

TEST(BpeTrain, DeterministicBytes) {
  std::string a = train_corpus(1000).tokenizer_json();
  std::string b = train_corpus(1000).tokenizer_json();
  EXPECT_EQ(a, b);
  // Feeding order of files does not change the counts, so not the result either.
  std::vector<std::string> files = corpus_files();
  std::reverse(files.begin(), files.end());
  BpeTrainOptions o;
  o.vocab_size = 1000;
  o.special_tokens = {"<s>", "</s>", "<pad>"};
  EXPECT_EQ(train_on(files, o).tokenizer_json(), a);
}

TEST(BpeTrain, RoundTripsAnyTextThroughOurLoader) {
  for (auto split : {qpeft::BpeSplit::kLlama3, qpeft::BpeSplit::kGpt2}) {
    TrainedBpe b = train_corpus(1200, split);
    qpeft::TokenizerConfigOptions cfg{"<s>", "</s>", "", true};
    Tokenizer tok = Tokenizer::from_json(b.tokenizer_json(cfg), b.config_json(cfg), "trained");
    EXPECT_EQ(tok.vocab_size(), 1200);
    EXPECT_EQ(tok.bos_id(), 0);
    EXPECT_EQ(tok.eos_id(), 1);
    std::vector<std::string> texts = corpus_strings();
    std::mt19937 rng(7);
    for (int i = 0; i < 200; ++i) texts.push_back(random_text(rng, 1 + rng() % 80));
    texts.push_back(std::string("\x01\x02\x7f never seen: \xE2\x82\xAC \xF0\x9F\xA6\x80 \xE4\xB8\xAD"));
    for (const auto& t : texts) {
      auto ids = tok.encode(t);
      bool has_special = t.find("<s>") != std::string::npos || t.find("</s>") != std::string::npos || t.find("<pad>") != std::string::npos;
      for (int32_t id : ids) ASSERT_TRUE(id >= (has_special ? 0 : 3) && id < 1200) << id;
      EXPECT_EQ(tok.decode(ids), t) << json(t).dump();
      auto with = tok.encode(t, true);
      ASSERT_FALSE(with.empty());
      EXPECT_EQ(with[0], 0);
    }
    // A frequent word of the training text is one token; special tokens are never split.
    EXPECT_EQ(tok.encode(" the").size(), 1u);
    EXPECT_EQ(tok.encode("a</s>b"), (std::vector<int32_t>{tok.encode("a")[0], 1, tok.encode("b")[0]}));
  }
}

TEST(BpeTrain, ConfigJsonAndErrors) {
  TrainedBpe b = train_corpus(400);
  qpeft::TokenizerConfigOptions cfg{"<s>", "</s>", "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}", true};
  json c = json::parse(b.config_json(cfg));
  EXPECT_EQ(c["bos_token"], "<s>");
  EXPECT_EQ(c["eos_token"], "</s>");
  EXPECT_EQ(c["added_tokens_decoder"]["2"]["content"], "<pad>");
  Tokenizer tok = Tokenizer::from_json(b.tokenizer_json(cfg), b.config_json(cfg));
  EXPECT_EQ(tok.chat_template(), cfg.chat_template);
  cfg.bos_token = "<bos>";
  EXPECT_NE(error_of([&] { b.tokenizer_json(cfg); }).find("\"<bos>\" is not one of the special tokens (<s>, </s>, <pad>)"), std::string::npos);
  cfg.bos_token = "<s>";
  cfg.chat_template = "{% for m in messages %}";
  EXPECT_NE(error_of([&] { b.config_json(cfg); }).find("--chat-template"), std::string::npos);
  EXPECT_NE(error_of([] { qpeft::parse_bpe_split("bert"); }).find("choose llama3"), std::string::npos);
  // Without a bos the post-processor adds nothing.
  Tokenizer plain = Tokenizer::from_json(b.tokenizer_json());
  EXPECT_EQ(plain.encode("hello", true), plain.encode("hello", false));
}

// ---------------------------------------------------------------- CLI

TEST(TrainTokenizerCli, WritesLoadableFilesDeterministically) {
  qpeft::testing::TempDir d("train_tok_cli");
  std::string files;
  for (const char* f : kCorpusFiles) files += " '" + kCorpusDir + "/" + f + ".txt'";
  qpeft::testing::write_file(d / "chat.jinja", "{% for m in messages %}{{ bos_token }}{{ m['content'] }}{% endfor %}");
  qpeft::make_dirs(d / "a");
  qpeft::make_dirs(d / "b");
  for (const char* sub : {"a", "b"}) {
    auto r = qpeft::testing::run_cli("train-tokenizer --files" + files + " --vocab-size 600 --special-tokens '<s>,</s>' --out " +
                                     d / sub + "/tokenizer.json --config-out " + d / sub + "/tokenizer_config.json --chat-template " +
                                     d / "chat.jinja");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("vocabulary 600 (2 special, 256 bytes, 342 merges)"), std::string::npos) << r.output;
  }
  EXPECT_EQ(qpeft::testing::read_file(d / "a/tokenizer.json"), qpeft::testing::read_file(d / "b/tokenizer.json"));
  Tokenizer tok = Tokenizer::load(d / "a");
  EXPECT_EQ(tok.vocab_size(), 600);
  EXPECT_EQ(tok.bos_token(), "<s>");
  EXPECT_EQ(tok.encode("Hi", true)[0], 0);
  EXPECT_FALSE(tok.chat_template().empty());
  // The library gives the same file.
  BpeTrainOptions o;
  o.vocab_size = 600;
  o.special_tokens = {"<s>", "</s>"};
  qpeft::TokenizerConfigOptions cfg{"<s>", "</s>", "", true};
  EXPECT_EQ(train_on(corpus_files(), o).tokenizer_json(cfg), qpeft::testing::read_file(d / "a/tokenizer.json"));

  auto bad = qpeft::testing::run_cli("train-tokenizer --files " + kCorpusDir + "/basic.txt --out " + d / "x.json --pre-tokenizer bert");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("unknown pre-tokenizer \"bert\""), std::string::npos) << bad.output;
  bad = qpeft::testing::run_cli("train-tokenizer --files " + kCorpusDir + "/basic.txt --out " + d / "x.json --vocab-size 100");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("too small"), std::string::npos) << bad.output;
  EXPECT_FALSE(qpeft::file_exists(d / "x.json"));
}

// ---------------------------------------------------------------- reference

namespace {

const std::string kRefDir = std::string(QPEFT_TEST_DATA) + "/../reference";

// Runs encode_with.mjs on a tokenizer directory; "" on success, else why to skip.
std::string reference_encode(const std::string& dir, const std::vector<std::string>& texts, json* out) {
  if (!qpeft::dir_exists(kRefDir + "/node_modules/@huggingface/tokenizers"))
    return "tests/reference/node_modules is not installed: run scripts/fetch-reference-data.sh (needs npm)";
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not on PATH";
  qpeft::write_file_atomic(dir + "/texts.json", json(texts).dump());
  std::string cmd = "node '" + kRefDir + "/encode_with.mjs' '" + dir + "' '" + dir + "/texts.json' '" + dir + "/ref.json'";
  if (std::system(cmd.c_str()) != 0) return "FAILED: " + cmd;
  *out = json::parse(qpeft::read_text_file(dir + "/ref.json"));
  return "";
}

}  // namespace

class TrainedReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainedReference, IdsMatchHuggingFaceTokenizers) {
  qpeft::testing::TempDir d("train_tok_ref_" + GetParam());
  TrainedBpe b = train_corpus(2000, qpeft::parse_bpe_split(GetParam()));
  qpeft::TokenizerConfigOptions cfg{"<s>", "</s>", "", true};
  qpeft::write_file_atomic(d / "tokenizer.json", b.tokenizer_json(cfg));
  qpeft::write_file_atomic(d / "tokenizer_config.json", b.config_json(cfg));
  std::vector<std::string> texts = corpus_strings();
  for (const auto& f : corpus_files()) texts.push_back(f);
  std::mt19937 rng(11);
  for (int i = 0; i < 100; ++i) texts.push_back(random_text(rng, 1 + rng() % 60));
  json ref;
  std::string why = reference_encode(d.path(), texts, &ref);
  if (why.rfind("FAILED", 0) == 0) FAIL() << why;
  if (!why.empty()) GTEST_SKIP() << why;
  Tokenizer tok = Tokenizer::load(d.path());
  int agree = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const json& c = ref["cases"][i];
    auto ids = tok.encode(texts[i]);
    agree += ids == c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << GetParam() << " text " << i << " " << json(texts[i].substr(0, 60)).dump();
    EXPECT_EQ(tok.encode(texts[i], true), c["ids_special"].get<std::vector<int32_t>>()) << GetParam() << " text " << i;
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << GetParam() << " text " << i;
  }
  std::printf("[ reference ] trained %s tokenizer (vocab 2000): %d/%zu strings agree id-exactly with @huggingface/tokenizers\n",
              GetParam().c_str(), agree, texts.size());
}

// Token for token against HF tokenizers' own (Rust) BpeTrainer, run through its Node
// binding with its defaults (vocab 30000, alphabet = characters seen): the same vocabulary
// (ids included) and the same merges in the same order. On this corpus training runs until
// no pair is left, through thousands of count ties.
TEST_P(TrainedReference, SameVocabAndMergesAsHfBpeTrainer) {
  if (!qpeft::dir_exists(kRefDir + "/node_modules/tokenizers"))
    GTEST_SKIP() << "tests/reference/node_modules/tokenizers is not installed: run scripts/fetch-reference-data.sh (needs npm)";
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not on PATH";
  qpeft::testing::TempDir d("train_tok_hf_" + GetParam());
  std::string files;
  BpeTrainOptions o;
  o.vocab_size = 30000;
  o.all_bytes = false;
  o.split = qpeft::parse_bpe_split(GetParam());
  BpeTrainer ours(o);
  for (const char* f : kCorpusFiles) {
    files += " '" + kCorpusDir + "/" + f + ".txt'";
    ours.feed_file(kCorpusDir + "/" + f + ".txt");
  }
  std::string cmd = "node '" + kRefDir + "/train_hf.cjs' " + GetParam() + " '" + d / "hf.json'" + files + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  json hf = json::parse(qpeft::read_text_file(d / "hf.json"))["model"];
  TrainedBpe b = ours.train();
  json mine = json::parse(b.tokenizer_json())["model"];
  auto merges = [](const json& m) {
    std::vector<std::string> out;
    for (const auto& e : m["merges"]) out.push_back(e.is_string() ? e.get<std::string>() : e[0].get<std::string>() + " " + e[1].get<std::string>());
    return out;
  };
  EXPECT_EQ(mine["vocab"].size(), hf["vocab"].size());
  EXPECT_TRUE(mine["vocab"] == hf["vocab"]) << "the vocabularies (token -> id) differ";
  auto mm = merges(mine), hm = merges(hf);
  ASSERT_EQ(mm.size(), hm.size());
  for (size_t i = 0; i < mm.size(); ++i) ASSERT_EQ(mm[i], hm[i]) << GetParam() << ": merge " << i << " differs";
  std::printf("[ reference ] %s: %zu merges, vocab %zu, identical to HF tokenizers' BpeTrainer\n", GetParam().c_str(), mm.size(),
              hf["vocab"].size());
}

INSTANTIATE_TEST_SUITE_P(Splits, TrainedReference, ::testing::Values("llama3", "gpt2"));

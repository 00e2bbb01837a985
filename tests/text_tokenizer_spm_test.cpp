// tokenizer.model (SentencePiece) checkpoints through libsentencepiece, against the
// independent `spm_encode` CLI on every line of the tokenizer corpus. The model is
// tests/data/spm/tiny_bpe.model (see the README there for how it was made).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "text/sentencepiece_vocab.h"
#include "text/tokenizer.h"
#include "test_util.h"

namespace {

using qpeft::Tokenizer;

const std::string kModel = std::string(QPEFT_TEST_DATA) + "/spm/tiny_bpe.model";
const char* kCorpus[] = {"basic", "code", "digits", "doc_long", "edge", "emoji", "nfc", "scripts", "special", "whitespace"};

using qpeft::testing::error_of;

std::string temp_dir(const std::string& name) {
  std::string dir = testing::TempDir() + "/qpeft_spm_" + name + "_" + std::to_string(getpid());
  qpeft::remove_all(dir);
  qpeft::make_dirs(dir);
  return dir;
}

// Corpus lines (without their '\n'), all files.
std::vector<std::string> corpus_lines() {
  std::vector<std::string> lines;
  for (const char* f : kCorpus) {
    std::istringstream in(qpeft::read_text_file(std::string(QPEFT_TEST_DATA) + "/tokenizer_corpus/" + f + ".txt"));
    for (std::string line; std::getline(in, line);)
      if (line != "@@@@") lines.push_back(line);
  }
  return lines;
}

std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> v;
  std::istringstream in(line);
  for (int32_t id; in >> id;) v.push_back(id);
  return v;
}

TEST(TokenizerSpm, MatchesSpmEncodeOnCorpusLines) {
  if (std::system("spm_encode --help > /dev/null 2>&1") != 0) GTEST_SKIP() << "spm_encode is not installed (scripts/install-deps.sh: sentencepiece)";
  std::vector<std::string> lines = corpus_lines();
  ASSERT_GT(lines.size(), 100u);
  std::string dir = temp_dir("ref");
  std::string in_path = dir + "/lines.txt", out_path = dir + "/ids.txt";
  {
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    qpeft::write_file_atomic(in_path, all);
  }
  std::string cmd = "spm_encode --model='" + kModel + "' --output_format=id < '" + in_path + "' > '" + out_path + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::istringstream ref(qpeft::read_text_file(out_path));
  Tokenizer tok = Tokenizer::load(kModel);
  size_t agree = 0, n = 0, byte_tokens = 0;
  for (std::string line; std::getline(ref, line); ++n) {
    ASSERT_LT(n, lines.size());
    std::vector<int32_t> want = parse_ids(line), got = tok.encode(lines[n]);
    for (int32_t id : got) byte_tokens += tok.id_to_token(id).rfind("<0x", 0) == 0;
    if (got == want) ++agree;
    else ADD_FAILURE() << "line " << n << ": \"" << lines[n].substr(0, 80) << "\"";
  }
  EXPECT_EQ(n, lines.size());
  EXPECT_GT(byte_tokens, 100u);  // byte fallback is exercised
  std::printf("[ reference ] tiny_bpe.model: %zu/%zu corpus lines agree id-exactly with spm_encode\n", agree, n);
  qpeft::remove_all(dir);
}

TEST(TokenizerSpm, SpecialTokensFromTheModel) {
  Tokenizer tok = Tokenizer::load(kModel);
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.bos_token(), "<s>");
  EXPECT_EQ(tok.eos_token(), "</s>");
  EXPECT_EQ(tok.id_to_token(3), "<0x00>");
  EXPECT_EQ(tok.token_to_id("</s>"), 2);
  EXPECT_EQ(tok.token_to_id("no such piece"), -1);
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_FALSE(tok.is_special(3));
  std::vector<int32_t> plain = tok.encode("Hello world");
  std::vector<int32_t> with = tok.encode("Hello world", true);  // BOS only, as LlamaTokenizer
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with[0], 1);
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(tok.chat_template().empty());
}

TEST(TokenizerSpm, DecodeRoundTrips) {
  Tokenizer tok = Tokenizer::load(kModel);
  for (std::string s : {"Hello world", "Ünïcode 你好 🙂 tabs\tand more", "x = f(y) + 42;", "a"}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
    EXPECT_EQ(tok.decode(tok.encode(s, true), /*skip_special=*/true), s);
  }
  std::vector<int32_t> ids = tok.encode("Hi", true);
  ids.push_back(tok.eos_id());
  EXPECT_EQ(tok.decode(ids), "<s>Hi</s>");
  EXPECT_EQ(tok.decode(ids, true), "Hi");
  // A lone byte token: invalid UTF-8 is replaced, never returned raw.
  EXPECT_EQ(tok.decode({tok.token_to_id("<0xF0>")}), "\xEF\xBF\xBD");
  // Invalid UTF-8 input does not throw.
  EXPECT_FALSE(tok.encode(std::string("a\xFF\xC3(b", 5)).empty());
  EXPECT_NE(error_of([&] { tok.decode({5, 512}); }).find("token id 512 (position 1) is outside"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({-1}); }).find("outside the vocabulary"), std::string::npos);
}

TEST(TokenizerSpm, DirectoryWithOnlyTokenizerModelAndConfig) {
  std::string dir = temp_dir("dir");
  qpeft::write_file_atomic(dir + "/tokenizer.model", qpeft::read_text_file(kModel));
  Tokenizer plain = Tokenizer::load(dir);
  EXPECT_EQ(plain.source(), dir + "/tokenizer.model");
  EXPECT_EQ(plain.encode("Hello", true)[0], 1);
  // tokenizer_config.json overrides: EOS appended, no BOS, pad and template from the config.
  qpeft::write_file_atomic(dir + "/tokenizer_config.json",
                           R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "pad_token": "<unk>",
                               "add_bos_token": false, "add_eos_token": true, "chat_template": "{{ messages }}"})");
  Tokenizer cfg = Tokenizer::load(dir);
  std::vector<int32_t> ids = cfg.encode("Hello", true);
  EXPECT_EQ(ids, [&] { auto v = plain.encode("Hello"); v.push_back(2); return v; }());
  EXPECT_EQ(cfg.pad_id(), 0);
  EXPECT_EQ(cfg.chat_template(), "{{ messages }}");
  qpeft::write_file_atomic(dir + "/tokenizer_config.json", R"({"bos_token": "<nope>"})");
  EXPECT_NE(error_of([&] { Tokenizer::load(dir); }).find("bos_token \"<nope>\" is not a piece"), std::string::npos);
  qpeft::remove_all(dir);
}

TEST(TokenizerSpm, BadModelFileIsAClearError) {
  std::string dir = temp_dir("bad");
  qpeft::write_file_atomic(dir + "/tokenizer.model", "this is not a protobuf");
  std::string e = error_of([&] { Tokenizer::load(dir + "/tokenizer.model"); });
  EXPECT_NE(e.find("not a SentencePiece model"), std::string::npos) << e;
  qpeft::write_file_atomic(dir + "/tokenizer.model", "");
  e = error_of([&] { Tokenizer::load(dir); });
  EXPECT_NE(e.find("tokenizer.model"), std::string::npos) << e;
  std::string model = qpeft::read_text_file(kModel);
  qpeft::write_file_atomic(dir + "/tokenizer.model", model.substr(0, model.size() / 2));
  e = error_of([&] { Tokenizer::load(dir); });
  EXPECT_NE(e.find("not a SentencePiece model"), std::string::npos) << e;
  qpeft::remove_all(dir);
}

}  // namespace

namespace {

TEST(TokenizerSpm, TokenizeCliTakesTokenizerModel) {
  const auto r = qpeft::testing::run_cli("tokenize --tokenizer '" + kModel + "' --text 'Hello world' --add-special");
  EXPECT_EQ(r.status, 0) << r.output;
  const std::string& out = r.output;
  std::vector<int32_t> ids = Tokenizer::load(kModel).encode("Hello world", true);
  std::string want;
  for (size_t i = 0; i < ids.size(); ++i) want += (i ? " " : "") + std::to_string(ids[i]);
  EXPECT_EQ(out, want + "\n");
}

}  // namespace

// The vocabulary and settings GGUF export writes (text/sentencepiece_vocab.h), and the
// ModelProto GGUF import builds from them.
namespace {

using qpeft::SentencePieceVocab;

TEST(SentencePieceVocab, ReadsPiecesScoresTypesAndSettings) {
  const SentencePieceVocab v = qpeft::read_sentencepiece_vocab(qpeft::read_text_file(kModel), kModel);
  ASSERT_EQ(v.pieces.size(), 512u);
  ASSERT_EQ(v.scores.size(), 512u);
  ASSERT_EQ(v.types.size(), 512u);
  EXPECT_EQ(v.pieces[0], "<unk>");
  EXPECT_EQ(v.types[0], 2);  // unknown
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.types[1], 3);  // control
  EXPECT_EQ(v.pieces[3], "<0x00>");
  EXPECT_EQ(v.types[3], 6);  // byte
  EXPECT_EQ(v.types[259], 1);
  // spm_train scores BPE merges by their order: 0, -1, -2, ...
  EXPECT_EQ(v.scores[259], -0.0f);
  EXPECT_EQ(v.scores[260], -1.0f);
  EXPECT_EQ(v.scores[261], -2.0f);
  EXPECT_TRUE(v.bpe);
  EXPECT_TRUE(v.byte_fallback);
  EXPECT_EQ(v.normalizer, "identity");
  EXPECT_TRUE(v.add_dummy_prefix);
  EXPECT_TRUE(v.remove_extra_whitespaces);
  const Tokenizer t = Tokenizer::load(kModel);
  for (int32_t id = 0; id < 512; ++id) ASSERT_EQ(v.pieces[size_t(id)], t.id_to_token(id)) << id;
}

TEST(SentencePieceVocab, WrittenBackItEncodesAsTheOriginal) {
  const SentencePieceVocab v = qpeft::read_sentencepiece_vocab(qpeft::read_text_file(kModel), kModel);
  const std::string proto = qpeft::sentencepiece_model_proto(v);
  const SentencePieceVocab again = qpeft::read_sentencepiece_vocab(proto, "rewritten");
  EXPECT_EQ(again.pieces, v.pieces);
  EXPECT_EQ(again.scores, v.scores);
  EXPECT_EQ(again.types, v.types);
  EXPECT_EQ(again.remove_extra_whitespaces, v.remove_extra_whitespaces);
  const Tokenizer original = Tokenizer::load(kModel), rewritten = Tokenizer::from_sentencepiece(proto);
  const std::vector<std::string> lines = corpus_lines();
  for (size_t i = 0; i < lines.size(); ++i)
    ASSERT_EQ(rewritten.encode(lines[i], false), original.encode(lines[i], false)) << "line " << i << ": " << lines[i];
}

TEST(SentencePieceVocab, KeepingSpacesSplitsRunsOfThem) {
  SentencePieceVocab v = qpeft::read_sentencepiece_vocab(qpeft::read_text_file(kModel), kModel);
  v.remove_extra_whitespaces = false;
  const Tokenizer collapsing = Tokenizer::load(kModel), keeping = Tokenizer::from_sentencepiece(qpeft::sentencepiece_model_proto(v));
  const std::string text = "  two  spaces ";
  EXPECT_EQ(collapsing.decode(collapsing.encode(text)), "two spaces");
  EXPECT_GT(keeping.encode(text).size(), collapsing.encode(text).size());
  EXPECT_EQ(keeping.decode(keeping.encode(text)), text);
  EXPECT_EQ(keeping.encode("one space"), collapsing.encode("one space"));
}

TEST(SentencePieceVocab, MalformedProtobufIsAClearError) {
  const std::string bytes = qpeft::read_text_file(kModel);
  for (size_t cut : {size_t(1), size_t(7), bytes.size() / 2}) {
    const std::string e = error_of([&] { qpeft::read_sentencepiece_vocab(std::string_view(bytes).substr(0, cut), "cut.model"); });
    EXPECT_NE(e.find("cut.model"), std::string::npos) << e;
    EXPECT_NE(e.find("malformed"), std::string::npos) << e;
  }
  EXPECT_NE(error_of([] { qpeft::read_sentencepiece_vocab("", "empty.model"); }).find("no pieces"), std::string::npos);
}

}  // namespace

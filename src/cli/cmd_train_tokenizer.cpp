// qpeft train-tokenizer: trains a byte-level BPE tokenizer on text files and writes a
// Hugging Face tokenizer.json (and optionally tokenizer_config.json).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "text/tokenizer.h"
#include "text/tokenizer_train.h"

namespace qpeft::cli {

namespace {

struct TrainTokenizerArgs {
  std::vector<std::string> files;
  std::string out, config_out, chat_template, special, pre = "llama3", bos, eos, alphabet = "all";
  int32_t vocab_size = 8192;
  uint64_t min_frequency = 0;
  bool whole_files = false, no_bos = false;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  for (size_t i = 0;;) {
    size_t c = s.find(',', i);
    std::string item = s.substr(i, c == std::string::npos ? std::string::npos : c - i);
    size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    out.push_back(b == std::string::npos ? std::string() : item.substr(b, e - b + 1));  // "<s>, </s>" works too
    if (c == std::string::npos) break;
    i = c + 1;
  }
  return out;
}

// The usual names, when --bos/--eos are not given.
std::string pick(const std::vector<std::string>& specials, std::initializer_list<const char*> names) {
  for (const char* n : names)
    for (const auto& s : specials)
      if (s == n) return s;
  return "";
}

void run(const TrainTokenizerArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  BpeTrainOptions o;
  o.vocab_size = a.vocab_size;
  o.min_frequency = a.min_frequency;
  o.special_tokens = split_commas(a.special);
  o.split = parse_bpe_split(a.pre);
  o.split_lines = !a.whole_files;
  QP_CHECK(a.alphabet == "all" || a.alphabet == "seen", "train-tokenizer: --alphabet must be all or seen, got \"{}\"", a.alphabet);
  o.all_bytes = a.alphabet == "all";
  TokenizerConfigOptions cfg;
  cfg.bos_token = a.bos.empty() ? pick(o.special_tokens, {"<s>", "<|begin_of_text|>", "<|bos|>"}) : a.bos;
  cfg.eos_token = a.eos.empty() ? pick(o.special_tokens, {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|eos|>"}) : a.eos;
  cfg.add_bos = !a.no_bos;
  if (!a.chat_template.empty()) {
    QP_CHECK(!a.config_out.empty(), "train-tokenizer: --chat-template goes into tokenizer_config.json; give --config-out too");
    cfg.chat_template = read_text_file(a.chat_template);
  }

  BpeTrainer trainer(o);
  for (const auto& f : a.files) trainer.feed_file(f);
  auto t1 = std::chrono::steady_clock::now();
  TrainedBpe bpe = trainer.train();
  auto t2 = std::chrono::steady_clock::now();
  std::string json = bpe.tokenizer_json(cfg);
  std::string config = a.config_out.empty() ? std::string() : bpe.config_json(cfg);
  // Check that what we write loads before replacing anything.
  Tokenizer::from_json(json, config, a.out);
  for (const std::string* f : {&a.out, &a.config_out}) {
    size_t slash = f->rfind('/');
    if (slash != std::string::npos && slash > 0) make_dirs(f->substr(0, slash));
  }
  write_file_atomic(a.out, json);
  if (!a.config_out.empty()) write_file_atomic(a.config_out, config);

  auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  std::printf("train-tokenizer: %llu bytes, %llu lines, %llu pre-tokens (%llu distinct) read in %.2f s\n",
              (unsigned long long)bpe.bytes, (unsigned long long)bpe.sequences, (unsigned long long)bpe.words,
              (unsigned long long)bpe.unique_words, secs(t1 - t0));
  std::printf("train-tokenizer: vocabulary %d (%d special, %zu bytes, %zu merges) trained in %.2f s\n", bpe.vocab_size(),
              bpe.num_special, size_t(bpe.num_bytes), bpe.merges.size(), secs(t2 - t1));
  if (bpe.vocab_size() < a.vocab_size)
    std::printf("train-tokenizer: note: no pair left to merge (or all below --min-frequency) before reaching %d\n", a.vocab_size);
  std::printf("train-tokenizer: wrote %s%s%s\n", a.out.c_str(), a.config_out.empty() ? "" : " and ", a.config_out.c_str());
}

void setup(CLI::App& app) {
  auto args = std::make_shared<TrainTokenizerArgs>();
  auto* cmd = app.add_subcommand("train-tokenizer",
                                 "Train a byte-level BPE tokenizer (as Hugging Face tokenizers' BpeTrainer does) on text\n"
                                 "files and write it as a Hugging Face tokenizer.json. Special tokens get ids 0.., then the\n"
                                 "256 byte tokens, then one token per merge. Deterministic: the same files give the same bytes.");
  cmd->add_option("--files", args->files, "training text files (read as bytes, one line at a time)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--vocab-size", args->vocab_size, "vocabulary size, special and byte tokens included (default 8192)");
  cmd->add_option("--out", args->out, "where to write tokenizer.json")->required();
  cmd->add_option("--min-frequency", args->min_frequency, "never merge a pair seen fewer times (default 0)");
  cmd->add_option("--special-tokens", args->special, "comma-separated special tokens, ids 0.. in this order, e.g. \"<s>,</s>\"");
  cmd->add_option("--pre-tokenizer", args->pre, "split regex: llama3 (default) or gpt2");
  cmd->add_option("--config-out", args->config_out, "also write tokenizer_config.json (bos/eos, chat template) here");
  cmd->add_option("--chat-template", args->chat_template, "a Jinja chat template file to put into tokenizer_config.json")
      ->check(CLI::ExistingFile);
  cmd->add_option("--bos", args->bos, "the BOS token (default: <s> or <|begin_of_text|> when among the special tokens)");
  cmd->add_option("--eos", args->eos, "the EOS token (default: </s>, <|end_of_text|> or <|endoftext|> when special)");
  cmd->add_flag("--no-bos", args->no_bos, "do not prepend BOS when encoding with special tokens");
  cmd->add_option("--alphabet", args->alphabet,
                  "initial alphabet: all (the 256 bytes, default) or seen (only bytes in the files, as BpeTrainer\n"
                  "without initial_alphabet; other bytes are then dropped when encoding)");
  cmd->add_flag("--whole-files", args->whole_files, "pre-tokenize each file as one text (pre-tokens such as \"\\n\\n\" may span lines)");
  cmd->callback([args] {
    QP_CHECK(args->vocab_size > 0, "train-tokenizer: --vocab-size must be positive, got {}", args->vocab_size);
    run(*args);
  });
}

}  // namespace

QPEFT_COMMAND(train_tokenizer, setup);

}  // namespace qpeft::cli

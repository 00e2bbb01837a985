// qpeft tokenize: encode text to ids or decode ids to text with a model's tokenizer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "io/json_reader.h"
#include "text/tokenizer.h"

namespace qpeft::cli {

namespace {

struct TokenizeArgs {
  std::string tokenizer, text, file;
  bool json = false, decode = false, add_special = false, skip_special = false;
};

std::vector<int32_t> parse_ids(const std::string& s, const std::string& where) {
  std::vector<int32_t> ids;
  size_t i = s.find_first_not_of(" \t\r\n");
  if (i != std::string::npos && s[i] == '[') {
    const nlohmann::json j = qpeft::parse_json(s, "--decode: " + where);
    QP_CHECK(j.is_array(), "--decode: {} must be a JSON array of token ids", where);
    for (size_t k = 0; k < j.size(); ++k) {
      int64_t id = 0;
      QP_CHECK(qpeft::json_integer_in(j[k], 0, INT32_MAX, &id),
               "--decode: {}: element {} ({}) is not a token id (a non-negative integer)", where, k,
               qpeft::describe_json(j[k]));
      ids.push_back(int32_t(id));
    }
    return ids;
  }
  // Whitespace-separated integers.
  size_t pos = 0;
  while ((pos = s.find_first_not_of(" \t\r\n,", pos)) != std::string::npos) {
    size_t end = s.find_first_of(" \t\r\n,", pos);
    std::string tok = s.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    char* e = nullptr;
    long long v = std::strtoll(tok.c_str(), &e, 10);
    QP_CHECK(*e == 0 && !tok.empty() && v >= 0 && v <= INT32_MAX, "--decode: {}: \"{}\" is not a token id (expected space-separated non-negative integers or a JSON array)", where, tok);
    ids.push_back(int32_t(v));
    pos = end;
  }
  return ids;
}

void run(const TokenizeArgs& a) {
  std::string input = a.file.empty() ? a.text : read_text_file(a.file);
  std::string where = a.file.empty() ? std::string("--text") : a.file;
  Tokenizer tok = Tokenizer::load(a.tokenizer);
  if (a.decode) {
    std::string s = tok.decode(parse_ids(input, where), a.skip_special);
    if (a.json) s = nlohmann::json(s).dump() + "\n";
    std::fwrite(s.data(), 1, s.size(), stdout);
    return;
  }
  std::vector<int32_t> ids = tok.encode(input, a.add_special);
  std::string out;
  out.reserve(ids.size() * 7 + 2);
  if (a.json) out += '[';
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += a.json ? "," : " ";
    out += std::to_string(ids[i]);
  }
  if (a.json) out += ']';
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void setup(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand("tokenize",
                                 "Encode text to token ids, or decode ids to text.\n"
                                 "Output: ids separated by single spaces on one line (or one JSON array with --json).\n"
                                 "No BOS/EOS are added unless --add-special is given.\n"
                                 "--decode reads ids (a JSON array, or integers separated by spaces) and prints the text\n"
                                 "as is (as one JSON string with --json).");
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json, tokenizer.model or a model directory")->required();
  auto* text = cmd->add_option("--text", args->text, "the input text (or ids with --decode)");
  auto* file = cmd->add_option("--file", args->file, "read the input from this file; its bytes are tokenized exactly as they are");
  text->excludes(file);
  file->excludes(text);
  cmd->add_flag("--json", args->json, "print a JSON array of ids (a JSON string with --decode)");
  cmd->add_flag("--decode", args->decode, "decode ids to text");
  cmd->add_flag("--add-special", args->add_special, "add the tokenizer's special tokens (BOS/EOS) as its post-processor says");
  cmd->add_flag("--skip-special", args->skip_special, "with --decode: leave special tokens out");
  cmd->callback([args, cmd] {
    QP_CHECK(cmd->count("--text") + cmd->count("--file") == 1, "tokenize: give exactly one of --text and --file");
    run(*args);
  });
}

}  // namespace

QPEFT_COMMAND(tokenize, setup);

}  // namespace qpeft::cli

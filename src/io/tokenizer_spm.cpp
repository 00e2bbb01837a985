// SentencePiece tokenizer.model checkpoints through Debian's libsentencepiece
// (SentencePieceProcessor): encode/decode exactly as the `sentencepiece` library (and
// `spm_encode`) does, BOS/EOS from tokenizer_config.json when present, else from the model.
#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/file.h"
#include "io/tokenizer_impl.h"
#include "io/tokenizer_unicode.h"

namespace qpeft::tok_detail {

struct SpmModel {
  sentencepiece::SentencePieceProcessor sp;
};

void SpmDeleter::operator()(SpmModel* p) const { delete p; }

void spm_encode(const SpmModel& m, std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return;
  std::vector<int> ids;
  auto st = m.sp.Encode(text, &ids);
  // Encode fails only for an unloaded model; input bytes never make it fail.
  QP_CHECK(st.ok(), "[tokenizer] SentencePiece encode failed: {}", st.ToString());
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string spm_decode(const SpmModel& m, const std::vector<int32_t>& ids, const std::vector<uint8_t>& special, bool skip_special) {
  // Control tokens (<s>, </s>, ...) decode to nothing in SentencePiece; unless skipped they
  // are written as their piece text, with the runs between them decoded by the library.
  std::string out, piece;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    auto st = m.sp.Decode(run, &piece);
    QP_CHECK(st.ok(), "[tokenizer] SentencePiece decode failed: {}", st.ToString());
    out += piece;
    run.clear();
  };
  for (int32_t id : ids) {
    if (special[size_t(id)] && m.sp.IsControl(id)) {
      if (skip_special) continue;
      flush();
      out += m.sp.IdToPiece(id);
    } else if (special[size_t(id)] && skip_special) {
      continue;  // <unk>
    } else {
      run.push_back(id);
    }
  }
  flush();
  return unicode::to_valid_utf8(out);
}

std::unique_ptr<TokenizerImpl> load_sentencepiece_model(const std::string& path, std::string_view config_text) {
  auto t = std::make_unique<TokenizerImpl>();
  t->source = path;
  t->spm.reset(new SpmModel);
  sentencepiece::SentencePieceProcessor& sp = t->spm->sp;
  std::string bytes = read_text_file(path);
  auto st = sp.LoadFromSerializedProto(bytes);
  if (!st.ok())
    fail("[tokenizer] {}: not a SentencePiece model ({}); expected a tokenizer.model protobuf written by spm_train / sentencepiece", path,
         st.ToString());
  int n = sp.GetPieceSize();
  QP_CHECK(n > 0, "[tokenizer] {}: the SentencePiece model has an empty vocabulary", path);
  t->id_to_token.resize(size_t(n));
  t->special.assign(size_t(n), 0);
  for (int id = 0; id < n; ++id) {
    t->id_to_token[size_t(id)] = sp.IdToPiece(id);
    t->special[size_t(id)] = sp.IsControl(id) || sp.IsUnknown(id);
  }
  t->token_to_id.reserve(size_t(n));
  for (int id = 0; id < n; ++id) t->token_to_id.insert(t->id_to_token[size_t(id)], id);
  auto id_of = [&](const std::string& s) { return s.empty() ? -1 : t->token_to_id.find(s); };
  auto piece_of = [&](int id) { return id >= 0 && id < n ? sp.IdToPiece(id) : std::string(); };

  TokenizerConfig cfg = parse_tokenizer_config(config_text, path);
  t->bos = cfg.bos_token.empty() ? (sp.bos_id() < n ? sp.bos_id() : -1) : id_of(cfg.bos_token);
  t->eos = cfg.eos_token.empty() ? (sp.eos_id() < n ? sp.eos_id() : -1) : id_of(cfg.eos_token);
  t->pad = cfg.pad_token.empty() ? (sp.pad_id() < n ? sp.pad_id() : -1) : id_of(cfg.pad_token);
  t->unk = cfg.unk_token.empty() ? (sp.unk_id() < n ? sp.unk_id() : -1) : id_of(cfg.unk_token);
  if (!cfg.bos_token.empty() && t->bos < 0)
    fail("[tokenizer] tokenizer_config.json next to {}: bos_token \"{}\" is not a piece of the SentencePiece model", path, cfg.bos_token);
  if (!cfg.eos_token.empty() && t->eos < 0)
    fail("[tokenizer] tokenizer_config.json next to {}: eos_token \"{}\" is not a piece of the SentencePiece model", path, cfg.eos_token);
  t->bos_token = piece_of(t->bos);
  t->eos_token = piece_of(t->eos);
  for (int32_t id : {t->bos, t->eos, t->pad})
    if (id >= 0) t->special[size_t(id)] = 1;
  t->chat_template = cfg.chat_template;
  // As transformers' LlamaTokenizer: BOS unless add_bos_token is false, EOS only if true.
  if (cfg.add_bos_token != 0 && t->bos >= 0) t->prefix_ids.push_back(t->bos);
  if (cfg.add_eos_token == 1 && t->eos >= 0) t->suffix_ids.push_back(t->eos);
  return t;
}

}  // namespace qpeft::tok_detail

// SentencePiece tokenizer.model checkpoints through Debian's libsentencepiece
// (SentencePieceProcessor): encode/decode exactly as the `sentencepiece` library (and
// `spm_encode`) does, BOS/EOS from tokenizer_config.json when present, else from the model.
#include <sentencepiece_processor.h>

#include <unordered_set>

#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "text/sentencepiece_vocab.h"
#include "text/tokenizer_impl.h"
#include "text/tokenizer_unicode.h"

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

namespace {

// Protobuf wire format, just enough to read ModelProto's pieces (field 1, each a SentencePiece
// message whose field 1 is the piece string): every length is checked against the bytes left.
struct WireReader {
  const uint8_t* p;
  const uint8_t* end;
  bool varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == end) return false;
      const uint8_t b = *p++;
      *v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  // Reads one field: a varint's value goes to *len; a fixed64, fixed32 or length-delimited
  // payload is [*data, *data + *len). False if malformed. Groups (wire types 3 and 4,
  // deprecated but still parsed by protobuf) are skipped whole.
  bool field(uint64_t* number, int* wire, const uint8_t** data, uint64_t* len, int depth = 0) {
    uint64_t key = 0;
    if (!varint(&key)) return false;
    *number = key >> 3;
    *wire = int(key & 7);
    switch (*wire) {
      case 0: return varint(len);
      case 1: if (end - p < 8) return false; *data = p; *len = 8; p += 8; return true;
      case 5: if (end - p < 4) return false; *data = p; *len = 4; p += 4; return true;
      case 2:
        if (!varint(len) || *len > uint64_t(end - p)) return false;
        *data = p;
        p += *len;
        return true;
      case 3: {
        if (depth > 100) return false;
        const uint64_t group = *number;
        for (;;) {
          uint64_t n = 0, l = 0;
          int w = 0;
          const uint8_t* d = nullptr;
          if (!field(&n, &w, &d, &l, depth + 1)) return false;
          if (w == 4) return n == group;
        }
      }
      case 4: return depth > 0;  // the end of the group being skipped
      default: return false;
    }
  }
};

// libsentencepiece ends the process (an exception it cannot pass on) for pieces its trie
// builder refuses: empty ones and ones holding a NUL byte. Refuse them here, with the piece's
// index; duplicates too. Malformed wire data is left to the library, which reports it.
void check_sentencepiece_pieces(const std::string& path, std::string_view bytes) {
  WireReader top{reinterpret_cast<const uint8_t*>(bytes.data()), reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size()};
  std::unordered_set<std::string_view> seen;
  int64_t index = 0;
  while (top.p < top.end) {
    uint64_t number = 0, len = 0;
    int wire = 0;
    const uint8_t* data = nullptr;
    if (!top.field(&number, &wire, &data, &len)) return;
    if (number != 1 || wire != 2) continue;
    WireReader msg{data, data + len};
    std::string_view piece;
    bool has_piece = false;
    while (msg.p < msg.end) {
      uint64_t n = 0, l = 0;
      int w = 0;
      const uint8_t* d = nullptr;
      if (!msg.field(&n, &w, &d, &l)) return;
      if (n == 1 && w == 2) {
        piece = std::string_view(reinterpret_cast<const char*>(d), size_t(l));
        has_piece = true;
      }
    }
    QP_CHECK(has_piece && !piece.empty(), "[tokenizer] {}: piece {} of the SentencePiece model is empty", path, index);
    QP_CHECK(piece.find('\0') == std::string_view::npos,
             "[tokenizer] {}: piece {} of the SentencePiece model holds a NUL byte", path, index);
    QP_CHECK(seen.insert(piece).second, "[tokenizer] {}: piece {} of the SentencePiece model repeats an earlier piece",
             path, index);
    ++index;
  }
}

}  // namespace

std::unique_ptr<TokenizerImpl> load_sentencepiece_model(const std::string& path, std::string_view config_text) {
  return load_sentencepiece_proto(read_text_file(path), path, config_text);
}

std::unique_ptr<TokenizerImpl> load_sentencepiece_proto(std::string_view bytes, const std::string& path,
                                                        std::string_view config_text) {
  auto t = std::make_unique<TokenizerImpl>();
  t->source = path;
  t->spm.reset(new SpmModel);
  sentencepiece::SentencePieceProcessor& sp = t->spm->sp;
  check_sentencepiece_pieces(path, bytes);
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

namespace qpeft {

using tok_detail::WireReader;

SentencePieceVocab read_sentencepiece_vocab(std::string_view model_proto, const std::string& origin) {
  auto malformed = [&](const char* where) {
    fail("[tokenizer] {}: the SentencePiece model's protobuf is malformed ({}); expected a tokenizer.model written by "
         "spm_train / sentencepiece", origin, where);
  };
  // Each submessage's fields, in order: (number, wire type, payload or varint value).
  struct Field {
    uint64_t number = 0, len = 0;
    int wire = 0;
    const uint8_t* data = nullptr;
    std::string_view bytes() const { return {reinterpret_cast<const char*>(data), size_t(len)}; }
  };
  auto fields_of = [&](const uint8_t* begin, const uint8_t* end, const char* what) {
    std::vector<Field> out;
    WireReader r{begin, end};
    while (r.p < r.end) {
      Field f;
      if (!r.field(&f.number, &f.wire, &f.data, &f.len)) malformed(what);
      out.push_back(f);
    }
    return out;
  };
  const auto* begin = reinterpret_cast<const uint8_t*>(model_proto.data());
  SentencePieceVocab v;
  v.bpe = false;  // proto2 default: UNIGRAM
  for (const Field& top : fields_of(begin, begin + model_proto.size(), "ModelProto")) {
    if (top.wire != 2) continue;
    if (top.number == 1) {  // SentencePiece {piece = 1, score = 2, type = 3}
      std::string piece;
      float score = 0;
      int32_t type = 1;  // NORMAL
      for (const Field& f : fields_of(top.data, top.data + top.len, "a piece")) {
        if (f.number == 1 && f.wire == 2) piece = std::string(f.bytes());
        if (f.number == 2 && f.wire == 5) std::memcpy(&score, f.data, 4);
        if (f.number == 3 && f.wire == 0) type = int32_t(f.len);
      }
      if (type < 1 || type > 6) fail("[tokenizer] {}: piece {} of the SentencePiece model has type {}, not one of 1..6", origin, v.pieces.size(), type);
      v.pieces.push_back(std::move(piece));
      v.scores.push_back(score);
      v.types.push_back(type);
    } else if (top.number == 2) {  // TrainerSpec {model_type = 3, byte_fallback = 35}
      for (const Field& f : fields_of(top.data, top.data + top.len, "trainer_spec")) {
        if (f.number == 3 && f.wire == 0) v.bpe = f.len == 2;
        if (f.number == 35 && f.wire == 0) v.byte_fallback = f.len != 0;
      }
    } else if (top.number == 3) {  // NormalizerSpec {name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4}
      for (const Field& f : fields_of(top.data, top.data + top.len, "normalizer_spec")) {
        if (f.number == 1 && f.wire == 2) v.normalizer = std::string(f.bytes());
        if (f.number == 3 && f.wire == 0) v.add_dummy_prefix = f.len != 0;
        if (f.number == 4 && f.wire == 0) v.remove_extra_whitespaces = f.len != 0;
      }
    }
  }
  QP_CHECK(!v.pieces.empty(), "[tokenizer] {}: the SentencePiece model has no pieces", origin);
  return v;
}

namespace {

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}
void put_varint_field(std::string& out, int number, uint64_t v) {
  put_varint(out, uint64_t(number) << 3);
  put_varint(out, v);
}
void put_bytes_field(std::string& out, int number, std::string_view bytes) {
  put_varint(out, (uint64_t(number) << 3) | 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}

}  // namespace

std::string sentencepiece_model_proto(const SentencePieceVocab& v) {
  QP_CHECK(v.scores.size() == v.pieces.size() && v.types.size() == v.pieces.size(),
           "sentencepiece_model_proto: {} pieces, {} scores, {} types", v.pieces.size(), v.scores.size(), v.types.size());
  std::string out, msg;
  int64_t unk = -1;
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    msg.clear();
    put_bytes_field(msg, 1, v.pieces[i]);
    put_varint(msg, (2 << 3) | 5);
    char score[4];
    std::memcpy(score, &v.scores[i], 4);
    msg.append(score, 4);
    put_varint_field(msg, 3, uint64_t(v.types[i]));
    put_bytes_field(out, 1, msg);
    if (v.types[i] == 2 && unk < 0) unk = int64_t(i);
  }
  msg.clear();
  put_varint_field(msg, 3, v.bpe ? 2 : 1);
  put_varint_field(msg, 4, v.pieces.size());
  put_varint_field(msg, 35, v.byte_fallback);
  if (unk >= 0) put_varint_field(msg, 40, uint64_t(unk));
  put_bytes_field(out, 2, msg);
  msg.clear();
  put_bytes_field(msg, 1, "identity");
  put_varint_field(msg, 3, v.add_dummy_prefix);
  put_varint_field(msg, 4, v.remove_extra_whitespaces);
  put_varint_field(msg, 5, 1);  // escape_whitespaces: spaces become U+2581
  put_bytes_field(out, 3, msg);
  return out;
}

}  // namespace qpeft

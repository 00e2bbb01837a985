#include "models/gguf_model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <regex>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "io/gguf.h"
#include "text/gguf_tokenizer.h"
#include "io/json_reader.h"
#include "text/sentencepiece_vocab.h"
#include "text/tokenizer.h"
#include "ops/rope.h"
#include "quant/ggml_weight.h"

namespace qpeft {

namespace {

using nlohmann::json;

// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t { kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5 };

// llama.cpp's pre-tokenizer names for the split patterns its converter knows, read from the
// tokenizer's own Split regex (a trained vocabulary never matches the converter's hash check).
std::string pre_tokenizer_name(const json& tok, const std::string& path) {
  static const std::pair<const char*, const char*> kKnown[] = {
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "llama-bpe"},
      {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
       "qwen2"},
      {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", "gpt-2"},
  };
  std::vector<const json*> stack{&tok["pre_tokenizer"]};
  std::string pattern;
  bool byte_level_regex = false;
  while (!stack.empty()) {
    const json* p = stack.back();
    stack.pop_back();
    if (!p->is_object()) continue;
    const std::string type = p->value("type", "");
    if (type == "Sequence" && p->contains("pretokenizers"))
      for (const json& q : (*p)["pretokenizers"]) stack.push_back(&q);
    if (type == "Split" && p->contains("pattern") && (*p)["pattern"].contains("Regex"))
      pattern = (*p)["pattern"]["Regex"].get<std::string>();
    if (type == "ByteLevel" && p->value("use_regex", true)) byte_level_regex = true;
  }
  if (pattern.empty() && byte_level_regex) return "gpt-2";  // ByteLevel's own split is GPT-2's
  for (const auto& [regex, name] : kKnown)
    if (pattern == regex) return name;
  fail("{}: the pre-tokenizer's split pattern {} is not one llama.cpp knows (llama-bpe, qwen2, gpt-2); llama.cpp "
       "would tokenize differently",
       path, pattern.empty() ? "(none)" : json(pattern).dump());
}

// Byte-level BPE (tokenizer.json) as tokenizer.ggml.model "gpt2".
void add_byte_level_bpe_vocab(GgufWriter& w, const json& tok, int64_t n, const std::string& path) {
  const json& model = tok["model"];
  QP_CHECK(model.is_object() && model.value("type", "") == "BPE" && !model.value("byte_fallback", false),
           "{}: GGUF export supports byte-level BPE tokenizers (model.type BPE without byte_fallback) and SentencePiece "
           "tokenizer.model files; this one is {}",
           path, model.is_object() ? model.value("type", "?") : "?");
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n), kUnused);
  for (const auto& [piece, id] : model["vocab"].items()) {
    const int64_t i = id.get<int64_t>();
    QP_CHECK(i >= 0 && i < n, "{}: token '{}' has id {} outside the model's vocabulary of {}", path, piece, i, n);
    tokens[size_t(i)] = piece;
    types[size_t(i)] = kNormal;
  }
  if (tok.contains("added_tokens"))
    for (const json& a : tok["added_tokens"]) {
      const int64_t i = a.value("id", int64_t(-1));
      QP_CHECK(i >= 0 && i < n, "{}: added token {} has id {} outside the vocabulary of {}", path,
               a.value("content", std::string()), i, n);
      tokens[size_t(i)] = a.value("content", std::string());
      types[size_t(i)] = a.value("special", false) ? kControl : kUserDefined;
    }
  // Rows of the embedding past the tokenizer (padded vocabularies) get placeholder tokens.
  for (int64_t i = 0; i < n; ++i)
    if (types[size_t(i)] == kUnused) tokens[size_t(i)] = fmt::format("[PAD{}]", i);
  std::vector<std::string> merges;
  for (const json& m : model["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  w.set("tokenizer.ggml.model", GgufValue::str("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::str(pre_tokenizer_name(tok, path)));
  w.set("tokenizer.ggml.tokens", GgufValue::str_array(std::move(tokens)));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(std::move(types)));
  w.set("tokenizer.ggml.merges", GgufValue::str_array(std::move(merges)));
}

// A SentencePiece model as tokenizer.ggml.model "llama", as llama.cpp's converter writes it:
// pieces, scores, types and add_space_prefix. llama.cpp's tokenizer is SentencePiece's BPE with
// identity normalization that keeps every space; other models load but split some text
// differently there, which is said once on stderr.
void add_sentencepiece_vocab(GgufWriter& w, std::string_view model_proto, int64_t n, const std::string& path) {
  SentencePieceVocab v = read_sentencepiece_vocab(model_proto, path);
  QP_CHECK(int64_t(v.pieces.size()) <= n, "{}: the SentencePiece model has {} pieces, more than the model's vocabulary of {}",
           path, v.pieces.size(), n);
  std::vector<std::string> differences;
  if (!v.bpe) differences.push_back("it is not a BPE model (llama.cpp merges pieces by score, as SentencePiece's BPE does)");
  if (v.normalizer != "identity") differences.push_back("its normalizer is " + v.normalizer + " (llama.cpp normalizes nothing)");
  if (v.remove_extra_whitespaces) differences.push_back("it collapses runs of spaces (llama.cpp keeps them)");
  for (const std::string& d : differences)
    std::fprintf(stderr, "warning: %s: llama.cpp will split some text differently from this tokenizer: %s\n", path.c_str(),
                 d.c_str());
  for (int64_t i = int64_t(v.pieces.size()); i < n; ++i) {
    v.pieces.push_back(fmt::format("[PAD{}]", i));
    v.scores.push_back(0.0f);
    v.types.push_back(kUnused);
  }
  const auto unk = std::find(v.types.begin(), v.types.end(), 2);
  w.set("tokenizer.ggml.model", GgufValue::str("llama"));
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(v.add_dummy_prefix));
  w.set("tokenizer.ggml.tokens", GgufValue::str_array(std::move(v.pieces)));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array(std::move(v.scores)));
  if (unk != v.types.end()) w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(uint32_t(unk - v.types.begin())));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(std::move(v.types)));
}

void add_tokenizer(GgufWriter& w, const ModelConfig& cfg, const std::string& model_dir) {
  // A GGUF source carries its tokenizer in its metadata; a directory has tokenizer.json, or a
  // SentencePiece tokenizer.model (taken over a tokenizer.json that converts it to byte-fallback BPE).
  const bool from_gguf = is_gguf_path(model_dir);
  const std::string json_path = from_gguf ? model_dir : model_dir + "/tokenizer.json";
  const std::string spm_path = from_gguf ? model_dir : model_dir + "/tokenizer.model";
  json tok;  // null unless there is a tokenizer.json
  std::string model_proto;
  if (from_gguf) {
    GgufTokenizerFiles f = gguf_tokenizer_files(*GgufFile::open(model_dir));
    if (!f.tokenizer_json.empty()) tok = parse_json(f.tokenizer_json, json_path);
    model_proto = std::move(f.sentencepiece_model);
  } else {
    if (file_exists(json_path)) tok = parse_json(read_text_file(json_path), json_path);
    const bool json_is_byte_level = !tok.is_null() && !tok["model"].value("byte_fallback", false);
    if (!json_is_byte_level && file_exists(spm_path)) model_proto = read_text_file(spm_path);
    QP_CHECK(!tok.is_null() || !model_proto.empty(),
             "{}: no tokenizer.json or tokenizer.model; GGUF export needs the model's Hugging Face tokenizer", model_dir);
  }
  if (!model_proto.empty())
    add_sentencepiece_vocab(w, model_proto, cfg.vocab_size, spm_path);
  else
    add_byte_level_bpe_vocab(w, tok, cfg.vocab_size, json_path);
  const Tokenizer t = Tokenizer::load(model_dir);
  if (cfg.bos_token_id >= 0) w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(uint32_t(cfg.bos_token_id)));
  if (!cfg.eos_token_ids.empty()) w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(uint32_t(cfg.eos_token_ids[0])));
  if (cfg.pad_token_id >= 0) w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(uint32_t(cfg.pad_token_id)));
  // What the tokenizer adds around a text, as encode(add_special) shows it.
  const std::vector<int32_t> with = t.encode("a", true), without = t.encode("a", false);
  const bool adds_bos = with.size() > without.size() && t.bos_id() >= 0 && with.front() == t.bos_id();
  const bool adds_eos = with.size() > without.size() && t.eos_id() >= 0 && with.back() == t.eos_id();
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(adds_bos));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(adds_eos));
  if (!t.chat_template().empty()) w.set("tokenizer.chat_template", GgufValue::str(t.chat_template()));
}

// ggml's layer choice for Q4_K_M: more bits for the first and last eighth and every third layer.
bool use_more_bits(int64_t layer, int64_t n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

int64_t layer_of(const std::string& hf_name) {
  static const std::regex re(R"(^model\.layers\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(hf_name, m, re) ? std::stoll(m[1]) : -1;
}

GgufTensorType matrix_type(const std::string& dtype, const std::string& hf_name, int64_t cols, const ModelConfig& cfg) {
  if (dtype == "f32") return GgufTensorType::kF32;
  if (dtype == "f16") return GgufTensorType::kF16;
  if (dtype == "bf16") return GgufTensorType::kBF16;
  GgufTensorType want = GgufTensorType::kQ8_0;
  if (dtype == "q4_0") want = hf_name == "lm_head.weight" ? GgufTensorType::kQ8_0 : GgufTensorType::kQ4_0;
  if (dtype == "q4_k_m") {
    want = GgufTensorType::kQ4_K;
    const int64_t layer = layer_of(hf_name);
    const bool more = (hf_name.find("v_proj") != std::string::npos || hf_name.find("down_proj") != std::string::npos) &&
                      use_more_bits(layer, cfg.num_layers);
    if (more || hf_name == "lm_head.weight") want = GgufTensorType::kQ6_K;
  }
  int64_t be = 0, bb = 0;
  ggml_type_block(uint32_t(want), &be, &bb);
  if (cols % be == 0) return want;
  return cols % 32 == 0 ? GgufTensorType::kQ8_0 : GgufTensorType::kF16;
}

uint32_t file_type(const std::string& dtype) {
  // llama.cpp's llama_ftype.
  if (dtype == "f32") return 0;
  if (dtype == "f16") return 1;
  if (dtype == "q4_0") return 2;
  if (dtype == "q8_0") return 7;
  if (dtype == "q4_k_m") return 15;
  return 32;  // bf16
}

// f32 [rows, cols] in ggml's bytes for `type`.
std::vector<uint8_t> encode_rows(const Tensor& t, GgufTensorType type) {
  const int64_t rows = t.ndim() == 2 ? t.dim(0) : 1, cols = t.ndim() == 2 ? t.dim(1) : t.numel();
  const float* x = t.f32();
  std::vector<uint8_t> out;
  switch (type) {
    case GgufTensorType::kF32:
      out.resize(size_t(t.numel()) * 4);
      std::memcpy(out.data(), x, out.size());
      return out;
    case GgufTensorType::kF16:
    case GgufTensorType::kBF16: {
      out.resize(size_t(t.numel()) * 2);
      auto* h = reinterpret_cast<uint16_t*>(out.data());
      for (int64_t i = 0; i < t.numel(); ++i) h[i] = type == GgufTensorType::kF16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
      return out;
    }
    default: {
      GgmlType q;
      QP_CHECK(ggml_type_from_id(uint32_t(type), &q), "GGUF export: no quantizer for {}", ggml_type_name(uint32_t(type)));
      const GgmlTypeTraits& tr = ggml_traits(q);
      const int64_t row_bytes = ggml_row_bytes(tr, cols);
      out.resize(size_t(rows * row_bytes));
      pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) tr.quantize(x + r * cols, cols, out.data() + r * row_bytes);
      });
      return out;
    }
  }
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::regex re(R"(^model\.layers\.(\d+)\.(.+)\.(weight|bias)$)");
  std::smatch m;
  if (!std::regex_match(hf, m, re)) return "";
  static const std::pair<const char*, const char*> kParts[] = {
      {"input_layernorm", "attn_norm"},    {"post_attention_layernorm", "ffn_norm"}, {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},           {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},                {"mlp.down_proj", "ffn_down"},
  };
  for (const auto& [from, to] : kParts)
    if (m[2] == from) return fmt::format("blk.{}.{}.{}", m[1].str(), to, m[3].str());
  return "";
}

void permute_qk_rows(uint8_t* rows, int64_t n_heads, int64_t head_dim, size_t row_bytes, bool inverse) {
  std::vector<uint8_t> head(size_t(head_dim) * row_bytes);
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    uint8_t* base = rows + size_t(h * head_dim) * row_bytes;
    std::memcpy(head.data(), base, head.size());
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t hf = j * half + i, cpp = 2 * i + j;
        const int64_t dst = inverse ? hf : cpp, src = inverse ? cpp : hf;
        std::memcpy(base + size_t(dst) * row_bytes, head.data() + size_t(src) * row_bytes, row_bytes);
      }
  }
}

bool gguf_permutes_qk(const ModelConfig& cfg) { return cfg.model_type != "qwen2"; }

void export_gguf_model(LlamaModel& model, const std::string& model_dir, const std::string& out,
                       const GgufExportOptions& opt) {
  const ModelConfig& cfg = model.config();
  static const char* kDtypes[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"};
  QP_CHECK(std::find(std::begin(kDtypes), std::end(kDtypes), opt.dtype) != std::end(kDtypes),
           "--dtype '{}': GGUF export writes f32, f16, bf16, q8_0, q4_0 or q4_k_m", opt.dtype);
  QP_CHECK(cfg.model_type == "llama" || cfg.model_type == "mistral" || cfg.model_type == "qwen2",
           "{}: model_type '{}' has no GGUF export (llama, mistral, qwen2)", model_dir, cfg.model_type);
  QP_CHECK(!cfg.o_bias && !cfg.mlp_bias, "{}: attention output or MLP biases have no place in llama.cpp's llama layout",
           model_dir);
  const std::string arch = cfg.model_type == "qwen2" ? "qwen2" : "llama";
  GgufWriter w;
  w.set("general.architecture", GgufValue::str(arch));
  w.set("general.name",
        GgufValue::str(opt.name.empty() ? std::filesystem::path(model_dir).stem().string() : opt.name));
  w.set("general.file_type", GgufValue::u32(file_type(opt.dtype)));
  w.set("general.quantization_version", GgufValue::u32(2));
  auto key = [&](const std::string& k) { return arch + "." + k; };
  w.set(key("vocab_size"), GgufValue::u32(uint32_t(cfg.vocab_size)));
  w.set(key("context_length"), GgufValue::u32(uint32_t(cfg.max_position_embeddings)));
  w.set(key("embedding_length"), GgufValue::u32(uint32_t(cfg.hidden_size)));
  w.set(key("block_count"), GgufValue::u32(uint32_t(cfg.num_layers)));
  w.set(key("feed_forward_length"), GgufValue::u32(uint32_t(cfg.intermediate_size)));
  w.set(key("attention.head_count"), GgufValue::u32(uint32_t(cfg.num_heads)));
  w.set(key("attention.head_count_kv"), GgufValue::u32(uint32_t(cfg.num_kv_heads)));
  w.set(key("attention.layer_norm_rms_epsilon"), GgufValue::f32(float(cfg.rms_norm_eps)));
  w.set(key("rope.freq_base"), GgufValue::f32(float(cfg.rope.theta)));
  w.set(key("rope.dimension_count"), GgufValue::u32(uint32_t(cfg.head_dim)));
  if (cfg.head_dim * cfg.num_heads != cfg.hidden_size) {
    w.set(key("attention.key_length"), GgufValue::u32(uint32_t(cfg.head_dim)));
    w.set(key("attention.value_length"), GgufValue::u32(uint32_t(cfg.head_dim)));
  }
  if (cfg.rope.scaling_type == "linear") {
    w.set(key("rope.scaling.type"), GgufValue::str("linear"));
    w.set(key("rope.scaling.factor"), GgufValue::f32(float(cfg.rope.factor)));
  }
  add_tokenizer(w, cfg, model_dir);

  const bool permute = gguf_permutes_qk(cfg);
  model.visit_weights([&](WeightSlot& s) {
    if (cfg.tie_word_embeddings && s.name == "lm_head.weight") return;
    const std::string name = gguf_tensor_name(s.name);
    QP_CHECK(!name.empty(), "{}: tensor '{}' has no GGUF name", model_dir, s.name);
    const bool is_matrix = s.frozen != nullptr;
    const int64_t cols = is_matrix ? s.shape[1] : s.shape[0], rows = is_matrix ? s.shape[0] : 1;
    const GgufTensorType type = is_matrix ? matrix_type(opt.dtype, s.name, cols, cfg) : GgufTensorType::kF32;
    const int64_t heads = s.name.find("q_proj") != std::string::npos ? cfg.num_heads
                          : s.name.find("k_proj") != std::string::npos ? cfg.num_kv_heads
                                                                        : 0;
    WeightSlot slot = s;
    w.add_tensor(name, type, is_matrix ? std::vector<int64_t>{cols, rows} : std::vector<int64_t>{cols},
                 [&opt, slot, type, heads, permute, &cfg]() {
                   Tensor t = slot.frozen ? (opt.matrix ? opt.matrix(slot) : decode_to_f32(**slot.frozen))
                                          : (opt.vector ? opt.vector(slot) : slot.vector->value());
                   t = t.to(DType::F32);
                   if (heads > 0 && permute) {
                     // q/k weight rows, or bias entries (rows of one element).
                     const size_t row = size_t(t.numel() / (heads * cfg.head_dim)) * sizeof(float);
                     permute_qk_rows(reinterpret_cast<uint8_t*>(t.f32()), heads, cfg.head_dim, row, false);
                   }
                   return encode_rows(t, type);
                 });
  });
  if (cfg.rope.scaling_type == "llama3" || cfg.rope.scaling_type == "factors") {
    // llama.cpp divides each frequency by its factor: unscaled / scaled inverse frequency (a
    // GGUF source's own factors come back as they were read).
    RopeConfig plain = cfg.rope;
    plain.scaling_type = "default";
    const std::vector<double> base = rope_inv_freq(plain), scaled = rope_inv_freq(cfg.rope);
    w.add_tensor("rope_freqs.weight", GgufTensorType::kF32, {int64_t(base.size())}, [base, scaled]() {
      std::vector<uint8_t> out(base.size() * 4);
      for (size_t i = 0; i < base.size(); ++i) {
        const float f = float(base[i] / scaled[i]);
        std::memcpy(out.data() + 4 * i, &f, 4);
      }
      return out;
    });
  }
  w.write(out);
}

ModelConfig gguf_model_config(const GgufFile& g) {
  const std::string arch = g.get_string("general.architecture");
  QP_CHECK(arch == "llama" || arch == "qwen2", "[gguf] {}: general.architecture '{}' is not one qpeft loads (llama, qwen2)",
           g.path(), arch);
  auto key = [&](const char* k) { return arch + "." + k; };
  const GgufFile::Tensor* embd = g.find_tensor("token_embd.weight");
  QP_CHECK(embd && embd->ne.size() == 2, "[gguf] {}: no 2-d token_embd.weight tensor", g.path());
  json c;
  c["model_type"] = arch;
  c["architectures"] = {arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  c["hidden_size"] = g.get_uint(key("embedding_length"));
  c["intermediate_size"] = g.get_uint(key("feed_forward_length"));
  c["num_hidden_layers"] = g.get_uint(key("block_count"));
  c["num_attention_heads"] = g.get_uint(key("attention.head_count"));
  if (g.find(key("attention.head_count_kv"))) c["num_key_value_heads"] = g.get_uint(key("attention.head_count_kv"));
  if (g.find(key("attention.key_length"))) c["head_dim"] = g.get_uint(key("attention.key_length"));
  else if (g.find(key("rope.dimension_count"))) c["head_dim"] = g.get_uint(key("rope.dimension_count"));
  c["vocab_size"] = g.find(key("vocab_size")) ? g.get_uint(key("vocab_size")) : uint64_t(embd->ne[1]);
  if (g.find(key("context_length"))) c["max_position_embeddings"] = g.get_uint(key("context_length"));
  if (g.find(key("attention.layer_norm_rms_epsilon")))
    c["rms_norm_eps"] = g.get_float(key("attention.layer_norm_rms_epsilon"));
  if (g.find(key("rope.freq_base"))) c["rope_theta"] = g.get_float(key("rope.freq_base"));
  if (g.find(key("rope.scaling.type")) && g.get_string(key("rope.scaling.type")) == "linear")
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", g.get_float(key("rope.scaling.factor"))}};
  c["tie_word_embeddings"] = g.find_tensor("output.weight") == nullptr;
  if (arch == "llama") c["attention_bias"] = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  for (auto [gg, hf] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"}, {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                        {"tokenizer.ggml.padding_token_id", "pad_token_id"}})
    if (g.find(gg)) c[hf] = g.get_uint(gg);
  ModelConfig cfg = ModelConfig::parse(c.dump(), g.path());
  QP_CHECK(embd->ne[0] == cfg.hidden_size && embd->ne[1] == cfg.vocab_size,
           "[gguf] {}: token_embd.weight is [{}, {}] (ggml order), the metadata says hidden {} and vocabulary {}", g.path(),
           embd->ne[0], embd->ne[1], cfg.hidden_size, cfg.vocab_size);
  if (const GgufFile::Tensor* f = g.find_tensor("rope_freqs.weight")) {
    QP_CHECK(f->type == uint32_t(GgufTensorType::kF32) && f->numel() == cfg.head_dim / 2,
             "[gguf] {}: rope_freqs.weight must be f32 [{}]", g.path(), cfg.head_dim / 2);
    cfg.rope.scaling_type = "factors";
    cfg.rope.freq_factors.resize(size_t(cfg.head_dim / 2));
    for (size_t i = 0; i < cfg.rope.freq_factors.size(); ++i) {
      float v;
      std::memcpy(&v, f->data + 4 * i, 4);
      cfg.rope.freq_factors[i] = v;
    }
    (void)rope_inv_freq(cfg.rope);  // checks the factors
  }
  return cfg;
}

std::unique_ptr<LlamaModel> load_gguf_model(const std::string& path, const LoadOptions& opt) {
  auto g = GgufFile::open(path);
  ModelConfig cfg = gguf_model_config(*g);
  const bool permute = gguf_permutes_qk(cfg);
  std::shared_ptr<void> keep = std::const_pointer_cast<MappedFile>(g->mapping());
  std::optional<QuantFormat> qf;
  if (opt.quantize.enabled()) {
    QP_CHECK(parse_quant_format(opt.quantize.format, &qf.emplace()), "quantize on load: unknown format '{}'",
             opt.quantize.format);
  }
  auto model = std::make_unique<LlamaModel>(cfg);
  model->visit_weights([&](WeightSlot& s) {
    if (cfg.tie_word_embeddings && s.name == "lm_head.weight") return;
    const std::string name = gguf_tensor_name(s.name);
    const GgufFile::Tensor* t = g->find_tensor(name);
    QP_CHECK(t, "[gguf] {}: tensor '{}' ({} in Hugging Face's names) is missing", path, name, s.name);
    const bool matrix = s.frozen != nullptr;
    const std::vector<int64_t> want = matrix ? std::vector<int64_t>{s.shape[1], s.shape[0]} : std::vector<int64_t>{s.shape[0]};
    QP_CHECK(t->ne == want, "[gguf] {}: tensor '{}' has shape {} (ggml order), the metadata implies {}", path, name,
             shape_str(t->ne), shape_str(want));
    const int64_t heads = s.name.find("q_proj") != std::string::npos   ? cfg.num_heads
                          : s.name.find("k_proj") != std::string::npos ? cfg.num_kv_heads
                                                                       : 0;
    const bool unpermute = permute && heads > 0;
    const int64_t rows = matrix ? s.shape[0] : s.shape[0], row_elems = matrix ? s.shape[1] : 1;
    const size_t row_bytes = size_t(t->nbytes / uint64_t(rows));
    GgmlType qtype;
    if (ggml_type_from_id(t->type, &qtype)) {
      QP_CHECK(matrix, "[gguf] {}: tensor '{}' is {}; qpeft reads norms and biases in f32, f16 or bf16", path, name,
               ggml_type_name(t->type));
      if (unpermute || copies_into_memory(opt, cfg, s, false)) {  // ggml weights are never requantized
        std::vector<uint8_t> bytes(t->data, t->data + t->nbytes);
        if (unpermute) permute_qk_rows(bytes.data(), heads, cfg.head_dim, row_bytes, true);
        g->mapping()->release(t->data, t->nbytes);
        *s.frozen = std::make_shared<GgmlWeight>(GgmlWeight::from_bytes(qtype, rows, row_elems, std::move(bytes), s.name));
      } else {
        *s.frozen = std::make_shared<GgmlWeight>(GgmlWeight::from_bytes(
            qtype, rows, row_elems, std::span<const uint8_t>(t->data, t->nbytes), keep, s.name));
      }
      return;
    }
    const DType dt = t->type == uint32_t(GgufTensorType::kF32)   ? DType::F32
                     : t->type == uint32_t(GgufTensorType::kF16) ? DType::F16
                                                                 : DType::BF16;
    Tensor view = Tensor::from_storage(Storage::wrap(const_cast<uint8_t*>(t->data), t->nbytes, keep), 0, s.shape, dt);
    if (unpermute || copies_into_memory(opt, cfg, s, qf && s.linear)) {
      view = view.clone();
      if (unpermute) permute_qk_rows(static_cast<uint8_t*>(view.raw()), heads, cfg.head_dim, row_bytes, true);
      g->mapping()->release(t->data, t->nbytes);
    }
    if (!matrix) {
      *s.vector = Var(view.to(DType::F32), false, s.name);
    } else if (qf && s.linear) {
      *s.frozen = std::make_shared<QuantizedWeight>(
          QuantizedWeight::quantize(view, *qf, opt.quantize.block_size, opt.quantize.double_quant, s.name));
    } else {
      *s.frozen = std::make_shared<DenseWeight>(view, s.name);
    }
  });
  model->finish_loading();
  return model;
}

}  // namespace qpeft

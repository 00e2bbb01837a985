#include "models/generate.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>

#include "core/error.h"
#include "core/file.h"
#include "io/json_reader.h"
#include "text/tokenizer.h"
#include "models/kv_cache.h"

namespace qpeft {

// ---- KVCache -----------------------------------------------------------------------------

KVCache::KVCache(const ModelConfig& cfg, int64_t batch, int64_t max_len)
    : B_(batch), max_len_(max_len), Hkv_(cfg.num_kv_heads), D_(cfg.head_dim) {
  QP_CHECK(batch > 0 && max_len > 0, "[kv_cache] batch {} and max_len {} must be positive", batch, max_len);
  len_.assign(size_t(B_), 0);
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    k_.push_back(Tensor::zeros({B_, max_len_, Hkv_, D_}));
    v_.push_back(Tensor::zeros({B_, max_len_, Hkv_, D_}));
  }
}

bool KVCache::ragged() const { return std::adjacent_find(len_.begin(), len_.end(), std::not_equal_to<>()) != len_.end(); }

int64_t KVCache::length() const {
  QP_CHECK(!ragged(), "[kv_cache] the rows hold different lengths; ask for length(row)");
  return len_.empty() ? 0 : len_[0];
}

int64_t KVCache::max_length() const { return len_.empty() ? 0 : *std::max_element(len_.begin(), len_.end()); }

void KVCache::reset() { std::fill(len_.begin(), len_.end(), 0); }

void KVCache::append(int64_t layer, const Tensor& k_new, const Tensor& v_new, Tensor* k_all, Tensor* v_all) {
  QP_CHECK(layer >= 0 && layer < num_layers(), "[kv_cache] layer {} of {}", layer, num_layers());
  QP_CHECK(k_new.ndim() == 4 && k_new.shape() == v_new.shape() && k_new.dim(0) == B_ && k_new.dim(2) == Hkv_ &&
               k_new.dim(3) == D_,
           "[kv_cache] new keys {} / values {} do not match a cache of [{}, {}, {}, {}]", k_new.describe(),
           v_new.describe(), B_, max_len_, Hkv_, D_);
  const int64_t len = length(), T = k_new.dim(1), total = len + T, row = Hkv_ * D_;
  QP_CHECK(total <= max_len_, "[kv_cache] {} positions exceed the cache's {}", total, max_len_);
  // cache[b, len + t] = new[b, t]
  for (const auto& [src, dst] : {std::pair{&k_new, &k_[layer]}, std::pair{&v_new, &v_[layer]}})
    for (int64_t b = 0; b < B_; ++b)
      std::memcpy(dst->f32() + (b * max_len_ + len) * row, src->f32() + b * T * row, size_t(T * row) * 4);
  auto prefix = [&](const Tensor& c) {
    if (B_ == 1) return Tensor::from_storage(c.storage(), 0, {1, total, Hkv_, D_}, DType::F32);
    Tensor out = Tensor::empty({B_, total, Hkv_, D_});
    for (int64_t b = 0; b < B_; ++b)
      std::memcpy(out.f32() + b * total * row, c.f32() + b * max_len_ * row, size_t(total * row) * 4);
    return out;
  };
  *k_all = prefix(k_[layer]);
  *v_all = prefix(v_[layer]);
}

void KVCache::append_row(int64_t layer, int64_t b, const Tensor& k_new, const Tensor& v_new, Tensor* k_all,
                         Tensor* v_all) {
  QP_CHECK(layer >= 0 && layer < num_layers() && b >= 0 && b < B_, "[kv_cache] layer {} of {}, row {} of {}", layer,
           num_layers(), b, B_);
  QP_CHECK(k_new.ndim() == 4 && k_new.shape() == v_new.shape() && k_new.dim(0) == 1 && k_new.dim(2) == Hkv_ &&
               k_new.dim(3) == D_,
           "[kv_cache] new keys {} / values {} of one row do not match a cache of [{}, {}, {}, {}]", k_new.describe(),
           v_new.describe(), B_, max_len_, Hkv_, D_);
  const int64_t len = len_[size_t(b)], T = k_new.dim(1), total = len + T, row = Hkv_ * D_;
  QP_CHECK(total <= max_len_, "[kv_cache] {} positions exceed the cache's {}", total, max_len_);
  // cache[b, len + t] = new[0, t]; row b's prefix is contiguous, so a view.
  std::memcpy(k_[layer].f32() + (b * max_len_ + len) * row, k_new.f32(), size_t(T * row) * 4);
  std::memcpy(v_[layer].f32() + (b * max_len_ + len) * row, v_new.f32(), size_t(T * row) * 4);
  const size_t offset = size_t(b * max_len_ * row) * 4;
  *k_all = Tensor::from_storage(k_[layer].storage(), offset, {1, total, Hkv_, D_}, DType::F32);
  *v_all = Tensor::from_storage(v_[layer].storage(), offset, {1, total, Hkv_, D_}, DType::F32);
}

void KVCache::advance(int64_t T) {
  QP_CHECK(T >= 0 && max_length() + T <= max_len_, "[kv_cache] cannot advance {} by {} (max_len {})", max_length(), T,
           max_len_);
  for (int64_t& l : len_) l += T;
}

void KVCache::truncate(int64_t b, int64_t len) {
  QP_CHECK(b >= 0 && b < B_ && len >= 0 && len <= len_[size_t(b)], "[kv_cache] cannot truncate row {} of {} to {}",
           b, B_, len);
  len_[size_t(b)] = len;
}

void KVCache::keep_rows(const std::vector<int64_t>& rows) {
  QP_CHECK(!rows.empty(), "[kv_cache] keep_rows: no rows");
  const int64_t n = int64_t(rows.size()), row = Hkv_ * D_;
  std::vector<int64_t> lens;
  for (int64_t r : rows) {
    QP_CHECK(r >= 0 && r < B_, "[kv_cache] keep_rows: row {} of {}", r, B_);
    lens.push_back(len_[size_t(r)]);
  }
  for (auto* caches : {&k_, &v_})
    for (Tensor& c : *caches) {
      Tensor kept = Tensor::empty({n, max_len_, Hkv_, D_});
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(kept.f32() + i * max_len_ * row, c.f32() + rows[size_t(i)] * max_len_ * row,
                    size_t(lens[size_t(i)] * row) * 4);
      c = kept;
    }
  B_ = n;
  len_ = std::move(lens);
}

// ---- sampling ----------------------------------------------------------------------------

int32_t sample_token(float* logits, int64_t V, const SamplingOptions& opt, Rng& rng) {
  QP_CHECK(V > 0, "[sample] empty logits");
  QP_CHECK(opt.temperature >= 0 && std::isfinite(opt.temperature), "[sample] temperature {} must be >= 0",
           opt.temperature);
  QP_CHECK(opt.top_p > 0 && opt.top_p <= 1, "[sample] top_p {} must be in (0, 1]", opt.top_p);
  QP_CHECK(opt.top_k >= 0, "[sample] top_k {} must be >= 0", opt.top_k);
  if (opt.temperature == 0) return int32_t(std::max_element(logits, logits + V) - logits);  // first maximum

  // Candidates sorted by logit, highest first (ties: lower id first).
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t n = idx.size();
  // top-k: keep the logits >= the k-th largest (transformers' TopKLogitsWarper keeps ties).
  if (opt.top_k > 0 && opt.top_k < V) {
    const float kth = logits[idx[size_t(opt.top_k - 1)]];
    while (n > 1 && logits[idx[n - 1]] < kth) --n;
  }
  // softmax(logits / T) over the kept candidates.
  std::vector<double> p(n);
  const double inv_t = 1.0 / opt.temperature, m = double(logits[idx[0]]) * inv_t;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i] = std::exp(double(logits[idx[i]]) * inv_t - m);
  for (double& x : p) x /= sum;
  // top-p: a candidate stays while the probability of those above it is < top_p, so the one
  // that crosses top_p is kept (TopPLogitsWarper; at least one always stays).
  if (opt.top_p < 1) {
    double above = 0;
    size_t keep = 0;
    while (keep < n && above < opt.top_p) above += p[keep++];
    n = std::max<size_t>(keep, 1);
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += p[i];
    for (size_t i = 0; i < n; ++i) p[i] /= s;
  }
  // Inverse CDF in the sorted order.
  const double u = rng.uniform();
  double c = 0;
  for (size_t i = 0; i < n; ++i) {
    c += p[i];
    if (u < c) return idx[i];
  }
  return idx[n - 1];
}

// ---- generation --------------------------------------------------------------------------

namespace {

// Logits [B, V] at position pos[b] of each row b after running ids [B·T] through the model.
Tensor position_logits(LlamaModel& model, const std::vector<int32_t>& ids, int64_t B, int64_t T,
                       const std::vector<int64_t>& pos, KVCache* cache) {
  Graph g(false);
  Var h = model.hidden_states(g, ids, B, T, cache);
  const int64_t d = model.config().hidden_size, V = model.config().vocab_size;
  // Rows b·T + pos[b] of h [B·T, d].
  Tensor last = Tensor::empty({B, d});
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(last.f32() + b * d, h.value().f32() + (b * T + pos[size_t(b)]) * d, size_t(d) * 4);
  Tensor out = Tensor::empty({B, V});
  linear_forward(last.f32(), B, *model.lm_head(), out.f32());
  return out;
}

void check_prompt(const std::vector<int32_t>& prompt_ids, int64_t V) {
  QP_CHECK(!prompt_ids.empty(), "[generate] empty prompt: give at least one token (a BOS will do)");
  for (int32_t id : prompt_ids)
    QP_CHECK(id >= 0 && id < V, "[generate] prompt token {} is outside the model's vocabulary of {}", id, V);
}

}  // namespace

Tensor last_logits(LlamaModel& model, const std::vector<int32_t>& ids, int64_t B, int64_t T, KVCache* cache) {
  return position_logits(model, ids, B, T, std::vector<int64_t>(size_t(B), T - 1), cache);
}

int64_t new_tokens_within_context(const ModelConfig& cfg, int64_t prompt_tokens, int64_t max_new_tokens) {
  const int64_t context = cfg.max_position_embeddings;
  QP_CHECK(prompt_tokens < context,
           "[generate] the prompt has {} tokens, which fills the model's context of {} (max_position_embeddings); "
           "shorten it",
           prompt_tokens, context);
  return std::min(max_new_tokens, context - prompt_tokens);
}

GenerateResult generate(LlamaModel& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opt,
                        const TokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  QP_CHECK(opt.max_new_tokens >= 0, "[generate] max_new_tokens {} must be >= 0", opt.max_new_tokens);
  const int64_t V = model.config().vocab_size, Tp = int64_t(prompt_ids.size());
  check_prompt(prompt_ids, V);
  GenerateResult res;
  res.prompt_tokens = Tp;
  const int64_t max_new = new_tokens_within_context(model.config(), Tp, opt.max_new_tokens);
  if (max_new == 0) return res;

  Rng rng(opt.seed);
  std::unique_ptr<KVCache> cache;
  if (opt.use_cache) cache = std::make_unique<KVCache>(model.config(), 1, Tp + max_new);
  std::vector<int32_t> seq = prompt_ids;
  auto t0 = Clock::now(), t_first = t0;
  for (int64_t step = 0; step < max_new; ++step) {
    Tensor logits;
    if (!cache) {
      logits = last_logits(model, seq, 1, int64_t(seq.size()));
    } else if (step == 0) {
      logits = last_logits(model, seq, 1, Tp, cache.get());
    } else {
      logits = last_logits(model, {seq.back()}, 1, 1, cache.get());
    }
    res.last_logits.assign(logits.f32(), logits.f32() + V);
    const int32_t id = sample_token(logits.f32(), V, opt, rng);
    if (step == 0) t_first = Clock::now();
    seq.push_back(id);
    res.tokens.push_back(id);
    const bool eos = opt.stop_on_eos && std::find(opt.eos_ids.begin(), opt.eos_ids.end(), id) != opt.eos_ids.end();
    const bool go_on = on_token ? on_token(id) : true;
    if (eos) res.stopped_on_eos = true;
    if (eos || !go_on) break;
  }
  auto t1 = Clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t_first - t0).count();
  res.decode_seconds = std::chrono::duration<double>(t1 - t_first).count();
  return res;
}

std::vector<GenerateResult> generate_batch(LlamaModel& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const std::vector<int32_t>& adapters, const GenerateOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const int64_t n = int64_t(prompts.size()), V = model.config().vocab_size;
  QP_CHECK(n > 0, "[generate] no prompts");
  QP_CHECK(adapters.empty() || int64_t(adapters.size()) == n, "[generate] {} adapters for {} prompts",
           adapters.size(), n);
  QP_CHECK(opt.max_new_tokens >= 0, "[generate] max_new_tokens {} must be >= 0", opt.max_new_tokens);
  std::vector<GenerateResult> res(static_cast<size_t>(n));
  int64_t Tmax = 0;
  for (int64_t i = 0; i < n; ++i) {
    check_prompt(prompts[size_t(i)], V);
    res[size_t(i)].prompt_tokens = int64_t(prompts[size_t(i)].size());
    Tmax = std::max(Tmax, res[size_t(i)].prompt_tokens);
  }
  const int64_t max_new = new_tokens_within_context(model.config(), Tmax, opt.max_new_tokens);
  if (max_new == 0) return res;

  std::vector<Rng> rngs(static_cast<size_t>(n), Rng(opt.seed));
  std::vector<std::vector<int32_t>> seq = prompts;
  std::vector<int64_t> active(static_cast<size_t>(n));  // the prompt in each batch row
  std::iota(active.begin(), active.end(), int64_t(0));
  std::unique_ptr<KVCache> cache;
  if (opt.use_cache) cache = std::make_unique<KVCache>(model.config(), n, Tmax + max_new);
  const int32_t pad = std::max<int32_t>(model.config().pad_token_id, 0);
  // Right-padded rows of the active sequences, and the position of each one's last token.
  auto padded = [&](std::vector<int32_t>* ids, std::vector<int64_t>* last) {
    int64_t T = 0;
    for (int64_t r : active) T = std::max<int64_t>(T, int64_t(seq[size_t(r)].size()));
    ids->assign(active.size() * size_t(T), pad);
    last->clear();
    for (size_t b = 0; b < active.size(); ++b) {
      const auto& s = seq[size_t(active[b])];
      std::copy(s.begin(), s.end(), ids->begin() + int64_t(b) * T);
      last->push_back(int64_t(s.size()) - 1);
    }
    return T;
  };

  const auto t0 = Clock::now();
  Clock::time_point t_first = t0;
  for (int64_t step = 0; step < max_new && !active.empty(); ++step) {
    const int64_t B = int64_t(active.size());
    std::vector<int32_t> row_adapters;
    if (!adapters.empty())
      for (int64_t r : active) row_adapters.push_back(adapters[size_t(r)]);
    std::optional<SequenceAdaptersScope> scope;
    if (!adapters.empty()) scope.emplace(model, std::move(row_adapters));
    Tensor logits;
    std::vector<int32_t> ids;
    std::vector<int64_t> last;
    if (!cache || step == 0) {
      // Without a cache every step reruns the sequences; with one, this is the shared prefill.
      const int64_t T = padded(&ids, &last);
      logits = position_logits(model, ids, B, T, last, cache.get());
      if (cache)
        for (int64_t b = 0; b < B; ++b) cache->truncate(b, last[size_t(b)] + 1);  // drop the padding
    } else {
      for (int64_t r : active) ids.push_back(seq[size_t(r)].back());
      logits = last_logits(model, ids, B, 1, cache.get());
    }
    if (step == 0) t_first = Clock::now();
    std::vector<int64_t> keep;  // batch rows that go on
    for (int64_t b = 0; b < B; ++b) {
      const size_t r = size_t(active[size_t(b)]);
      float* row = logits.f32() + b * V;
      res[r].last_logits.assign(row, row + V);
      const int32_t id = sample_token(row, V, opt, rngs[r]);
      seq[r].push_back(id);
      res[r].tokens.push_back(id);
      const bool eos = opt.stop_on_eos && std::find(opt.eos_ids.begin(), opt.eos_ids.end(), id) != opt.eos_ids.end();
      res[r].stopped_on_eos = eos;
      res[r].decode_seconds = std::chrono::duration<double>(Clock::now() - t_first).count();
      if (!eos) keep.push_back(b);
    }
    if (int64_t(keep.size()) < B) {
      std::vector<int64_t> next;
      for (int64_t b : keep) next.push_back(active[size_t(b)]);
      active = std::move(next);
      if (cache && !keep.empty()) cache->keep_rows(keep);
    }
  }
  const double prefill = std::chrono::duration<double>(t_first - t0).count();
  for (auto& r : res) r.prefill_seconds = prefill;
  return res;
}

std::vector<int32_t> eos_token_ids(const ModelConfig& cfg, const std::string& model_dir, const Tokenizer* tok) {
  std::vector<int32_t> ids = cfg.eos_token_ids;
  const std::string gen_cfg = model_dir + "/generation_config.json";
  if (file_exists(gen_cfg)) {
    const nlohmann::json j = parse_json(read_text_file(gen_cfg), gen_cfg);
    QP_CHECK(j.is_object(), "{}: expected a JSON object", gen_cfg);
    if (j.contains("eos_token_id")) {
      const auto& e = j["eos_token_id"];
      int64_t id = 0;
      const int64_t last = cfg.vocab_size - 1;
      if (!e.is_array() && !e.is_null() && !json_integer_in(e, 0, last, &id))
        fail("{}: eos_token_id must be a token id in [0, {}] (found {})", gen_cfg, last, describe_json(e));
      if (!e.is_array() && !e.is_null()) ids.push_back(int32_t(id));
      if (e.is_array())
        for (const auto& x : e) {
          if (!json_integer_in(x, 0, last, &id))
            fail("{}: eos_token_id entries must be token ids in [0, {}] (found {})", gen_cfg, last, describe_json(x));
          ids.push_back(int32_t(id));
        }
    }
  }
  if (tok && tok->eos_id() >= 0) ids.push_back(tok->eos_id());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

// ---- streaming text ----------------------------------------------------------------------

std::string TextStreamer::push(int32_t id) {
  // Ids the tokenizer does not know (a model's padded vocabulary) have no text, as in HF.
  if (id < 0 || id >= tok_.vocab_size()) return {};
  ids_.push_back(id);
  return flush(false);
}

std::string TextStreamer::finish() { return flush(true); }

std::string TextStreamer::flush(bool final) {
  // Decoding the whole sequence each time keeps decoders that look at neighbours (SentencePiece
  // leading-space strip, byte fallback) exact; a character still missing bytes decodes to
  // U+FFFD at the end, which is held back until it completes (or generation ends).
  std::string text = tok_.decode(ids_, /*skip_special=*/true);
  size_t end = text.size();
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (!final)
    while (end >= 3 && text.compare(end - 3, 3, kReplacement) == 0) end -= 3;
  if (end <= printed_) return {};
  std::string out = text.substr(printed_, end - printed_);
  printed_ = end;
  return out;
}

}  // namespace qpeft

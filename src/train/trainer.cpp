#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <tuple>

#include "core/distributed.h"
#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "io/json_reader.h"
#include "io/safetensors.h"
#include "text/tokenizer.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "ops/linear.h"
#include "peft/adapter_io.h"
#include "quant/ggml_weight.h"
#include "train/choice_forward.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace qpeft {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

Dataset load_dataset(const std::string& path, const std::string& model_dir, int64_t vocab_size,
                     const DataOptions& opt) {
  std::optional<Tokenizer> tok;
  if (has_tokenizer(model_dir)) tok = Tokenizer::load(model_dir);
  Dataset ds = load_jsonl(path, tok ? &*tok : nullptr, vocab_size, opt);
  if (ds.format == DataFormat::kChoice) {
    check_choice_examples(ds.choices, path, vocab_size);
    return ds;
  }
  for (size_t i = 0; i < ds.examples.size(); ++i)
    QP_CHECK(ds.examples[i].input_ids.size() >= 2, "{}: example {} has fewer than 2 tokens", path, i + 1);
  return ds;
}

std::vector<Example> load_examples(const std::string& path, const std::string& model_dir, int64_t vocab_size,
                                   const DataOptions& opt) {
  Dataset ds = load_dataset(path, model_dir, vocab_size, opt);
  QP_CHECK(ds.format != DataFormat::kChoice,
           "{}: multiple-choice data (prompt/choices/answer) cannot be used as plain sequences (train on it with "
           "qpeft train, which uses T-Few's losses; evaluate it with eval --metric choice)",
           path);
  return std::move(ds.examples);
}

bool parse_choice_loss_terms(const std::string& s, ChoiceLossWeights* out) {
  ChoiceLossWeights w{0, 0, 0};
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = std::min(s.find(',', start), s.size());
    const std::string term = s.substr(start, comma - start);
    if (term == "lm") w.lm = 1;
    else if (term == "ul") w.ul = 1;
    else if (term == "ln") w.ln = 1;
    else return false;
    start = comma + 1;
  }
  *out = w;
  return true;
}

EvalResult evaluate(LlamaModel& model, const std::vector<Example>& data, int64_t batch, int64_t seq_len) {
  Batcher batcher(data, batch, seq_len, 0, false, 0);
  double sum = 0;
  int64_t count = 0;
  std::map<int32_t, std::pair<double, LossStats>> per;  // adapter -> (NLL sum, counts)
  for (const Example& e : data) per[e.adapter];
  const int64_t n = int64_t(data.size()), n_batches = batcher.batches_per_epoch();
  // Data-parallel: rank r takes batches r, r + N, …; the sums are reduced below.
  for (int64_t k = dist::rank(); k < n_batches; k += dist::size()) {
    Batch b = batcher.get(k);
    // The last batch wraps around to the start: drop the repeated rows.
    const int64_t real_rows = std::min<int64_t>(b.B, n - k * batch);
    for (int64_t r = real_rows; r < b.B; ++r)
      std::fill(b.labels.begin() + r * b.T, b.labels.begin() + (r + 1) * b.T, -100);
    // Row r holds example (k·batch + r) mod n (the batcher's unshuffled order).
    std::vector<int32_t> row_adapter;
    for (int64_t r = 0; r < b.B; ++r) row_adapter.push_back(data[size_t((k * batch + r) % n)].adapter);
    SequenceAdaptersScope scope(model, row_adapter);
    Graph g(false);
    LossResult res = model.loss(g, b.ids, b.labels, b.B, b.T);
    sum += res.sum;
    count += res.count;
    // Per adapter: the batch's NLL summed in the order res.sum adds it, then added to the
    // adapter's total, so a batch of one adapter adds exactly what res.sum does.
    std::map<int32_t, double> batch_sum;
    for (int64_t r = 0; r < real_rows; ++r) {
      const int32_t a = row_adapter[size_t(r)];
      LossStats& st = per[a].second;
      double& s = batch_sum[a];
      st.examples += 1;
      // Position t predicts label t + 1 (model.loss's shift).
      for (int64_t t = 0; t + 1 < b.T; ++t) {
        if (b.labels[size_t(r * b.T + t + 1)] == kIgnoreIndex) continue;
        s += res.nll[size_t(r * b.T + t)];
        st.tokens += 1;
      }
    }
    for (const auto& [a, s] : batch_sum) per[a].first += s;
  }
  if (dist::size() > 1) {
    std::vector<double> sums = {sum, double(count)};
    for (const auto& [a, p] : per) sums.insert(sums.end(), {p.first, double(p.second.tokens), double(p.second.examples)});
    dist::allreduce_sum(sums.data(), int64_t(sums.size()));
    sum = sums[0];
    count = int64_t(sums[1]);
    size_t i = 2;
    for (auto& [a, p] : per) {
      p.first = sums[i];
      p.second.tokens = int64_t(sums[i + 1]);
      p.second.examples = int64_t(sums[i + 2]);
      i += 3;
    }
  }
  auto finish = [](LossStats& st, double s) {
    st.loss = st.tokens ? s / double(st.tokens) : 0.0;
    st.perplexity = std::exp(st.loss);
  };
  EvalResult r;
  r.tokens = count;
  r.examples = n;
  r.loss = count ? sum / double(count) : 0.0;
  r.perplexity = std::exp(r.loss);
  for (auto& [a, p] : per) {
    finish(p.second, p.first);
    r.adapters[a] = p.second;
  }
  return r;
}

namespace {

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// The T-Few terms in use, joined by `sep`: their names, or with `values` "name value".
std::string choice_terms(const ChoiceLossWeights& w, const ChoiceLossResult* values, const char* sep) {
  std::string out;
  for (auto [name, weight, v] : {std::tuple{"lm", w.lm, values ? values->lm : 0.0},
                                 {"ul", w.ul, values ? values->ul : 0.0}, {"ln", w.ln, values ? values->ln : 0.0}}) {
    if (weight <= 0) continue;
    if (!out.empty()) out += sep;
    out += values ? fmt::format("{} {:.3f}", name, v) : std::string(name);
  }
  return out;
}

struct TrainerState {
  int64_t step = 0;
  double last_loss = 0;
};

std::string checkpoint_name(int64_t step) { return fmt::format("checkpoint-{}", step); }

// Newest out/checkpoint-N with a complete trainer_state.json, or "".
std::string latest_checkpoint(const std::string& out) {
  int64_t best = -1;
  std::string path;
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return "";
  for (auto& e : fs::directory_iterator(out, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    char* end = nullptr;
    long long n = std::strtoll(name.c_str() + 11, &end, 10);
    if (*end || !file_exists(e.path().string() + "/trainer_state.json")) continue;
    if (n > best) {
      best = n;
      path = e.path().string();
    }
  }
  return path;
}

// Trainable tensors by name in one safetensors file (full fine-tuning checkpoints).
void save_params(const NamedParams& params, const std::string& path) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, p] : params) tensors.emplace_back(name, p.value());
  save_safetensors(path, tensors, {{"format", "pt"}});
}

void load_params(const NamedParams& params, const std::string& path) {
  auto st = SafetensorsFile::open(path);
  for (auto& [name, p] : params) {
    QP_CHECK(st->has(name), "{}: tensor '{}' missing", path, name);
    Tensor t = st->get(name);
    QP_CHECK(t.shape() == p.shape() && t.dtype() == DType::F32, "{}: '{}' is {}, expected f32{}", path, name,
             t.describe(), shape_str(p.shape()));
    std::memcpy(p.value().f32(), t.f32(), t.nbytes());
  }
}

// `adapter`: the adapter being trained (unused for full fine-tuning).
void save_checkpoint(LlamaModel& model, const TrainOptions& opt, const AdapterConfig& adapter, const NamedParams& params,
                     const Optimizer& optim, const TrainerState& st) {
  if (!dist::is_root()) return;  // every rank holds the same state; rank 0 writes it
  const std::string dir = opt.out_dir + "/" + checkpoint_name(st.step);
  AtomicDir out(dir);
  std::string tmp = out.path("");
  tmp.pop_back();
  if (opt.method == "full") {
    save_params(params, tmp + "/model.safetensors");
  } else {
    write_adapter_files(model, adapter, tmp);
  }
  save_safetensors(tmp + "/optimizer.safetensors", optim.state_tensors(), {{"optimizer", optim.name()}});
  json j = {{"step", st.step}, {"optimizer_steps", optim.steps()}, {"last_loss", st.last_loss}, {"seed", opt.seed},
            {"batch", opt.batch}, {"grad_accum", opt.grad_accum}, {"seq_len", opt.seq_len}, {"lr", opt.lr},
            {"schedule", opt.schedule}, {"total_steps", opt.steps}, {"data", opt.data_path},
            {"compute_dtype", dtype_name(linear_compute_dtype())}, {"world_size", dist::size()}};
  write_file_atomic(tmp + "/trainer_state.json", j.dump(2) + "\n");
  out.commit();
  // Keep the newest keep_checkpoints.
  std::vector<std::pair<int64_t, std::string>> all;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(opt.out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    all.emplace_back(std::strtoll(name.c_str() + 11, nullptr, 10), e.path().string());
  }
  std::sort(all.rbegin(), all.rend());
  for (size_t i = size_t(std::max<int64_t>(1, opt.keep_checkpoints)); i < all.size(); ++i) remove_all(all[i].second);
}

}  // namespace

TrainerStateFile parse_trainer_state(const std::string& text, const std::string& state_path, const TrainOptions& opt) {
  const json j = parse_json(text, state_path);
  const JsonFields f(j, state_path);
  const std::pair<const char*, json> must_match[] = {
      {"seed", opt.seed}, {"batch", opt.batch}, {"grad_accum", opt.grad_accum}, {"seq_len", opt.seq_len}};
  for (const auto& [key, now] : must_match) {
    const json* then = f.find(key);
    if (!then) f.fail_key(key, "is missing; the checkpoint is incomplete");
    QP_CHECK(*then == now, "{}: the checkpoint was trained with {} = {}; resume with the same value ({})", state_path,
             key, then->is_number() ? then->dump() : describe_json(*then), now.dump());
  }
  // Checkpoints from before the bf16 path have no compute_dtype: they were f32.
  const std::string computed = f.string_or("compute_dtype", "f32");
  QP_CHECK(computed == dtype_name(linear_compute_dtype()),
           "{}: the checkpoint was trained with compute_dtype = {}, this run computes in {}; resume with "
           "--compute-dtype {}{}",
           state_path, computed, dtype_name(linear_compute_dtype()), computed,
           computed == "bf16" ? " on a machine with AVX512_BF16" : "");
  TrainerStateFile s;
  s.optimizer_steps = f.integer("optimizer_steps", 0, INT64_MAX);
  s.step = f.integer("step", 0, INT64_MAX);
  s.last_loss = f.number_or("last_loss", 0.0, -1e300, 1e300);
  return s;
}

namespace {

TrainerState load_checkpoint(LlamaModel& model, const TrainOptions& opt, const NamedParams& params, Optimizer& optim,
                             const std::string& dir) {
  const std::string state_path = dir + "/trainer_state.json";
  QP_CHECK(file_exists(state_path), "{}: no such file; the checkpoint is incomplete", state_path);
  const TrainerStateFile saved = parse_trainer_state(read_text_file(state_path), state_path, opt);
  if (opt.method == "full") {
    load_params(params, dir + "/model.safetensors");
  } else {
    load_adapter_weights_into(model, dir + "/adapter_model.safetensors");
  }
  auto st = SafetensorsFile::open(dir + "/optimizer.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& n : st->names()) tensors.emplace_back(n, st->get(n).clone());
  optim.load_state(tensors, saved.optimizer_steps);
  TrainerState s;
  s.step = saved.step;
  s.last_loss = saved.last_loss;
  return s;
}

// --method loftq: the LoftQ init in memory on the dense base; the quantized base it produces is
// written once to OUT/base (T > 1 cannot be reproduced by quantizing on load).
NamedParams init_loftq(LlamaModel& model, const TrainOptions& opt, LoraConfig* lcfg) {
  LoftqOptions lo = opt.loftq;
  QuantFormat fallback;
  QP_CHECK(parse_quant_format(opt.quant, &fallback), "--quant '{}': unknown format", opt.quant);
  lo.quant = LayerQuantPlan::parse(lo.quant.spec(), fallback);
  lo.block_size = opt.quant_block;
  lo.double_quant = opt.double_quant;
  lo.lora = *lcfg;
  apply_loftq(model, lo);
  record_loftq(lo, lcfg);
  const std::string base = opt.out_dir + "/base";
  lcfg->base_model_name_or_path = base;
  if (dist::is_root() && !(opt.resume && file_exists(base + "/config.json"))) {
    SaveOptions so;
    if (auto* emb = dynamic_cast<const DenseWeight*>(model.embed_tokens().get())) so.dtype = emb->tensor().dtype();
    so.extra_files = [&](const std::string& tmp) { copy_tokenizer_files(opt.model_dir, tmp); };
    make_dirs(opt.out_dir);
    save_model(model, base, so);
  }
  return adapter_params(model);
}

// --init-adapter: a saved LoRA adapter (a LoftQ init, or any PEFT adapter) as the starting point.
NamedParams init_from_adapter(LlamaModel& model, const TrainOptions& opt, LoraConfig* lcfg) {
  LoraConfig a = load_lora_adapter(model, opt.init_adapter);
  model.visit_linears([&](Linear& l) {
    if (auto* ad = dynamic_cast<LoraAdapter*>(l.adapter.get())) ad->dropout = opt.lora.dropout;
  });
  a.dropout = opt.lora.dropout;
  a.base_quantization = lcfg->base_quantization;
  a.base_model_name_or_path = lcfg->base_model_name_or_path;
  if (!a.loftq_quant.empty()) {
    const std::string dense = first_dense_adapted_layer(model);
    QP_CHECK(dense.empty() || lcfg->base_quantization.enabled(),
             "--init-adapter {}: a LoftQ init ({}) for the quantized base `qpeft loftq` wrote, but {} in {} is dense; "
             "train with --model set to that quantized base",
             opt.init_adapter, a.loftq_quant, dense, opt.model_dir);
  }
  *lcfg = a;
  return adapter_params(model);
}

// Data-parallel: the ranks must have been given the same flags, data, model and starting
// point, or they would silently train different things. Paths may differ (mount points).
void check_ranks_agree(const TrainOptions& opt, const LlamaModel& model, const Dataset& train_set,
                       const Dataset& eval_set, const NamedParams& params, int64_t start_step) {
  Fingerprint flags;
  flags.add_string(opt.method).add_string(opt.quant).add_string(opt.schedule).add_string(opt.optimizer);
  for (int64_t v : {opt.steps, opt.batch, opt.seq_len, opt.grad_accum, opt.warmup_steps, opt.save_every,
                    opt.eval_every, opt.quant_block, int64_t(opt.seed), int64_t(opt.packing), int64_t(opt.double_quant),
                    int64_t(opt.grad_checkpoint), int64_t(opt.compute_dtype), start_step})
    flags.add_value(v);
  for (double v : {opt.lr, opt.weight_decay, opt.max_grad_norm, opt.warmup_ratio, opt.choice_loss.lm,
                   opt.choice_loss.ul, opt.choice_loss.ln})
    flags.add_value(v);
  check_same_on_every_rank(flags.value(), "training flags (or the checkpoint --resume found)");
  auto data_fingerprint = [](const Dataset& d) {
    Fingerprint f;
    f.add_value(int(d.format));
    for (const Example& e : d.examples) f.add_vector(e.input_ids).add_vector(e.labels).add_value(e.adapter);
    for (const ChoiceExample& e : d.choices) {
      f.add_vector(e.prompt_ids).add_value(e.answer).add_value(e.adapter);
      for (const auto& c : e.choice_ids) f.add_vector(c);
    }
    return f.value();
  };
  check_same_on_every_rank(data_fingerprint(train_set), "training data (--data)");
  check_same_on_every_rank(data_fingerprint(eval_set), "evaluation data (--eval-data)");
  const ModelConfig& c = model.config();
  Fingerprint m;
  for (int64_t v : {c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads, c.vocab_size})
    m.add_value(v);
  for (const auto& [name, p] : params) m.add_string(name).add(p.value().raw(), size_t(p.value().nbytes()));
  check_same_on_every_rank(m.value(), "model (--model) or starting adapter");
}

}  // namespace

TrainResult train(const TrainOptions& opt) {
  QP_CHECK(opt.method == "lora" || opt.method == "qlora" || opt.method == "loftq" || opt.method == "ia3" ||
               opt.method == "full",
           "--method '{}' is not known (lora, qlora, loftq, ia3, full)", opt.method);
  QP_CHECK(opt.init_adapter.empty() || (opt.method == "lora" || opt.method == "qlora"),
           "--init-adapter works with --method lora or qlora, not {}", opt.method);
  QP_CHECK(!opt.out_dir.empty(), "--out is required");
  QP_CHECK(opt.steps > 0 && opt.batch > 0 && opt.grad_accum > 0, "--steps, --batch and --grad-accum must be positive");
  QP_CHECK(opt.lr > 0 && std::isfinite(opt.lr), "--lr must be a positive number");
  QP_CHECK(std::isfinite(opt.max_grad_norm) && opt.max_grad_norm >= 0, "--max-grad-norm {} must be a finite number >= 0",
           opt.max_grad_norm);
  QP_CHECK(std::isfinite(opt.weight_decay) && opt.weight_decay >= 0, "--weight-decay {} must be a finite number >= 0",
           opt.weight_decay);
  QP_CHECK(opt.warmup_steps >= -1, "--warmup-steps {} must be >= 0", opt.warmup_steps);  // -1: from --warmup-ratio
  QP_CHECK(std::isfinite(opt.warmup_ratio) && opt.warmup_ratio >= 0 && opt.warmup_ratio <= 1,
           "--warmup-ratio {} must be in [0, 1]", opt.warmup_ratio);
  QP_CHECK(opt.save_every >= 0 && opt.eval_every >= 0 && opt.keep_checkpoints >= 1,
           "--save-every and --eval-every must be >= 0 and --keep-checkpoints >= 1");
  validate_schedule_kind(opt.schedule);
  // Data-parallel (mpirun): rank 0 writes every file and prints; all ranks compute.
  const int world = dist::size(), rank = dist::rank();
  const bool root = rank == 0;
  const bool quiet = opt.quiet || !root;
  QP_CHECK(opt.batch >= world,
           "--batch {} is the global batch, split across the job's {} ranks: it must be at least {} (one row per rank)",
           opt.batch, world, world);
  std::string compute_note;
  const ComputeDtypeScope compute(opt.compute_dtype, &compute_note);
  // Gradients flow through f32 products: llama.cpp's 8-bit rounding is for inference only.
  const GgmlActivationsScope ggml_f32(GgmlActivations::F32);
  if (!compute_note.empty() && root) std::fprintf(stderr, "qpeft: %s\n", compute_note.c_str());

  // Before any work: the output directory must take files, and what an interrupted run left
  // there goes (a live run's temporaries stay).
  if (root) {
    make_dirs(opt.out_dir);
    check_writable_dir(opt.out_dir, "--out");
    for (const std::string& p : remove_stale_temporaries(opt.out_dir))
      if (!quiet) std::fprintf(stderr, "removed %s, left behind by an interrupted run\n", p.c_str());
  }

  LoadOptions load;
  load.in_memory = !opt.mmap;
  if (opt.method == "qlora" || (opt.method == "ia3" && opt.quantize_base)) {
    load.quantize = {opt.quant, opt.quant_block, opt.double_quant};
  }
  auto model = load_model(opt.model_dir, load);
  model->set_grad_checkpointing(opt.grad_checkpoint);
  LoraConfig lcfg = opt.lora;
  if (lcfg.base_model_name_or_path.empty()) lcfg.base_model_name_or_path = opt.model_dir;
  lcfg.base_quantization = load.quantize;
  NamedParams params;
  AdapterConfig adapter;  // what is trained and saved (not for full)
  if (opt.method == "full") {
    params = model->make_fully_trainable();
  } else if (opt.method == "ia3") {
    Ia3Config icfg = opt.ia3;
    if (icfg.base_model_name_or_path.empty()) icfg.base_model_name_or_path = opt.model_dir;
    icfg.base_quantization = load.quantize;
    inject_ia3(*model, icfg);
    params = adapter_params(*model);
    adapter = icfg;
  } else {
    if (opt.method == "loftq") {
      params = init_loftq(*model, opt, &lcfg);
    } else if (!opt.init_adapter.empty()) {
      params = init_from_adapter(*model, opt, &lcfg);
    } else {
      inject_lora(*model, lcfg, opt.seed);
      params = adapter_params(*model);
    }
    adapter = lcfg;
  }

  const int64_t vocab = model->config().vocab_size;
  Dataset train_set = load_dataset(opt.data_path, opt.model_dir, vocab, opt.data);
  // Multiple-choice data trains with T-Few's losses over all its choices; the rest with the
  // causal-LM loss on its labelled tokens.
  const bool choice_training = train_set.format == DataFormat::kChoice;
  std::vector<Example>& data = train_set.examples;
  const size_t n_examples = train_set.size();
  if (opt.packing && !choice_training) data = pack_examples(data, opt.seq_len);
  Dataset eval_set;
  if (!opt.eval_data_path.empty()) eval_set = load_dataset(opt.eval_data_path, opt.model_dir, vocab, opt.data);
  const bool has_eval = eval_set.size() > 0;
  const int32_t pad = model->config().pad_token_id >= 0 ? model->config().pad_token_id : 0;
  std::optional<Batcher> batcher;
  std::optional<ChoiceBatcher> choice_batcher;
  if (choice_training) {
    QP_CHECK(opt.choice_loss.lm > 0 || opt.choice_loss.ul > 0 || opt.choice_loss.ln > 0,
             "--choice-loss: name at least one of lm, ul, ln");
    choice_batcher.emplace(train_set.choices, opt.batch, opt.seq_len, opt.seed, true, pad);
  } else {
    batcher.emplace(data, opt.batch, opt.seq_len, opt.seed, true, pad);
  }

  AdamWConfig acfg;
  acfg.weight_decay = opt.weight_decay;
  std::unique_ptr<Optimizer> optim_ptr = make_optimizer(opt.optimizer, params, acfg);
  Optimizer& optim = *optim_ptr;
  LrSchedule sched;
  sched.kind = opt.schedule;
  sched.base_lr = opt.lr;
  sched.total_steps = opt.steps;
  sched.warmup_steps = opt.warmup_steps >= 0 ? opt.warmup_steps : int64_t(std::ceil(opt.warmup_ratio * double(opt.steps)));

  if (root) make_dirs(opt.out_dir);
  TrainerState state;
  if (opt.resume) {
    const std::string ck = latest_checkpoint(opt.out_dir);
    QP_CHECK(!ck.empty(), "--resume: no checkpoint-N directory with trainer_state.json in {}", opt.out_dir);
    state = load_checkpoint(*model, opt, params, optim, ck);
    if (!quiet) std::fprintf(stderr, "resuming from %s at step %lld\n", ck.c_str(), (long long)state.step);
  }
  if (world > 1) check_ranks_agree(opt, *model, train_set, eval_set, params, state.step);

  int64_t trainable = 0;
  for (auto& [n, p] : params) trainable += p.value().numel();
  std::string what = "full fine-tuning";
  if (const auto* ia3 = std::get_if<Ia3Config>(&adapter); ia3 && opt.method == "ia3") {
    std::string ff;
    for (const auto& f : ia3->resolved_feedforward()) ff += (ff.empty() ? "" : ",") + f;
    what = fmt::format("{} layers adapted ((IA)³, input scaled: {})", params.size(), ff.empty() ? "none" : ff);
  } else if (opt.method != "full") {
    what = fmt::format("{} layers adapted (LoRA r={} alpha={})", params.size() / 2, lcfg.r, lcfg.alpha);
  }
  std::string data_what = fmt::format("{} examples in {} rows", n_examples, data.size());
  if (choice_training)
    data_what = fmt::format("{} multiple-choice examples (T-Few losses {})", n_examples,
                            choice_terms(opt.choice_loss, nullptr, "+"));
  if (!quiet)
    std::fprintf(stderr,
                 "qpeft train (%s): %s, %s, %lld trainable parameters (%.4f%% of "
                 "%lld), %s, %lld steps x %lld x %lld\n",
                 opt.method.c_str(), opt.model_dir.c_str(), what.c_str(),
                 (long long)trainable, 100.0 * double(trainable) / double(model->config().num_parameters()),
                 (long long)model->config().num_parameters(), data_what.c_str(), (long long)opt.steps, (long long)opt.batch,
                 (long long)opt.grad_accum);
  if (!quiet)
    std::fprintf(stderr, "optimizer %s: %.1f MiB of state (%.2f bytes/parameter), %.1f MiB of it paged\n",
                 optim.name(), double(optim.state_bytes()) / 1048576.0,
                 double(optim.state_bytes()) / double(std::max<int64_t>(1, trainable)),
                 double(optim.paged_state_bytes()) / 1048576.0);

  if (world > 1) {
    const RowShare r0 = row_share(opt.batch, 0, world), last = row_share(opt.batch, world - 1, world);
    if (!quiet)
      std::fprintf(stderr, "data-parallel: %d ranks, each micro-batch of %lld %s split %lld%s per rank\n", world,
                   (long long)opt.batch, choice_training ? "examples" : "rows", (long long)r0.size(),
                   r0.size() == last.size() ? "" : fmt::format(" or {}", last.size()).c_str());
    // A launcher that binds each rank to fewer CPUs than its threads makes them share cores.
    const int cpus = dist::affinity_cpus();
    if (cpus > 0 && cpus < num_threads())
      std::fprintf(stderr,
                   "qpeft (rank %d of %d): note: %d threads on %d CPU%s (the launcher's binding); start mpirun with "
                   "--bind-to none, or --map-by slot:PE=%d, or pass --threads %d\n",
                   rank, world, num_threads(), cpus, cpus == 1 ? "" : "s", num_threads(), cpus);
  }
  std::FILE* metrics = nullptr;
  if (!opt.metrics_path.empty() && root) {
    metrics = std::fopen(opt.metrics_path.c_str(), opt.resume ? "a" : "w");
    QP_CHECK(metrics, "{}: cannot open metrics file", opt.metrics_path);
  }
  struct Closer {
    std::FILE* f;
    ~Closer() {
      if (f) std::fclose(f);
    }
  } closer{metrics};

  TrainResult result;
  std::vector<float> grad_flat;  // the all-reduce's fused buffer (data-parallel)
  const auto t_start = Clock::now();
  int64_t tokens_total = 0, truncated_total = 0;
  const int64_t first_step = state.step;
  bool trained_to_the_end = false;
  for (int64_t step = state.step; step < opt.steps; ++step) {
    const auto t0 = Clock::now();
    int64_t step_tokens = 0;
    // Per micro-batch this rank's part of the global loss, then the T-Few terms' parts, the
    // examples and how many are ranked right: summed over the ranks after the micro-batches.
    std::vector<double> step_sums(size_t(opt.grad_accum) + 5, 0.0);
    double* choice_sums = step_sums.data() + opt.grad_accum;
    for (int64_t micro = 0; micro < opt.grad_accum; ++micro) {
      const int64_t k = step * opt.grad_accum + micro;
      // Dropout masks depend on (seed, step, micro) only: resume replays them exactly.
      Graph g(true, splitmix64(opt.seed ^ splitmix64(uint64_t(step) * 1024 + uint64_t(micro))), true);
      Var loss_var;
      // The gradient seed: this rank's share of the micro-batch's loss, over the accumulation.
      double share = 1.0;
      if (choice_training) {
        ChoiceBatch cb = choice_batcher->get(k);
        step_tokens += cb.rows.tokens;
        truncated_total += cb.rows.truncated;
        // Each term is a mean over its own count (right tokens, wrong tokens, examples): a
        // rank's terms enter weighted by its fraction of each count.
        ChoiceLossWeights fraction{1, 1, 1};
        if (world > 1) {
          const RowShare ex = row_share(opt.batch, rank, world);
          int64_t first_row = 0;
          ChoiceBatch mine = slice_examples(cb, ex.begin, ex.end, &first_row);
          fraction = share_weights({1, 1, 1}, choice_counts(mine), choice_counts(cb));
          g.set_batch_share({first_row, mine.rows.B});
          cb = std::move(mine);
        }
        ChoiceTokens layout;
        Var lp = choice_batch_logprobs(g, *model, cb, &layout);
        const ChoiceLossWeights w{opt.choice_loss.lm * fraction.lm, opt.choice_loss.ul * fraction.ul,
                                  opt.choice_loss.ln * fraction.ln};
        ChoiceLossResult cr = choice_losses(g, lp, layout, w);
        loss_var = cr.loss;
        choice_sums[0] += cr.lm * fraction.lm / double(opt.grad_accum);
        choice_sums[1] += cr.ul * fraction.ul / double(opt.grad_accum);
        choice_sums[2] += cr.ln * fraction.ln / double(opt.grad_accum);
        choice_sums[3] += double(cr.examples);
        choice_sums[4] += double(cr.right);
      } else {
        Batch b = batcher->get(k);
        step_tokens += b.tokens;
        truncated_total += b.truncated;
        if (world > 1) {
          // The causal-LM loss is a mean over the batch's targets: a rank's mean enters
          // weighted by its fraction of them.
          const RowShare rows = row_share(b.B, rank, world);
          const int64_t all = counted_targets(b, 0, b.B), mine = counted_targets(b, rows.begin, rows.end);
          share = all > 0 ? double(mine) / double(all) : 0.0;
          g.set_batch_share({rows.begin, rows.size()});
          b = slice_rows(b, rows.begin, rows.end);
        }
        loss_var = model->loss(g, b.ids, b.labels, b.B, b.T).loss;
      }
      const double lv = loss_var.value().f32()[0];
      if (!std::isfinite(lv)) {
        const std::string ck = latest_checkpoint(opt.out_dir);
        fail("loss became {} at step {}; stopping. The last good checkpoint is {}. Lower --lr or check the data.", lv,
             step + 1, ck.empty() ? std::string("(none yet)") : ck);
      }
      step_sums[size_t(micro)] = lv * share;
      if (loss_var.requires_grad() && share > 0)
        g.backward(loss_var, Tensor::full({1}, float(share / double(opt.grad_accum))));
    }
    // One fused all-reduce of every gradient, and one of the step's statistics.
    allreduce_gradients(params, &grad_flat);
    dist::allreduce_sum(step_sums.data(), int64_t(step_sums.size()));
    const dist::CommStats comm = dist::take_stats();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < opt.grad_accum; ++micro) loss_sum += step_sums[size_t(micro)];
    ChoiceLossResult choice_stats;
    choice_stats.lm = choice_sums[0];
    choice_stats.ul = choice_sums[1];
    choice_stats.ln = choice_sums[2];
    choice_stats.examples = int64_t(choice_sums[3]);
    choice_stats.right = int64_t(choice_sums[4]);
    const double loss = loss_sum / double(opt.grad_accum);
    const double grad_norm = clip_grad_norm(params, opt.max_grad_norm);
    if (!std::isfinite(grad_norm)) {
      const std::string ck = latest_checkpoint(opt.out_dir);
      fail("gradient norm became {} at step {}; stopping. The last good checkpoint is {}.", grad_norm, step + 1,
           ck.empty() ? std::string("(none yet)") : ck);
    }
    const double lr = sched.at(step);
    optim.step(lr);
    optim.zero_grad();
    state.step = step + 1;
    state.last_loss = loss;
    tokens_total += step_tokens;
    if (step == first_step) result.first_loss = loss;
    result.last_loss = loss;

    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
    const double tps = double(tokens_total) / std::max(1e-9, elapsed);
    const double eta = elapsed / double(state.step - first_step) * double(opt.steps - state.step);
    json rec = {{"step", state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                {"tokens", step_tokens}, {"tokens_per_s", double(step_tokens) / std::max(1e-9, dt)},
                {"elapsed_s", elapsed}};
    std::string comm_log;
    if (world > 1) {
      rec["allreduce_s"] = comm.seconds;
      rec["allreduce_bytes"] = comm.bytes_sent;
      comm_log = fmt::format(" | all-reduce {:.0f} ms", 1e3 * comm.seconds);
    }
    std::string choice_log;
    if (choice_training) {
      const double acc = double(choice_stats.right) / double(std::max<int64_t>(1, choice_stats.examples));
      rec["lm_loss"] = choice_stats.lm;
      rec["ul_loss"] = choice_stats.ul;
      rec["ln_loss"] = choice_stats.ln;
      rec["batch_accuracy"] = acc;
      // The progress line shows the terms in use; --metrics has all three.
      choice_log = fmt::format(" ({}) | batch accuracy {:.0f}%", choice_terms(opt.choice_loss, &choice_stats, " "),
                               100.0 * acc);
    }
    const bool last = state.step == opt.steps;
    if (has_eval && ((opt.eval_every > 0 && state.step % opt.eval_every == 0) || last)) {
      if (eval_set.format == DataFormat::kChoice) {
        // Data-parallel: each rank ranks its share of the examples; the counts are summed.
        const RowShare sh = row_share(int64_t(eval_set.choices.size()), rank, world);
        const std::vector<ChoiceExample> mine(eval_set.choices.begin() + sh.begin, eval_set.choices.begin() + sh.end);
        ChoiceEvalResult ev = evaluate_choices(*model, mine, ChoiceScore::kMean, opt.seq_len);
        double counts[2] = {double(ev.correct), double(ev.total)};
        dist::allreduce_sum(counts, 2);
        ev.correct = int64_t(counts[0]);
        ev.total = int64_t(counts[1]);
        ev.accuracy = double(ev.correct) / double(std::max<int64_t>(1, ev.total));
        rec["eval_accuracy"] = ev.accuracy;
        if (!quiet)
          std::fprintf(stderr, "eval at step %lld: accuracy %.2f%% (%lld of %lld, rank classification)\n",
                       (long long)state.step, 100.0 * ev.accuracy, (long long)ev.correct, (long long)ev.total);
      } else {
        EvalResult ev = evaluate(*model, eval_set.examples, opt.batch, opt.seq_len);
        rec["eval_loss"] = ev.loss;
        rec["eval_perplexity"] = ev.perplexity;
        if (!quiet)
          std::fprintf(stderr, "eval at step %lld: loss %.4f perplexity %.3f (%lld tokens)\n", (long long)state.step,
                       ev.loss, ev.perplexity, (long long)ev.tokens);
      }
      dist::take_stats();  // the evaluation's collectives are not the step's all-reduce
    }
    if (metrics) {
      std::fprintf(metrics, "%s\n", rec.dump().c_str());
      std::fflush(metrics);
    }
    if (!quiet && (state.step % std::max<int64_t>(1, opt.log_every) == 0 || last))
      std::fprintf(stderr, "step %lld/%lld | loss %.4f%s | lr %.2e | grad_norm %.3f | %.0f tok/s%s | ETA %s\n",
                   (long long)state.step, (long long)opt.steps, loss, choice_log.c_str(), lr, grad_norm, tps,
                   comm_log.c_str(), fmt_duration(eta).c_str());
    // The final checkpoint is written after the adapter (below): if it fails, the adapter is safe.
    if (opt.save_every > 0 && state.step % opt.save_every == 0 && !last)
      save_checkpoint(*model, opt, adapter, params, optim, state);
    trained_to_the_end = last;
  }
  if (truncated_total > 0 && !quiet)
    std::fprintf(stderr, "note: %lld examples were longer than --seq-len %lld and were truncated%s\n",
                 (long long)truncated_total, (long long)opt.seq_len,
                 choice_training ? " (their prompts lost their first tokens)" : "");
  if (!root) {
    result.adapter_dir = opt.method == "full" ? opt.out_dir + "/model" : opt.out_dir;
  } else if (opt.method == "full") {
    // The trained model as a Hugging Face directory, in the requested dtype.
    SaveOptions so;
    so.dtype = opt.save_dtype;
    so.matrix = [](const WeightSlot& s) { return decode_to_f32(**s.frozen); };
    result.adapter_dir = opt.out_dir + "/model";
    save_model(*model, result.adapter_dir, so);
    copy_tokenizer_files(opt.model_dir, result.adapter_dir);
  } else {
    write_adapter_files(*model, adapter, opt.out_dir);
    result.adapter_dir = opt.out_dir;
    if (opt.method == "loftq" && !quiet)
      std::fprintf(stderr, "the quantized base it trained on is %s/base (eval: --model %s/base --adapter %s)\n",
                   opt.out_dir.c_str(), opt.out_dir.c_str(), opt.out_dir.c_str());
  }
  if (trained_to_the_end) save_checkpoint(*model, opt, adapter, params, optim, state);
  result.steps = state.step;
  const double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
  result.tokens_per_second = double(tokens_total) / std::max(1e-9, elapsed);
  if (!quiet)
    std::fprintf(stderr, "%s written to %s\n", opt.method == "full" ? "model" : "adapter", result.adapter_dir.c_str());
  return result;
}

}  // namespace qpeft
